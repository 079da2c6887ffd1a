#!/usr/bin/env bash
# Compile time (source to ready training step, `nnc bench`'s first line) against the
# model's node count (the lowered training graph, `nnc check`'s ops) for growing models:
# the LSTM workload (LSTM(32, 128), Adam, batch 32) unrolled over T = 10 .. 200 steps,
# and an MLP of 64-wide Dense layers with ReLU, depth 2 .. 32. Each time is the best of
# RUNS runs; "us/node" stays flat when the growth is linear. The last columns are the
# stages (`nnc bench`'s breakdown) of the best run.
# Usage: tools/compile_growth.sh [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
lstm() {
  printf 'model Lstm {\n input x: [B, %d, 32]\n input y: i32[B]\n layer lstm = LSTM(32, 128)\n layer head = Dense(128, 10)\n loss = cross_entropy(head(lstm(x)), y)\n train { optimizer = adam(lr = 1e-3)  batch = 32 }\n}\n' "$1"
}
mlp() {
  printf 'model Mlp {\n input x: [B, 64]\n input y: i32[B]\n layer fcs = [Dense(64, 64); %d]\n h = x\n for i in 0..%d { h = relu(fcs[i](h)) }\n layer out = Dense(64, 10)\n loss = cross_entropy(out(h), y)\n train { optimizer = adam(lr = 1e-3)  batch = 64 }\n}\n' "$1" "$1"
}
measure() {
  local file=$1 best="" line stages
  nodes=$(./target/release/nnc check "$file" | sed -E 's/.*, ([0-9]+) \+ [0-9]+ ops.*/\1/')
  for _ in $(seq "$runs"); do
    out=$(./target/release/nnc bench "$file" --steps 1)
    line=$(echo "$out" | sed -n 's/^compile: \([0-9.]*\) ms.*/\1/p')
    if [ -z "$best" ] || awk -v a="$line" -v b="$best" 'BEGIN { exit !(a < b) }'; then
      best=$line
      stages=$(echo "$out" | sed -n 's/^compile stages (ms): //p')
    fi
  done
  awk -v k="$2" -v n="$nodes" -v t="$best" -v s="$stages" \
    'BEGIN { printf "%-12s %6d nodes %8.1f ms %6.1f us/node   %s\n", k, n, t, 1000 * t / n, s }'
}
for t in 10 20 50 100 200; do
  lstm "$t" > "$dir/lstm$t.nn"
  measure "$dir/lstm$t.nn" "lstm T=$t"
done
for d in 2 4 8 16 32; do
  mlp "$d" > "$dir/mlp$d.nn"
  measure "$dir/mlp$d.nn" "mlp depth=$d"
done
