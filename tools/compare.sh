#!/bin/bash
# Same-run comparison of nnc against its peers (JAX jit, PyTorch eager with fused Adam,
# torch.compile) on the training-step workloads of benches/workloads/, interleaved round
# by round so that the machine's drift hits all alike (these machines are shared and noisy).
#
#   tools/compare.sh [threads] [rounds] [workloads...]      (default: 1 3 mlp cnn lstm)
#
# Env: PY=python with jax and torch (default python3); PEERS="jax torch-eager torch-compile"
# (any subset); PIN=1 runs every side on core 0 only (taskset): unpinned, XLA's runtime
# threads use the second core even with one intra-op thread. Build first: cargo build --release.
# Prints one line per round and a table of medians with each peer's time over nnc's.
set -u
t=${1:-1}; n=${2:-3}; shift 2 2>/dev/null
ws=${*:-mlp cnn lstm}
nnc=${NNC:-./target/release/nnc}
py=${PY:-python3}
peers=${PEERS:-jax torch-eager torch-compile}
pin=""
if [ "${PIN:-0}" = 1 ]; then pin="taskset -c 0"; fi
res=$(mktemp)
trap 'rm -f "$res"' EXIT
peer() { # peer name, workload -> median ms
  case "$1" in
    jax) $pin "$py" tools/jax_bench.py "$t" "$2" 2>&1 | grep 'step: median' | awk '{print $6}' ;;
    torch-eager) $pin "$py" tools/torch_bench.py "$t" "$2" eager 2>&1 | grep 'step: median' | awk '{print $6}' ;;
    torch-compile) $pin "$py" tools/torch_bench.py "$t" "$2" compile 2>&1 | grep 'step: median' | awk '{print $6}' ;;
  esac
}
for w in $ws; do
  for i in $(seq "$n"); do
    a=$($pin "$nnc" bench "benches/workloads/$w.nn" --threads "$t" --steps 300 2>&1 | grep '^step:' | awk '{print $3}')
    line="$w ${t}T round $i: nnc $a ms"
    echo "$w nnc $a" >>"$res"
    for p in $peers; do
      b=$(peer "$p" "$w")
      line="$line, $p ${b:-failed} ms"
      [ -n "$b" ] && echo "$w $p $b" >>"$res"
    done
    echo "$line"
  done
done
med() { awk -v w="$1" -v p="$2" '$1==w && $2==p {print $3}' "$res" | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
echo
echo "| workload | threads | nnc ms | $(for p in $peers; do printf '%s ms | ' "$p"; done)nnc / best peer |"
echo "|---|---|---|$(for p in $peers; do printf -- '---|'; done)---|"
for w in $ws; do
  a=$(med "$w" nnc)
  row="| $w | $t | $a |"
  best=""
  for p in $peers; do
    b=$(med "$w" "$p")
    row="$row ${b:--} |"
    if [ -n "$b" ] && { [ -z "$best" ] || awk -v b="$b" -v c="$best" 'BEGIN {exit !(b < c)}'; }; then best=$b; fi
  done
  ratio=$(awk -v a="$a" -v b="$best" 'BEGIN {if (a > 0 && b > 0) printf "%.2f", a / b; else print "-"}')
  echo "$row $ratio |"
done
