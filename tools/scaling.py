"""The scaling benchmark: how a training step's time, compile time and memory grow with the
model, in nnc (`nnc bench`) and, in the same run, JAX (jit) and PyTorch eager.

Sweeps (one model family each; every point one process per framework, interleaved point by
point: JAX, PyTorch, then nnc; one thread each):
  mlp_width    MLP 784-W-W-10, ReLU, W = 256, 1024, 4096, batch 128
  mlp_depth    residual MLP: Dense(784, 256), D pre-norm blocks x + relu(fc(norm(x))),
               Dense(256, 10); D = 2, 8, 32, batch 128
  lstm_T       LSTM 32->128 over T = 10, 50, 200 steps, last h -> Dense(128, 10), batch 32
  lstm_hidden  LSTM 32->H, H = 64, 256, 512, T = 20, batch 32
  enc_blocks   transformer encoder: Dense(32, d) + learned positions, L pre-norm blocks
               (MultiHeadAttention, GELU feed-forward 4d), LayerNorm, head on the mean over
               time; L = 2, 4, 6 (d 128, 4 heads, T 64), batch 16
  enc_T        the encoder with L = 2, d 128, T = 64, 256, batch 16
  batch        MLP 784-512-256-10 at batch 1, 16, 128, 1024
All f32, softmax cross-entropy on random labels, Adam (lr 1e-3; PyTorch's fused Adam).
Dense weights Glorot-uniform, biases zero in all three (PyTorch's nn.LSTM and
nn.TransformerEncoderLayer keep their own initializers; speed does not depend on them).

Recorded per point and framework: the median step time over the timed steps (nnc: `nnc
bench`, after its 5 warm-up steps; peers: after 3 warm-up steps, steps timed until a time
budget is spent, at least 3, at most 50), compile time (nnc: source to ready step, as
`nnc bench` prints it; JAX: `jit(step).lower(...).compile()`; PyTorch eager has none), nnc's
training-graph node count (before simplify) and arena, parameter bytes, and each process's
peak RSS (the whole process: Python, the framework and its libraries).

    python tools/scaling.py run [--quick] [--only SWEEP,...] [--budget S]
    python tools/scaling.py report            (re-renders docs/scaling.md and the PNGs
                                               from docs/scaling/scaling.csv)
    python tools/scaling.py peer jax|torch KIND JSON BUDGET      (one point, internal)

Writes docs/scaling/scaling.csv, docs/scaling/<sweep>.png, docs/scaling/compile_vs_nodes.png
and docs/scaling.md. Env: NNC (default target/release/nnc), PIN=1 runs everything on core 0
(taskset). `tools/scaling.sh` is the wrapper (builds nnc, uses the venv's Python).
"""
import csv
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "docs", "scaling")
CSV_PATH = os.path.join(OUT_DIR, "scaling.csv")
MD_PATH = os.path.join(ROOT, "docs", "scaling.md")
FRAMEWORKS = ["nnc", "jax", "torch"]
CLASSES = 10
N_IN_SEQ = 32  # input features per time step of the LSTM and the encoder

# (sweep, x label, kind, [(x, params)], quick subset of x)
SWEEPS = [
    ("mlp_width", "hidden width W", "mlp",
     [(w, {"sizes": [784, w, w, CLASSES], "batch": 128}) for w in (256, 1024, 4096)], (256, 1024)),
    ("mlp_depth", "residual blocks D", "resmlp",
     [(d, {"depth": d, "width": 256, "batch": 128}) for d in (2, 8, 32)], (2, 8)),
    ("lstm_T", "sequence length T", "lstm",
     [(t, {"T": t, "hidden": 128, "batch": 32}) for t in (10, 50, 200)], (10, 200)),
    ("lstm_hidden", "hidden size H", "lstm",
     [(h, {"T": 20, "hidden": h, "batch": 32}) for h in (64, 256, 512)], (64, 256)),
    ("enc_blocks", "encoder blocks L", "encoder",
     [(b, {"blocks": b, "d": 128, "heads": 4, "T": 64, "batch": 16}) for b in (2, 4, 6)], (2, 4)),
    ("enc_T", "sequence length T", "encoder",
     [(t, {"blocks": 2, "d": 128, "heads": 4, "T": t, "batch": 16}) for t in (64, 256)], (64, 256)),
    ("batch", "batch size", "mlp",
     [(b, {"sizes": [784, 512, 256, CLASSES], "batch": b}) for b in (1, 16, 128, 1024)], (1, 128)),
]


