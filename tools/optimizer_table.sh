#!/usr/bin/env bash
# Regenerates the optimizer comparison of docs/optimizers.md: softmax regression on the
# 8x8 digits (examples/digits_linear.nn: 650 parameters, 1,437 training rows, l2 = 1e-4),
# full batch, one iteration per epoch (max_iter = 1 for the host-loop optimizers, batch =
# every training row for the compiled ones). For each optimizer: the iterations until the
# training loss (the mean cross-entropy, without the l2 term) first reaches THRESHOLD,
# the wall time to that point, the function evaluations (forward and backward passes)
# and Hessian-vector products (metrics.csv `hvps`, about three passes each), and the
# optimizer's own memory (`nnc plan`: optimizer state of the compiled step, or
# the host optimizer's state).
#
# Usage: tools/optimizer_table.sh [THRESHOLD] [MAX_EPOCHS]   (defaults 0.1 and 400)
# Wall time: the sum of the epochs' durations up to the threshold (metrics.csv `seconds`),
# with the first epoch (which also compiles the step) counted as long as the second.
# Every epoch also scores the 360 validation rows.
set -euo pipefail
cd "$(dirname "$0")/.."
threshold="${1:-0.1}"
max_epochs="${2:-400}"
cargo build --release --quiet
nnc="$PWD/target/release/nnc"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp examples/digits_linear.nn "$work/"
mkdir -p "$work/data"
cp examples/data/digits.csv.gz "$work/data/"

# name | optimizer | epochs (host optimizers converge in far fewer iterations)
configs=(
  "SGD|sgd(lr = 0.5)|$max_epochs"
  "momentum|momentum(lr = 0.5, mu = 0.9)|$max_epochs"
  "Adam|adam(lr = 0.05)|$max_epochs"
  "L-BFGS|lbfgs(max_iter = 1)|200"
  "BFGS|bfgs(max_iter = 1)|200"
  "Newton|newton(max_iter = 1)|50"
  "Newton-CG|newton_cg(max_iter = 1)|100"
)
printf '| optimizer | settings | iterations to loss <= %s | evaluations | Hessian-vector products | wall time | optimizer memory |\n' "$threshold"
printf '|---|---|---:|---:|---:|---:|---:|\n'
for c in "${configs[@]}"; do
  IFS='|' read -r name opt epochs <<<"$c"
  out="$work/run-$name"
  "$nnc" train "$work/digits_linear.nn" --out "$out" --set "optimizer=$opt" --set batch=1797 \
    --set "epochs=$epochs" >/dev/null 2>&1
  sed "s/optimizer = adam(lr = 1e-2)/optimizer = $opt/" "$work/digits_linear.nn" >"$work/plan.nn"
  plan="$(cd "$work" && "$nnc" plan plan.nn --batch 1437)"
  host="$(grep -o 'its own state: [0-9]* bytes' <<<"$plan" | grep -o '[0-9]*' || true)"
  if [ -n "$host" ]; then
    bytes="$host"
  else
    bytes="$(grep -o 'optimizer state: [0-9]* bytes' <<<"$plan" | grep -o '[0-9]*')"
  fi
  awk -F, -v t="$threshold" -v name="$name" -v opt="$opt" -v bytes="$bytes" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    {
      e = $col["epoch"]; s[e] = $col["seconds"]; steps[e] = $col["step"]
      if (!found && ("hvps" in col)) { hv += $col["hvps"] }
      if (!found && $col["train_loss"] <= t) { found = e }
    }
    END {
      fmt_b = bytes >= 1e6 ? sprintf("%.1f MB", bytes / 1e6) : (bytes >= 1e3 ? sprintf("%.1f kB", bytes / 1e3) : bytes " B")
      if (!found) { printf "| %s | `%s` | not in %d | | | | %s |\n", name, opt, e, fmt_b; exit }
      first = (2 in s) ? s[2] - s[1] : s[1]
      wall = s[found] - s[1] + first
      printf "| %s | `%s` | %d | %d | %d | %.3f s | %s |\n", name, opt, found, steps[found], hv, wall, fmt_b
    }' "$out/metrics.csv"
done
