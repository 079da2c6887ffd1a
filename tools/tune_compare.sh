#!/usr/bin/env bash
# Bayesian optimization (TPE) against random search at the same budget: the tune block
# of examples/digits.nn (30 trials, median pruning) over sampler seeds 0..N-1; prints
# each search's best validation accuracy and time, then the mean per method.
# Usage: tools/tune_compare.sh [seeds=5] [extra nnc tune flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5}
shift || true
cargo build --release --quiet
out=$(mktemp -d)
for method in random bayes; do
  total=0
  for ((s = 0; s < seeds; s++)); do
    line=$(./target/release/nnc tune examples/digits.nn --method "$method" --seed "$s" --out "$out/$method-$s" "$@" 2>"$out/err")
    best=$(grep -o '^best_val_accuracy: [0-9.]*' <<<"$line" | cut -d' ' -f2)
    secs=$(grep -o 'rows in [0-9.]* s' "$out/err" | cut -d' ' -f3)
    echo "$method seed $s: best_val_accuracy $best ($secs s)"
    total=$(awk -v a="$total" -v b="$best" 'BEGIN { print a + b }')
  done
  awk -v t="$total" -v n="$seeds" -v m="$method" 'BEGIN { printf "%s: mean best_val_accuracy %.4f over %d seeds\n", m, t / n, n }'
done
rm -rf "$out"
