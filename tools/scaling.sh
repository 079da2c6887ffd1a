#!/usr/bin/env bash
# The scaling benchmark (tools/scaling.py): training-step time, compile time and memory of
# nnc against JAX jit and PyTorch eager as MLPs grow wide and deep, LSTMs long and wide,
# transformer encoders deep and long, and the batch large; one thread, the peers in the
# same run, interleaved point by point. Writes docs/scaling/scaling.csv, a PNG per sweep
# and compile time against node count in docs/scaling/, and docs/scaling.md.
#
#   PY=/path/to/venv/bin/python tools/scaling.sh [--quick] [--only SWEEP,...] [--budget S]
#
# --quick: two points per sweep and 0.5 s timing budgets (a check of the tool, a few
# minutes); the full sweep (21 points) takes 10 to 15 minutes on an idle 2-core machine
# (JAX compiles the 6-block encoder for several seconds). Every process runs on core 0
# (PIN=1, the default; PIN=0 to unpin): unpinned, XLA's runtime threads use the second
# core even with one intra-op thread, which is not a one-thread comparison. Needs a Python with torch, jax and matplotlib
# (python3 -m venv v && v/bin/pip install torch jax matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PIN=${PIN:-1}
cargo build --release --quiet
exec "$PY" tools/scaling.py run "$@"