# ---- the models: parameter counts and .nn sources ------------------------------------------

def param_count(kind, p):
    if kind == "mlp":
        s = p["sizes"]
        return sum(a * b + b for a, b in zip(s, s[1:]))
    if kind == "resmlp":
        w = p["width"]
        return 784 * w + w + p["depth"] * (w * w + w + 2 * w) + w * CLASSES + CLASSES
    if kind == "lstm":
        h = p["hidden"]
        return N_IN_SEQ * 4 * h + h * 4 * h + 4 * h + h * CLASSES + CLASSES
    d = p["d"]
    block = 4 * (d * d + d) + 2 * 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return N_IN_SEQ * d + d + p["T"] * d + p["blocks"] * block + 2 * d + d * CLASSES + CLASSES


def nn_source(kind, p):
    train = f"    train {{ optimizer = adam(lr = 1e-3)  batch = {p['batch']} }}\n"
    if kind == "mlp":
        s = p["sizes"]
        layers = "".join(f"    layer fc{i} = Dense({a}, {b})\n" for i, (a, b) in enumerate(zip(s, s[1:])))
        h = "x"
        for i in range(len(s) - 1):
            h = f"fc{i}({h})" if i == len(s) - 2 else f"relu(fc{i}({h}))"
        return (f"model Mlp {{\n    input x: [B, {s[0]}]\n    input y: i32[B]\n{layers}"
                f"    output logits = {h}\n    loss = cross_entropy(logits, y)\n{train}}}\n")
    if kind == "resmlp":
        w, d = p["width"], p["depth"]
        return ("layer Block(n: int) {\n    layer norm = LayerNorm(n)\n    layer fc = Dense(n, n)\n"
                "    fn forward(x: [..., n]) -> [..., n] { x + relu(fc(norm(x))) }\n}\n"
                f"model ResMlp {{\n    input x: [B, 784]\n    input y: i32[B]\n"
                f"    layer stem = Dense(784, {w})\n    layer blocks = [Block({w}); {d}]\n"
                f"    layer head = Dense({w}, {CLASSES})\n    h = stem(x)\n"
                f"    for i in 0..{d} {{ h = blocks[i](h) }}\n    output logits = head(h)\n"
                f"    loss = cross_entropy(logits, y)\n{train}}}\n")
    if kind == "lstm":
        t, h = p["T"], p["hidden"]
        return (f"model Lstm {{\n    input x: [B, {t}, {N_IN_SEQ}]\n    input y: i32[B]\n"
                f"    layer lstm = LSTM({N_IN_SEQ}, {h})\n    layer head = Dense({h}, {CLASSES})\n"
                f"    output logits = head(lstm(x))\n    loss = cross_entropy(logits, y)\n{train}}}\n")
    d, heads, t, nb = p["d"], p["heads"], p["T"], p["blocks"]
    return ("layer Block(d: int, heads: int) {\n    layer norm1 = LayerNorm(d)\n"
            "    layer attn = MultiHeadAttention(d, heads = heads)\n    layer norm2 = LayerNorm(d)\n"
            "    layer ff1 = Dense(d, 4 * d)\n    layer ff2 = Dense(4 * d, d)\n"
            "    fn forward(x: [N, T, d]) -> [N, T, d] {\n        h = x + attn(norm1(x))\n"
            "        h + ff2(gelu(ff1(norm2(h))))\n    }\n}\n"
            f"model Encoder {{\n    input x: [B, {t}, {N_IN_SEQ}]\n    input y: i32[B]\n"
            f"    layer embed = Dense({N_IN_SEQ}, {d})\n    param pos: [{t}, {d}] = normal(0.02)\n"
            f"    layer blocks = [Block({d}, {heads}); {nb}]\n    layer norm = LayerNorm({d})\n"
            f"    layer head = Dense({d}, {CLASSES})\n    h = embed(x) + pos\n"
            f"    for i in 0..{nb} {{ h = blocks[i](h) }}\n"
            f"    output logits = head(mean(norm(h), axis = 1))\n"
            f"    loss = cross_entropy(logits, y)\n{train}}}\n")


def input_shape(kind, p):
    if kind in ("mlp", "resmlp"):
        return (p["batch"], p["sizes"][0] if kind == "mlp" else 784)
    return (p["batch"], p["T"], N_IN_SEQ)


