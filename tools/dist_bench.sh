#!/usr/bin/env bash
# Data-parallel step times (docs/distributed.md): the MLP and CNN of benches/workloads/ on
# the MNIST sample at a global batch of 512, 2 epochs (40 steps), one thread per rank:
# one process, one rank, two ranks with the gradient sums overlapped with the backward
# pass (also with MPICH's progress thread, MPICH_ASYNC_PROGRESS=1), and two ranks with
# --no-overlap (each bucket summed, blocking, where it would start). Rounds interleave
# the runs; prints one line per run: workload, run, ms per step, ms starting sums, ms
# waiting for sums (rank 0's), samples/s.
# usage: tools/dist_bench.sh NNC_MPI_BINARY [ROUNDS]
set -euo pipefail
nnc=${1:?an nnc built with --features mpi}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data="data = idx(\"$root/examples/data/mnist10k-images-idx3-ubyte.gz\", \"$root/examples/data/mnist10k-labels-idx1-ubyte.gz\") epochs = 2"
for w in mlp cnn; do
    sed -e "s|train {|train { $data |" -e "s/batch = [0-9]*/batch = 512/" "$root/benches/workloads/$w.nn" > "$tmp/$w.nn"
done
one() { # workload run-name env-or-"-" ranks(0: no mpirun) extra flags...
    local w=$1 name=$2 env=$3 np=$4
    shift 4
    local cmd=("$nnc" train "$tmp/$w.nn" --out "$tmp/out-$w-$name-$r" "$@")
    if [ "$np" -gt 0 ]; then cmd=(mpirun -np "$np" "${cmd[@]}" --distributed); fi
    if [ "$env" != "-" ]; then cmd=(env "$env" "${cmd[@]}"); fi
    local out sps note
    out=$("${cmd[@]}" 2>&1) || { echo "$w $name failed: $(echo "$out" | tail -1)"; return 0; }
    sps=$(echo "$out" | grep -o 'samples_per_sec [0-9.]*' | tail -1 | cut -d' ' -f2)
    note=$(echo "$out" | grep 'ranks, 40 steps' | sed -E 's/.*per step ([0-9.]+) ms.*, ([0-9.]+) ms starting gradient sums, ([0-9.]+) ms waiting.*/\1 \2 \3/' || true)
    echo "$w $name ${note:-- - -} $sps"
}
for r in $(seq "$rounds"); do
    for w in mlp cnn; do
        one "$w" process - 0
        one "$w" rank1 - 1
        one "$w" ranks2 - 2
        one "$w" ranks2-async MPICH_ASYNC_PROGRESS=1 2
        one "$w" ranks2-no-overlap - 2 --no-overlap
    done
done
