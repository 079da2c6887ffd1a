#!/usr/bin/env bash
# Inference of a trained-model artifact, five ways, in one run: the library `nnc build`
# writes (called from C), the JIT's eval step (what `nnc predict` runs), onnxruntime on
# the ONNX file `nnc export` writes, onnxruntime on PyTorch's own ONNX export of the same
# layers (native Conv/MaxPool), and PyTorch eager (torch.inference_mode). Batch-1
# latency and batch-256 throughput, on one thread each, interleaved over ROUNDS rounds (the
# machine is shared and drifts: compare within a round, report medians and ratios).
#
#   tools/deploy_bench.sh [MODEL ...]       (default: digits mnist_cnn mlp lstm)
#   ROUNDS=3 SECONDS_PER=1 PY=/path/to/venv/bin/python tools/deploy_bench.sh
#
# A MODEL is examples/MODEL.nn, else the peer-comparison workload benches/workloads/MODEL.nn
# (mlp, cnn, lstm; PyTorch's export of the LSTM is nn.LSTM as ONNX's LSTM op).
#
# Needs `cargo build --release` (target/release/nnc, libnnc.a) and a Python with torch,
# onnx and onnxruntime (python3 -m venv v && v/bin/pip install torch onnx onnxruntime).
# Weights are the models' initializers (seed 0): speed does not depend on their values.
set -euo pipefail
cd "$(dirname "$0")/.."
NNC=target/release/nnc
PY=${PY:-python3}
T=1
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-1}
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(digits mnist_cnn mlp lstm)
src_of() { if [ -f "examples/$1.nn" ]; then echo "examples/$1.nn"; else echo "benches/workloads/$1.nn"; fi; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo bench --no-run --bench eval_step >/dev/null 2>&1
results="$work/results.txt"
for m in "${models[@]}"; do
    src=$(src_of "$m")
    "$NNC" init "$src" --seed 0 --out "$work/$m.safetensors" 2>/dev/null
    "$NNC" build "$src" --checkpoint "$work/$m.safetensors" --max-batch 256 --threads "$T" -o "$work/$m" >/dev/null 2>&1
    "$NNC" export "$src" --checkpoint "$work/$m.safetensors" -o "$work/$m.onnx" >/dev/null 2>&1
    "$PY" tools/deploy_bench.py export "$m" 1 1 0 "$work/${m}_torch.onnx" >/dev/null 2>&1
    name=$(basename "$(ls "$work/$m"/*.h)" .h)
    cc -O2 -DMODEL="$name" -include "$work/$m/$name.h" tools/build_bench.c -o "$work/bench_$m" \
        -L"$work/$m" -l"$name" -Wl,-rpath,"$work/$m" -lm -lpthread -ldl
done
for r in $(seq "$ROUNDS"); do
    for m in "${models[@]}"; do
        for b in 1 256; do
            t=$("$work/bench_$m" "$b" "$SECONDS_PER" | awk '{print $3}')
            echo "$m $b nnc-library $t" >>"$results"
            t=$(cargo bench --quiet --bench eval_step -- "$(src_of "$m")" "$b" 2>/dev/null | awk '{print $4}')
            echo "$m $b nnc-jit $t" >>"$results"
            t=$("$PY" tools/deploy_bench.py ort "$m" "$b" "$T" "$SECONDS_PER" "$work/$m.onnx" | awk '{print $4}')
            echo "$m $b ort-nnc-onnx $t" >>"$results"
            t=$("$PY" tools/deploy_bench.py ort "$m" "$b" "$T" "$SECONDS_PER" "$work/${m}_torch.onnx" | awk '{print $4}')
            echo "$m $b ort-torch-onnx $t" >>"$results"
            t=$("$PY" tools/deploy_bench.py torch "$m" "$b" "$T" "$SECONDS_PER" | awk '{print $4}')
            echo "$m $b torch-eager $t" >>"$results"
        done
    done
    echo "round $r done" >&2
done
# Medians over the rounds, and each runtime's time over the library's.
echo "| model | batch | runtime | us per call (median of $ROUNDS rounds) | rows/s | time / nnc library |"
echo "|---|---|---|---|---|---|"
for m in "${models[@]}"; do
    for b in 1 256; do
        lib=$(awk -v m="$m" -v b="$b" '$1==m && $2==b && $3=="nnc-library" {print $4}' "$results" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        for rt in nnc-library nnc-jit ort-nnc-onnx ort-torch-onnx torch-eager; do
            med=$(awk -v m="$m" -v b="$b" -v rt="$rt" '$1==m && $2==b && $3==rt {print $4}' "$results" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
            awk -v m="$m" -v b="$b" -v rt="$rt" -v t="$med" -v l="$lib" \
                'BEGIN {printf "| %s | %d | %s | %.2f | %.0f | %.2f |\n", m, b, rt, t, b / t * 1e6, t / l}'
        done
    done
done
