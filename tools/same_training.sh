#!/usr/bin/env bash
# Trains every example for 2 epochs with two nnc binaries and compares the runs: every
# checkpoint's tensors and metadata byte for byte, and metrics.csv without its timing
# columns. For refactors that must not change training results.
# Usage: tools/same_training.sh OLD_NNC NEW_NNC [WORK_DIR]
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); work=${3:-$(mktemp -d)}
cd "$(dirname "$0")/../examples"
for bin in old new; do
    exe=$old; [ $bin = new ] && exe=$new
    mkdir -p "$work/$bin"
    for f in *.nn; do
        s=${f%.nn}
        "$exe" train "$f" --set epochs=2 --out "$work/$bin/$s" --force >"$work/$bin/$s.out" 2>"$work/$bin/$s.err" \
            && echo "$s 0" >>"$work/$bin/codes" || echo "$s $?" >>"$work/$bin/codes"
    done
done
python3 - "$work" <<'PY'
import csv, glob, json, struct, sys, filecmp
w = sys.argv[1]
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return h, h.pop('__metadata__', {}), b[8 + n:]
bad = n = 0
if open(f'{w}/old/codes').read() != open(f'{w}/new/codes').read():
    bad += 1; print('exit codes differ')
for f in glob.glob(f'{w}/old/*/*.safetensors'):
    n += 1
    if load(f) != load(f.replace('/old/', '/new/', 1)): bad += 1; print('differs:', f)
for f in glob.glob(f'{w}/old/*/metrics.csv'):
    n += 1
    a = list(csv.reader(open(f))); b = list(csv.reader(open(f.replace('/old/', '/new/', 1))))
    keep = [i for i, h in enumerate(a[0]) if h not in ('samples_per_sec', 'seconds')]
    if a[0] != b[0] or [[r[i] for i in keep] for r in a] != [[r[i] for i in keep] for r in b]:
        bad += 1; print('differs:', f)
print(f'{n} files compared, {bad} differ')
sys.exit(1 if bad else 0)
PY
