"""Writes examples/data/windows.npz, the synthetic data set of examples/window.nn.

A vocabulary of 40 random 50-d word vectors; a true window is 5 consecutive words of a
cyclic "sentence" (word i is followed by word i+1 mod 40); its corrupted twin has the
centre word replaced by a random other word. The scorer must learn to give true windows
a higher score than corrupted ones, as in the course notes' window classifier.

Run: python3 tools/make_windows.py  (needs numpy)
"""
import os

import numpy as np

rng = np.random.default_rng(0)
V, D, N = 40, 50, 1200
vocab = rng.standard_normal((V, D)).astype(np.float32)
starts = rng.integers(0, V, size=N)
ids = (starts[:, None] + np.arange(5)[None, :]) % V
bad_ids = ids.copy()
bad_ids[:, 2] = (ids[:, 2] + rng.integers(1, V, size=N)) % V
out = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "windows.npz")
np.savez_compressed(out, good=vocab[ids], bad=vocab[bad_ids])
print(out, os.path.getsize(out), "bytes")
