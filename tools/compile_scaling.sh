#!/usr/bin/env bash
# How compile time (`nnc plan`: lower, autodiff, simplify, fuse, plan, Cranelift) grows
# with the size of a model: N unused Dense(4, 4) layers (N x 2 parameters, each with its
# Adam update), N chained Dense layers, and an unrolled N-step elementwise loop, at N and
# 3N. A ratio near 3 is linear growth; 9 would be quadratic.
# Usage: tools/compile_scaling.sh [N=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
cargo build --release --quiet
dir=$(mktemp -d)
unused() { printf 'model M {\n input x: [B, 4]\n input y: i32[B]\n layer fcs = [Dense(4, 4); %d]\n layer out = Dense(4, 3)\n loss = cross_entropy(out(x), y)\n}\n' "$1"; }
chain() { printf 'model M {\n input x: [B, 4]\n input y: i32[B]\n layer fcs = [Dense(4, 4); %d]\n h = x\n for i in 0..%d { h = relu(fcs[i](h)) }\n layer out = Dense(4, 3)\n loss = cross_entropy(out(h), y)\n}\n' "$1" "$1"; }
loop() { printf 'model M {\n input x: [B, 4]\n param w: [4, 4]\n h = x @ w\n for i in 0..%d { h = h + 0.001 * tanh(h) }\n loss = sum(h * h)\n}\n' "$1"; }
seconds() {
  local start end
  start=$(date +%s.%N)
  ./target/release/nnc plan "$1" > /dev/null
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}
for kind in unused chain loop; do
  small=$n; big=$((3 * n))
  [ "$kind" = loop ] && { small=$((n * 2)); big=$((n * 6)); }
  "$kind" "$small" > "$dir/a.nn"; "$kind" "$big" > "$dir/b.nn"
  a=$(seconds "$dir/a.nn"); b=$(seconds "$dir/b.nn")
  awk -v k="$kind" -v s="$small" -v l="$big" -v a="$a" -v b="$b" \
    'BEGIN { printf "%-7s N=%-6d %6.2f s   N=%-6d %6.2f s   ratio %.2f\n", k, s, a, l, b, b / a }'
done
rm -rf "$dir"
