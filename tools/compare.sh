#!/bin/bash
# Same-run comparison of nnc and JAX on the peer-comparison workloads of benches/workloads/, interleaved so
# that the machine's drift hits both alike (these machines are shared and noisy).
# Usage: tools/compare.sh [threads] [rounds] [workloads...]   (needs jax; build first:
# cargo build --release). PIN=1 runs both on core 0 only (taskset): unpinned, XLA's
# runtime threads use the second core even with one intra-op thread.
set -u
t=${1:-1}; n=${2:-3}; shift 2 2>/dev/null
ws=${*:-mlp cnn lstm}
nnc=${NNC:-./target/release/nnc}
pin=""
if [ "${PIN:-0}" = 1 ]; then pin="taskset -c 0"; fi
for w in $ws; do
  for i in $(seq "$n"); do
    a=$($pin "$nnc" bench "benches/workloads/$w.nn" --threads "$t" --steps 300 2>&1 | grep '^step:' | awk '{print $3}')
    b=$($pin python3 tools/jax_bench.py "$t" "$w" 2>&1 | grep 'step: median' | awk '{print $6}')
    echo "$w ${t}T round $i: nnc $a ms, jax $b ms"
  done
done