# ---- the peers (run in their own process: `scaling.py peer ...`) ---------------------------

def timed_steps(step, budget):
    """Median ms of steps run until `budget` seconds are spent (at least 3, at most 50)."""
    for _ in range(3):
        step()
    times = []
    t0 = time.perf_counter()
    while len(times) < 3 or (len(times) < 50 and time.perf_counter() - t0 < budget):
        a = time.perf_counter()
        step()
        times.append((time.perf_counter() - a) * 1e3)
    times.sort()
    return times[len(times) // 2], len(times)


def peer_torch(kind, p, budget):
    import numpy as np
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    nn = torch.nn

    class ResMlp(nn.Module):
        def __init__(self):
            super().__init__()
            w = p["width"]
            self.stem = nn.Linear(784, w)
            self.norms = nn.ModuleList([nn.LayerNorm(w) for _ in range(p["depth"])])
            self.fcs = nn.ModuleList([nn.Linear(w, w) for _ in range(p["depth"])])
            self.head = nn.Linear(w, CLASSES)

        def forward(self, x):
            h = self.stem(x)
            for norm, fc in zip(self.norms, self.fcs):
                h = h + torch.relu(fc(norm(h)))
            return self.head(h)

    class Lstm(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(N_IN_SEQ, p["hidden"], batch_first=True)
            self.head = nn.Linear(p["hidden"], CLASSES)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(h[-1])

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            d = p["d"]
            self.embed = nn.Linear(N_IN_SEQ, d)
            self.pos = nn.Parameter(torch.randn(p["T"], d) * 0.02)
            layer = nn.TransformerEncoderLayer(d, p["heads"], 4 * d, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.enc = nn.TransformerEncoder(layer, p["blocks"], norm=nn.LayerNorm(d), enable_nested_tensor=False)
            self.head = nn.Linear(d, CLASSES)

        def forward(self, x):
            return self.head(self.enc(self.embed(x) + self.pos).mean(1))

    if kind == "mlp":
        s = p["sizes"]
        mods = []
        for i, (a, b) in enumerate(zip(s, s[1:])):
            mods.append(nn.Linear(a, b))
            if i < len(s) - 2:
                mods.append(nn.ReLU())
        model = nn.Sequential(*mods)
    else:
        model = {"resmlp": ResMlp, "lstm": Lstm, "encoder": Encoder}[kind]()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal(input_shape(kind, p)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, CLASSES, p["batch"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    first = (time.perf_counter() - t0) * 1e3
    med, n = timed_steps(step, budget)
    return {"step_ms": med, "steps": n, "compile_ms": None, "first_ms": first}


def peer_jax(kind, p, budget):
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)

    def glorot(a, b):
        lim = np.sqrt(6 / (a + b))
        return jnp.asarray(rng.uniform(-lim, lim, (a, b)), jnp.float32)

    def dense(a, b):
        return {"w": glorot(a, b), "b": jnp.zeros(b, jnp.float32)}

    def lin(q, h):
        return h @ q["w"] + q["b"]

    def norm_p(n):
        return {"g": jnp.ones(n, jnp.float32), "b": jnp.zeros(n, jnp.float32)}

    def layer_norm(q, x):
        mu = x.mean(-1, keepdims=True)
        v = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(v + 1e-5) * q["g"] + q["b"]

    if kind == "mlp":
        s = p["sizes"]
        ps = [dense(a, b) for a, b in zip(s, s[1:])]

        def forward(ps, x):
            h = x
            for i, q in enumerate(ps):
                h = lin(q, h)
                if i < len(ps) - 1:
                    h = jax.nn.relu(h)
            return h
    elif kind == "resmlp":
        w = p["width"]
        ps = {"stem": dense(784, w), "blocks": [{"norm": norm_p(w), "fc": dense(w, w)} for _ in range(p["depth"])],
              "head": dense(w, CLASSES)}

        def forward(ps, x):
            h = lin(ps["stem"], x)
            for q in ps["blocks"]:
                h = h + jax.nn.relu(lin(q["fc"], layer_norm(q["norm"], h)))
            return lin(ps["head"], h)
    elif kind == "lstm":
        n = p["hidden"]
        ps = {"wx": glorot(N_IN_SEQ, 4 * n), "wh": glorot(n, 4 * n), "b": jnp.zeros(4 * n, jnp.float32),
              "head": dense(n, CLASSES)}

        def forward(ps, x):
            xw = jnp.swapaxes(x, 0, 1) @ ps["wx"] + ps["b"]

            def cell(carry, z):
                h, c = carry
                z = z + h @ ps["wh"]
                i, f = jax.nn.sigmoid(z[:, :n]), jax.nn.sigmoid(z[:, n:2 * n])
                g, o = jnp.tanh(z[:, 2 * n:3 * n]), jax.nn.sigmoid(z[:, 3 * n:])
                c = f * c + i * g
                return (o * jnp.tanh(c), c), None

            zeros = jnp.zeros((x.shape[0], n), jnp.float32)
            (h, _), _ = jax.lax.scan(cell, (zeros, zeros), xw)
            return lin(ps["head"], h)
    else:
        d, heads = p["d"], p["heads"]
        ps = {"embed": dense(N_IN_SEQ, d),
              "pos": jnp.asarray(rng.standard_normal((p["T"], d)) * 0.02, jnp.float32),
              "blocks": [{"n1": norm_p(d), "q": dense(d, d), "k": dense(d, d), "v": dense(d, d), "o": dense(d, d),
                          "n2": norm_p(d), "f1": dense(d, 4 * d), "f2": dense(4 * d, d)} for _ in range(p["blocks"])],
              "norm": norm_p(d), "head": dense(d, CLASSES)}

        def forward(ps, x):
            n, t = x.shape[0], x.shape[1]

            def split(z):
                return z.reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)

            h = lin(ps["embed"], x) + ps["pos"]
            for q in ps["blocks"]:
                a = layer_norm(q["n1"], h)
                s = split(lin(q["q"], a)) @ jnp.swapaxes(split(lin(q["k"], a)), -1, -2) / np.sqrt(d / heads)
                o = (jax.nn.softmax(s) @ split(lin(q["v"], a))).transpose(0, 2, 1, 3).reshape(n, t, d)
                h = h + lin(q["o"], o)
                h = h + lin(q["f2"], jax.nn.gelu(lin(q["f1"], layer_norm(q["n2"], h)), approximate=False))
            return lin(ps["head"], layer_norm(ps["norm"], h).mean(1))

    def loss(ps, x, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(forward(ps, x)), y[:, None], 1))

    def train_step(ps, m, v, t, x, y):
        g = jax.grad(loss)(ps, x, y)
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-3
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        ps = jax.tree.map(lambda p, m, v: p - lr / (1 - b1**t) * m / (jnp.sqrt(v) / jnp.sqrt(1 - b2**t) + eps),
                          ps, m, v)
        return ps, m, v

    x = jnp.asarray(rng.standard_normal(input_shape(kind, p)), jnp.float32)
    y = jnp.asarray(rng.integers(0, CLASSES, p["batch"]), jnp.int32)
    m = jax.tree.map(jnp.zeros_like, ps)
    v = jax.tree.map(jnp.zeros_like, ps)
    t0 = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(ps, m, v, 1.0, x, y).compile()
    compile_ms = (time.perf_counter() - t0) * 1e3
    state = [ps, m, v, 1.0]

    def step():
        ps, m, v, t = state
        ps, m, v = compiled(ps, m, v, t, x, y)
        jax.block_until_ready(ps)
        state[:] = [ps, m, v, t + 1.0]

    med, n = timed_steps(step, budget)
    return {"step_ms": med, "steps": n, "compile_ms": compile_ms}


# ---- the driver -----------------------------------------------------------------------------

def run_child(cmd, timeout):
    """Runs cmd; returns (output, peak RSS in MB, return code). Peak RSS from wait4."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return text, usage.ru_maxrss / 1024.0, proc.returncode


def pin():
    return ["taskset", "-c", "0"] if os.environ.get("PIN") == "1" else []


def run_peer(fw, kind, p, budget, timeout):
    cmd = pin() + [sys.executable, os.path.abspath(__file__), "peer", fw, kind, json.dumps(p), str(budget)]
    text, rss, rc = run_child(cmd, timeout)
    for line in text.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["rss_mb"] = rss
            return r
    return {"error": f"exit {rc}: " + " | ".join(text.strip().splitlines()[-3:])}


def run_nnc(nnc, path, p, steps, timeout):
    cmd = pin() + [nnc, "bench", path, "--batch", str(p["batch"]), "--threads", "1", "--steps", str(steps)]
    text, rss, rc = run_child(cmd, timeout)
    num = r"([0-9.]+)"
    pats = {"compile_ms": rf"^compile: {num} ms", "step_ms": rf"^step: median {num} ms",
            "nodes": rf"^graph: {num} nodes", "nodes_simplified": rf"^graph: \d+ nodes, {num} after",
            "kernels": rf"^graph: .*, {num} kernels", "arena_mb": rf"^arena: {num} MB"}
    r = {}
    for k, pat in pats.items():
        mt = re.search(pat, text, re.M)
        if mt:
            r[k] = float(mt.group(1))
    if "step_ms" not in r:
        return {"error": f"exit {rc}: " + " | ".join(text.strip().splitlines()[-3:])}
    r["steps"] = steps
    r["rss_mb"] = rss
    return r


COLUMNS = ["sweep", "x", "kind", "params", "framework", "step_ms", "steps", "compile_ms", "nodes",
           "nodes_simplified", "kernels", "arena_mb", "param_mb", "rss_mb", "error"]


def run(args):
    quick = "--quick" in args
    only = None
    budget = 0.5 if quick else 2.0
    frameworks = FRAMEWORKS
    for i, a in enumerate(args):
        if a == "--only" and i + 1 < len(args):
            only = args[i + 1].split(",")
        if a == "--budget" and i + 1 < len(args):
            budget = float(args[i + 1])
        if a == "--frameworks" and i + 1 < len(args):
            frameworks = args[i + 1].split(",")
    nnc = os.environ.get("NNC", os.path.join(ROOT, "target", "release", "nnc"))
    timeout = 900
    rows = []
    os.makedirs(OUT_DIR, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for sweep, _, kind, points, quick_xs in SWEEPS:
            if only and sweep not in only:
                continue
            for x, p in points:
                if quick and x not in quick_xs:
                    continue
                base = {"sweep": sweep, "x": x, "kind": kind, "params": json.dumps(p, separators=(",", ":")),
                        "param_mb": round(param_count(kind, p) * 4e-6, 3)}
                peer_ms = []
                line = f"{sweep} {x}:"
                for fw in [f for f in frameworks if f != "nnc"]:
                    r = run_peer(fw, kind, p, budget, timeout)
                    rows.append({**base, "framework": fw, **r})
                    if "step_ms" in r:
                        peer_ms.append(r["step_ms"])
                        line += f" {fw} {r['step_ms']:.3f} ms"
                    else:
                        line += f" {fw} failed ({r['error'][:200]})"
                if "nnc" in frameworks:
                    # As many steps as fit in the budget at the fastest peer's speed.
                    steps = max(3, min(50, int(budget * 1e3 / min(peer_ms)))) if peer_ms else 10
                    path = os.path.join(tmp, f"{sweep}_{x}.nn")
                    with open(path, "w") as f:
                        f.write(nn_source(kind, p))
                    r = run_nnc(nnc, path, p, steps, timeout)
                    rows.append({**base, "framework": "nnc", **r})
                    if "step_ms" in r:
                        line += f" nnc {r['step_ms']:.3f} ms (compile {r.get('compile_ms', 0):.0f} ms, " \
                                f"{r.get('nodes', 0):.0f} nodes)"
                    else:
                        line += f" nnc failed ({r['error'][:300]})"
                print(line, flush=True)
    with open(CSV_PATH, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(r.get(k)) for k in COLUMNS})
    meta = machine(quick, budget, time.time() - started)
    with open(os.path.join(OUT_DIR, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    report()


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return v


def machine(quick, budget, seconds):
    cpu = platform.processor()
    avx512 = False
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        m = re.search(r"model name\s*:\s*(.*)", info)
        cpu = m.group(1).strip() if m else cpu
        avx512 = "avx512f" in info
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "jax"):
        try:
            out = subprocess.run([sys.executable, "-c", f"import {mod}; print({mod}.__version__)"],
                                 capture_output=True, text=True, timeout=120)
            versions[mod] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            versions[mod] = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
    except OSError:
        commit = "?"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cores": os.cpu_count(), "avx512": avx512, "versions": versions, "commit": commit,
            "quick": quick, "budget": budget, "seconds": round(seconds), "pinned": os.environ.get("PIN") == "1"}


# ---- the report: PNGs and docs/scaling.md from the CSV --------------------------------------

def load_rows():
    with open(CSV_PATH) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("x", "step_ms", "compile_ms", "nodes", "nodes_simplified", "kernels", "arena_mb", "param_mb",
                  "rss_mb", "steps"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
    return rows


def get(rows, sweep, x, fw, key):
    for r in rows:
        if r["sweep"] == sweep and r["x"] == x and r["framework"] == fw:
            return r.get(key)
    return None


def loglog_slope(xs, ys):
    lx = [math.log(a) for a in xs]
    ly = [math.log(b) for b in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx > 0 else float("nan")


STYLE = {"nnc": ("tab:blue", "o"), "jax": ("tab:orange", "s"), "torch": ("tab:green", "^")}
LABEL = {"nnc": "nnc", "jax": "JAX jit", "torch": "PyTorch eager"}


def plots(rows, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tag = " (quick mode: a tool check, not for publishing)" if meta.get("quick") else ""
    for sweep, xlabel, kind, _, _ in SWEEPS:
        rs = [r for r in rows if r["sweep"] == sweep]
        if not rs:
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for fw in FRAMEWORKS:
            pts = sorted((r["x"], r["step_ms"]) for r in rs if r["framework"] == fw and r["step_ms"])
            if pts:
                c, m = STYLE[fw]
                a1.plot(*zip(*pts), marker=m, color=c, label=LABEL[fw])
            pts = sorted((r["x"], r["compile_ms"]) for r in rs if r["framework"] == fw and r["compile_ms"])
            if pts:
                c, m = STYLE[fw]
                a2.plot(*zip(*pts), marker=m, color=c, label=LABEL[fw])
        for a, title in ((a1, "training step (median ms)"), (a2, "compile time (ms)")):
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_xlabel(xlabel)
            a.set_title(title)
            a.grid(True, which="both", alpha=0.3)
            a.legend()
        fig.suptitle(f"{sweep}: {describe(sweep)}{tag}", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT_DIR, f"{sweep}.png"), dpi=90)
        plt.close(fig)
    pts = [(r["nodes"], r["compile_ms"], r["sweep"]) for r in rows
           if r["framework"] == "nnc" and r["nodes"] and r["compile_ms"]]
    if len(pts) >= 2:
        fig, a = plt.subplots(figsize=(6, 4.5))
        for sweep, *_ in SWEEPS:
            sp = [(n, c) for n, c, s in pts if s == sweep]
            if sp:
                a.scatter(*zip(*sp), label=sweep, s=25)
        ns = [n for n, _, _ in pts]
        cs = [c for _, c, _ in pts]
        # The linear reference: compile time proportional to nodes, through the points'
        # geometric mean; the fitted log-log slope beside it.
        k = math.exp(sum(math.log(c / n) for n, c, _ in pts) / len(pts))
        lo, hi = min(ns) / 1.5, max(ns) * 1.5
        a.plot([lo, hi], [k * lo, k * hi], "k--", lw=1, label="linear (slope 1)")
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("training-graph nodes (before simplify)")
        a.set_ylabel("nnc compile time, source to ready step (ms)")
        a.set_title(f"nnc compile time against nodes: log-log slope {loglog_slope(ns, cs):.2f}{tag}", fontsize=8)
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT_DIR, "compile_vs_nodes.png"), dpi=90)
        plt.close(fig)


def describe(sweep):
    return {
        "mlp_width": "MLP 784-W-W-10, batch 128",
        "mlp_depth": "residual MLP, width 256, D pre-norm blocks, batch 128",
        "lstm_T": "LSTM 32->128 over T steps, batch 32",
        "lstm_hidden": "LSTM 32->H over 20 steps, batch 32",
        "enc_blocks": "transformer encoder, L blocks, d 128, 4 heads, T 64, batch 16",
        "enc_T": "transformer encoder, 2 blocks, d 128, 4 heads, batch 16",
        "batch": "MLP 784-512-256-10",
    }[sweep]


def num(v, digits=3):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def report():
    rows = load_rows()
    try:
        with open(os.path.join(OUT_DIR, "meta.json")) as f:
            meta = json.load(f)
    except OSError:
        meta = {}
    plots(rows, meta)
    v = meta.get("versions", {})
    out = ["# Scaling: nnc against JAX and PyTorch as the model grows", ""]
    out.append(f"Generated by `tools/scaling.sh` on {meta.get('date', '?')} (nnc {meta.get('commit', '?')}) "
               f"on {meta.get('cores', '?')} cores, {meta.get('cpu', '?')}, "
               f"{'AVX-512' if meta.get('avx512') else 'no AVX-512'}; PyTorch {v.get('torch', '?')}, "
               f"JAX {v.get('jax', '?')}; one thread each{', pinned to core 0' if meta.get('pinned') else ''}; "
               f"the whole run took {meta.get('seconds', '?')} s.")
    out.append("")
    if meta.get("quick"):
        out += ["**Quick mode (`--quick`): two points per sweep and short timing budgets, on a shared, busy "
                "machine. These numbers check that the tool works end to end; they are not results.**", ""]
    out += [
        "Every point runs as one process per framework, interleaved point by point (JAX, PyTorch, nnc), so",
        "drift hits all three alike; compare within a row. Training steps (forward, backward, Adam update),",
        "f32, random inputs and labels. Step: median over the timed steps (peers: after 3 warm-up steps,",
        f"timed for {meta.get('budget', '?')} s, at least 3 and at most 50 steps; nnc: `nnc bench` with as many",
        "steps as the fastest peer fits in that time, after its 5 warm-up steps). Compile: nnc from source",
        "to a ready step (parse, lower, autodiff, update, simplify, fusion, plan, Cranelift, allocation);",
        "JAX `jit(step).lower(...).compile()`; PyTorch eager compiles nothing. Nodes: nnc's training graph",
        "(forward, backward and update) before simplify. Arena: nnc's planned scratch memory for one step",
        "(parameters and Adam states excluded). Parameters: the model's parameter bytes (the same in all",
        "three). Peak RSS: each process's maximum resident memory, as the OS reports it (the whole",
        "process: Python and the framework's libraries for the peers).",
        "",
        "The models (the same layers in the three; `tools/scaling.py` writes the `.nn` files):",
        "",
    ]
    for sweep, xlabel, *_ in SWEEPS:
        out.append(f"- `{sweep}`: {describe(sweep)}; x = {xlabel}.")
    out += ["", "Dense weights are Glorot-uniform with zero biases in all three; the LSTM is PyTorch's `nn.LSTM`",
            "and JAX's `lax.scan` (nnc unrolls the loop); the encoder block is PyTorch's",
            "`nn.TransformerEncoderLayer(norm_first=True, activation=\"gelu\", dropout=0)` (pre-norm,",
            "attention then a 4d GELU feed-forward, each residual) and the same in JAX and nnc",
            "(`MultiHeadAttention`, `LayerNorm`, `Dense`).", "",
            "Left out, to keep the whole run near 10 minutes on two cores: the encoder at d = 256 (d stays",
            "128), torch.compile (its compilation takes tens of seconds per point), two threads, and repeated",
            "rounds (each point is one process per framework: on a shared machine rerun a point with",
            "`--only SWEEP` before reading much into one ratio). The encoder runs at batch 16 and the LSTM",
            "at batch 32 (the LSTM workload's), so the longest points stay under a second a step.", ""]
    for sweep, xlabel, *_ in SWEEPS:
        rs = [r for r in rows if r["sweep"] == sweep]
        if not rs:
            continue
        xs = sorted({r["x"] for r in rs})
        out += [f"## `{sweep}`: {describe(sweep)}", "", f"![{sweep}](scaling/{sweep}.png)", "",
                f"| {xlabel} | nnc ms | JAX ms | PyTorch ms | nnc / best peer | nnc compile ms | JAX compile ms "
                "| nodes | kernels | arena MB | params MB | peak RSS MB nnc / JAX / PyTorch |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in xs:
            a = get(rows, sweep, x, "nnc", "step_ms")
            peers = [b for b in (get(rows, sweep, x, "jax", "step_ms"), get(rows, sweep, x, "torch", "step_ms")) if b]
            ratio = f"{a / min(peers):.2f}" if a and peers else "-"
            rss = " / ".join(num(get(rows, sweep, x, fw, "rss_mb")) for fw in FRAMEWORKS)
            pm = next((r["param_mb"] for r in rs if r["x"] == x and r["param_mb"] is not None), None)
            out.append(
                f"| {x:g} | {num(a)} | {num(get(rows, sweep, x, 'jax', 'step_ms'))} | "
                f"{num(get(rows, sweep, x, 'torch', 'step_ms'))} | {ratio} | "
                f"{num(get(rows, sweep, x, 'nnc', 'compile_ms'))} | {num(get(rows, sweep, x, 'jax', 'compile_ms'))} | "
                f"{num(get(rows, sweep, x, 'nnc', 'nodes'))} | {num(get(rows, sweep, x, 'nnc', 'kernels'))} | "
                f"{num(get(rows, sweep, x, 'nnc', 'arena_mb'))} | {num(pm)} | {rss} |")
        errs = [r for r in rs if r.get("error")]
        for r in errs:
            out.append(f"\n{r['framework']} failed at {sweep} = {r['x']:g}: {r['error']}")
        out.append("")
    pts = [(r["nodes"], r["compile_ms"]) for r in rows if r["framework"] == "nnc" and r["nodes"] and r["compile_ms"]]
    out += ["## nnc's compile time against the training graph's size", "",
            "![compile time against nodes](scaling/compile_vs_nodes.png)", ""]
    if len(pts) >= 2:
        slope = loglog_slope(*zip(*pts))
        per = sorted(c / n * 1e3 for n, c in pts)
        out += [f"Every nnc point above: compile time (source to ready step) against the training graph's",
                f"node count, {len(pts)} points from {min(n for n, _ in pts):.0f} to {max(n for n, _ in pts):.0f} "
                f"nodes. The least-squares slope of log(compile time) on log(nodes) is **{slope:.2f}**",
                "(1 is linear growth, 2 quadratic); compile time per node spans "
                f"{per[0]:.1f} to {per[-1]:.1f} us (median {per[len(per) // 2]:.1f} us). The dashed line is",
                "exact proportionality through the points' geometric mean. The largest graph is the LSTM",
                "unrolled over 200 steps. `tools/compile_scaling.sh` checks the same at N and 3N layers on",
                "synthetic stacks of thousands of layers.", ""]
    out += summary(rows, meta)
    with open(MD_PATH, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    print(f"wrote {MD_PATH}, {CSV_PATH} and the PNGs in {OUT_DIR}")


def summary(rows, meta):
    """A short table meant to be copied into the README: the largest point of each sweep."""
    out = ["## Summary (for the README)", "",
           f"Scaling benchmark (`tools/scaling.sh`, {meta.get('date', '?')[:10]}, one thread, training steps, "
           "median ms; JAX and PyTorch eager in the same run; full tables and plots in docs/scaling.md):", "",
           "| sweep | point | nnc ms | JAX ms | PyTorch ms | nnc / best peer | nnc compile ms |",
           "|---|---|---|---|---|---|---|"]
    for sweep, xlabel, *_ in SWEEPS:
        xs = sorted({r["x"] for r in rows if r["sweep"] == sweep})
        for x in xs[-1:] if sweep != "batch" else xs[:1] + xs[-1:]:
            a = get(rows, sweep, x, "nnc", "step_ms")
            j, t = get(rows, sweep, x, "jax", "step_ms"), get(rows, sweep, x, "torch", "step_ms")
            peers = [b for b in (j, t) if b]
            ratio = f"{a / min(peers):.2f}" if a and peers else "-"
            out.append(f"| {describe(sweep)} | {xlabel} {x:g} | {num(a)} | {num(j)} | {num(t)} | {ratio} | "
                       f"{num(get(rows, sweep, x, 'nnc', 'compile_ms'))} |")
    pts = [(r["nodes"], r["compile_ms"]) for r in rows if r["framework"] == "nnc" and r["nodes"] and r["compile_ms"]]
    if len(pts) >= 2:
        out += ["", f"nnc's compile time grows with log-log slope {loglog_slope(*zip(*pts)):.2f} in the training "
                f"graph's node count ({min(n for n, _ in pts):.0f} to {max(n for n, _ in pts):.0f} nodes; 1 is linear)."]
    if meta.get("quick"):
        out += ["", "(Quick-mode numbers: a check of the tool, not results.)"]
    return out + [""]


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("run", "report", "peer"):
        sys.exit(__doc__)
    if args[0] == "run":
        run(args[1:])
    elif args[0] == "report":
        report()
    else:
        fw, kind, p, budget = args[1], args[2], json.loads(args[3]), float(args[4])
        r = (peer_jax if fw == "jax" else peer_torch)(kind, p, budget)
        print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
