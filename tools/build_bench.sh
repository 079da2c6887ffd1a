#!/usr/bin/env bash
# Batch-1 latency and batch-256 throughput of a library built by `nnc build`, beside the
# JIT's eval step (what `nnc predict` runs) for the same model and batch sizes.
#
#   tools/build_bench.sh [MODEL.nn ...]      (default: examples/digits.nn examples/mnist_cnn.nn)
#
# Needs `cargo build --release` first (target/release/nnc and libnnc.a). Parameters are
# the model's initializers (seed 0); both sides run on one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
NNC=target/release/nnc
SECONDS_PER=${SECONDS_PER:-2}
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(examples/digits.nn examples/mnist_cnn.nn)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for m in "${models[@]}"; do
    base=$(basename "$m" .nn)
    echo "== $m"
    "$NNC" init "$m" --seed 0 --out "$work/$base.safetensors" 2>/dev/null
    start=$(date +%s.%N)
    "$NNC" build "$m" --checkpoint "$work/$base.safetensors" --max-batch 256 -o "$work/$base" 2>&1 | sed 's/^/  /'
    end=$(date +%s.%N)
    printf '  nnc build: %.2f s wall\n' "$(echo "$end - $start" | bc)"
    name=$(basename "$(ls "$work/$base"/*.h)" .h)
    ls -l "$work/$base" | awk 'NR>1 {printf "  %s %d bytes\n", $9, $5}'
    cc -O2 -DMODEL="$name" -include "$work/$base/$name.h" tools/build_bench.c -o "$work/bench_$name" \
        -L"$work/$base" -l"$name" -Wl,-rpath,"$work/$base" -lm -lpthread -ldl
    for b in 1 256; do
        printf '  library (.so) '
        "$work/bench_$name" "$b" "$SECONDS_PER"
    done
    cargo bench --quiet --bench eval_step -- "$m" 1 256 2>/dev/null | sed 's/^/  /'
done
