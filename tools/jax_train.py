"""Train the three MNIST examples in plain JAX with exactly nnc's recipes.

The point is to learn what accuracy the *recipes* (model, init, optimizer, schedule,
batch, epochs) reach outside nnc, so that a gap to the targets (mnist_cnn >= 97%,
row_lstm >= 95%, row_attention >= 95% test accuracy) can be attributed either to the
recipe or to nnc. The models mirror examples/mnist_cnn.nn, row_lstm.nn and
row_attention.nn, with nnc's layouts and init conventions (see the brief in each
builder below). The optimizers and schedules are written by hand in jax.numpy with
PyTorch conventions; no optax.

Data: examples/data/mnist10k-*.gz (10,000 MNIST digits), pixels / 255, a stratified
80/20 train/test split by seed (per class: shuffle and cut, carrying the rounding of each
cut to the next class as nnc's src/data/split.rs does, so the train set has exactly 8000
samples), reshuffled every epoch, batch 64 (125 full batches per epoch), float32.

Random streams differ from nnc's (numpy's PCG64 instead of nnc's SplitMix64), so single
runs are not bit-comparable to nnc; compare means over seeds.

Run (CPU, one thread, to leave the rest of the machine alone):

    taskset -c 1 python3 tools/jax_train.py [mnist_cnn row_lstm row_attention] \
        [--seeds 0 1 2] [--epochs N] [--forget-bias 1.0]

Prints one line per run (test accuracy, last-epoch train accuracy, wall time) and a
summary per model.
"""

import argparse
import gzip
import math
import os
import time

# Single-threaded XLA unless the caller already chose flags. Must be set before jax loads.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "data")
BATCH = 64


# ----------------------------------------------------------------------------- data


def read_idx(path):
    """A gzip'd IDX file as a numpy array (uint8 images or labels)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist():
    x = read_idx(os.path.join(DATA, "mnist10k-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = read_idx(os.path.join(DATA, "mnist10k-labels-idx1-ubyte.gz")).astype(np.int32)
    return x, y


def stratified_split(y, frac, rng):
    """Per class (sorted by label): shuffle, cut at round(frac * n + carry), carry the
    rounding error to the next class. Returns (train_idx, test_idx), each shuffled."""
    train, test, carry = [], [], 0.0
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rng.shuffle(rows)
        ideal = frac * len(rows) + carry
        cut = int(np.clip(round(ideal), 0, len(rows)))
        carry = ideal - cut
        train.append(rows[:cut])
        test.append(rows[cut:])
    train, test = np.concatenate(train), np.concatenate(test)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


# ----------------------------------------------------------------------------- init


def xavier(rng, n_in, n_out, shape=None):
    a = math.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-a, a, size=shape or (n_in, n_out)).astype(np.float32)


def dense_init(rng, n_in, n_out):
    return {"W": xavier(rng, n_in, n_out), "b": np.zeros(n_out, np.float32)}


def conv_init(rng, c_in, c_out, k):
    a = math.sqrt(6.0 / (c_in * k * k))  # he uniform, fan_in = c_in*k*k
    return {
        "W": rng.uniform(-a, a, size=(c_out, c_in, k, k)).astype(np.float32),
        "b": np.zeros(c_out, np.float32),
    }


# ----------------------------------------------------------------------------- layers


def dense(p, x):
    return x @ p["W"] + p["b"]


def conv2d(p, x, padding=1):
    """Cross-correlation, NCHW input, OIHW weight, stride 1."""
    y = lax.conv_general_dilated(
        x, p["W"], window_strides=(1, 1), padding=[(padding, padding)] * 2,
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return y + p["b"][None, :, None, None]


def maxpool2(x):
    """2x2 max pool, stride 2, NCHW (H and W even here: 28 -> 14 -> 7)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def batchnorm(p, s, x, train, eps=1e-5, momentum=0.9):
    """BatchNorm over (N,H,W) of NCHW. Train: batch mean / biased var, and the running
    stats move by running = 0.9 running + 0.1 batch (var: the unbiased batch variance).
    Eval: running stats. Returns (y, new_state)."""
    if train:
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
        n = x.shape[0] * x.shape[2] * x.shape[3]
        s = {
            "mean": momentum * s["mean"] + (1 - momentum) * mean,
            "var": momentum * s["var"] + (1 - momentum) * var * (n / (n - 1)),
        }
    else:
        mean, var = s["mean"], s["var"]
    xh = (x - mean[None, :, None, None]) / jnp.sqrt(var[None, :, None, None] + eps)
    return xh * p["gamma"][None, :, None, None] + p["beta"][None, :, None, None], s


def layernorm(p, x, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["gamma"] + p["beta"]


def lstm(p, x):
    """x [B,T,n_in] -> last h [B,n]. Gates i,f,g,o in blocks of n along the 4n axis."""
    n = p["Wh"].shape[0]
    xw = jnp.einsum("btk,kg->tbg", x, p["Wx"]) + p["b"]  # input projection for all steps

    def step(carry, xw_t):
        h, c = carry
        z = xw_t + h @ p["Wh"]
        i = jax.nn.sigmoid(z[:, 0 * n : 1 * n])
        f = jax.nn.sigmoid(z[:, 1 * n : 2 * n])
        g = jnp.tanh(z[:, 2 * n : 3 * n])
        o = jax.nn.sigmoid(z[:, 3 * n : 4 * n])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((x.shape[0], n), x.dtype)
    (h, _), _ = lax.scan(step, (zeros, zeros), xw)
    return h


def mha(p, x, heads):
    """Non-causal multi-head self-attention, x [B,T,D]."""
    b, t, d = x.shape
    hd = d // heads

    def split(z):  # [B,T,D] -> [B,H,T,hd]
        return z.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)

    q, k, v = split(dense(p["q"], x)), split(dense(p["k"], x)), split(dense(p["v"], x))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    o = jax.nn.softmax(s, axis=-1) @ v
    o = o.transpose(0, 2, 1, 3).reshape(b, t, d)
    return dense(p["o"], o)


def gelu(x):
    return 0.5 * x * (1.0 + lax.erf(x / math.sqrt(2.0)))


def cross_entropy(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


# ----------------------------------------------------------------------------- models
# Each builder returns (params, state, apply, xshape, recipe). apply(params, state, x,
# train) -> (logits, new_state). state holds non-trained buffers (BatchNorm running stats).


def mnist_cnn(rng, args):
    params = {
        "c1": conv_init(rng, 1, 8, 3),
        "bn": {"gamma": np.ones(8, np.float32), "beta": np.zeros(8, np.float32)},
        "c2": conv_init(rng, 8, 16, 3),
        "fc": dense_init(rng, 16 * 7 * 7, 10),
    }
    state = {"bn": {"mean": np.zeros(8, np.float32), "var": np.ones(8, np.float32)}}

    def apply(p, s, x, train):
        h, bn_s = batchnorm(p["bn"], s["bn"], conv2d(p["c1"], x), train)
        h = maxpool2(jax.nn.relu(h))
        h = maxpool2(jax.nn.relu(conv2d(p["c2"], h)))
        return dense(p["fc"], h.reshape(h.shape[0], -1)), {"bn": bn_s}

    recipe = dict(opt=("nesterov", 0.05, 0.9), schedule=("step", 400, 0.5), clip=None, epochs=8)
    return params, state, apply, (1, 28, 28), recipe


def row_lstm(rng, args):
    n = 64
    b = np.zeros(4 * n, np.float32)
    b[n : 2 * n] = args.forget_bias  # forget-gate block (0 by default, as in nnc)
    params = {
        "lstm": {"Wx": xavier(rng, 28, 4 * n), "Wh": xavier(rng, n, 4 * n), "b": b},
        "head": dense_init(rng, n, 10),
    }

    def apply(p, s, x, train):
        return dense(p["head"], lstm(p["lstm"], x)), s

    recipe = dict(opt=("rmsprop", 2e-3, 0.99, 1e-8), schedule=None, clip=1.0, epochs=8)
    return params, {}, apply, (28, 28), recipe


def row_attention(rng, args):
    d = 32
    ln = lambda: {"gamma": np.ones(d, np.float32), "beta": np.zeros(d, np.float32)}  # noqa: E731
    params = {
        "embed": dense_init(rng, 28, d),
        "pos": (rng.standard_normal((28, d)) * 0.02).astype(np.float32),
        "norm1": ln(),
        "attn": {k: dense_init(rng, d, d) for k in ("q", "k", "v", "o")},
        "norm2": ln(),
        "ff1": dense_init(rng, d, 64),
        "ff2": dense_init(rng, 64, d),
        "head": dense_init(rng, d, 10),
    }

    def apply(p, s, x, train):
        h = dense(p["embed"], x) + p["pos"]
        h = h + mha(p["attn"], layernorm(p["norm1"], h), heads=4)
        h = h + dense(p["ff2"], gelu(dense(p["ff1"], layernorm(p["norm2"], h))))
        return dense(p["head"], h.mean(axis=1)), s

    recipe = dict(opt=("adam", 2e-3, 0.9, 0.999, 1e-8), schedule=("cosine", 100), clip=None, epochs=8)
    return params, {}, apply, (28, 28), recipe


MODELS = {"mnist_cnn": mnist_cnn, "row_lstm": row_lstm, "row_attention": row_attention}


# ----------------------------------------------------------------------------- optimizers


def lr_at(t, base, schedule, total_steps):
    """The learning rate used at optimizer step t (0-based)."""
    if schedule is None:
        return base
    if schedule[0] == "step":
        _, every, gamma = schedule
        return base * gamma ** jnp.floor(t / every)
    if schedule[0] == "cosine":
        warm = schedule[1]
        w = base * (t + 1) / warm
        frac = (t - warm) / (total_steps - warm)
        c = base * 0.5 * (1 + jnp.cos(math.pi * frac))
        return jnp.where(t < warm, w, c)
    raise ValueError(schedule)


def opt_init(opt, params):
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
    if opt[0] == "nesterov":
        return {"b": zeros()}
    if opt[0] == "rmsprop":
        return {"v": zeros()}
    if opt[0] == "adam":
        return {"m": zeros(), "v": zeros()}
    raise ValueError(opt)


def opt_update(opt, params, grads, ost, lr, t):
    """One step with PyTorch conventions; t is the 0-based step count."""
    tm = jax.tree_util.tree_map
    if opt[0] == "nesterov":  # b = mu b + g; w -= lr (g + mu b)
        mu = opt[2]
        b = tm(lambda b, g: mu * b + g, ost["b"], grads)
        params = tm(lambda w, g, b: w - lr * (g + mu * b), params, grads, b)
        return params, {"b": b}
    if opt[0] == "rmsprop":  # v = beta v + (1-beta) g^2; w -= lr g / (sqrt v + eps)
        _, _, beta, eps = opt
        v = tm(lambda v, g: beta * v + (1 - beta) * g * g, ost["v"], grads)
        params = tm(lambda w, g, v: w - lr * g / (jnp.sqrt(v) + eps), params, grads, v)
        return params, {"v": v}
    if opt[0] == "adam":  # bias-corrected, eps added to sqrt(v_hat)
        _, _, b1, b2, eps = opt
        m = tm(lambda m, g: b1 * m + (1 - b1) * g, ost["m"], grads)
        v = tm(lambda v, g: b2 * v + (1 - b2) * g * g, ost["v"], grads)
        k = t + 1.0
        c1, c2 = 1 - b1**k, 1 - b2**k
        params = tm(lambda w, m, v: w - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, m, v)
        return params, {"m": m, "v": v}
    raise ValueError(opt)


def clip_by_global_norm(grads, max_norm):
    """Scale every gradient by min(1, max_norm / global L2 norm)."""
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
    scale = jnp.minimum(1.0, max_norm / norm)
    return jax.tree_util.tree_map(lambda g: g * scale, grads)


# ----------------------------------------------------------------------------- training


def run(name, seed, args, x_all, y_all):
    rng = np.random.default_rng(seed)
    train_idx, test_idx = stratified_split(y_all, 0.8, rng)
    params, state, apply, xshape, recipe = MODELS[name](rng, args)
    epochs = args.epochs or recipe["epochs"]
    steps_per_epoch = len(train_idx) // BATCH
    assert steps_per_epoch * BATCH == len(train_idx), "expected only full batches"
    total = epochs * steps_per_epoch
    opt, sched, clip = recipe["opt"], recipe["schedule"], recipe["clip"]
    if args.lr is not None:  # diagnostic override of the base learning rate
        opt = (opt[0], args.lr) + tuple(opt[2:])

    params = jax.tree_util.tree_map(jnp.asarray, params)
    state = jax.tree_util.tree_map(jnp.asarray, state)
    ost = opt_init(opt, params)

    def loss_fn(p, s, x, y):
        logits, s = apply(p, s, x, True)
        return cross_entropy(logits, y), (s, jnp.mean(jnp.argmax(logits, -1) == y))

    def step(carry, batch):
        p, s, o, t = carry
        x, y = batch
        (loss, (s, acc)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        if clip is not None:
            g = clip_by_global_norm(g, clip)
        lr = lr_at(t, opt[1], sched, total)
        p, o = opt_update(opt, p, g, o, lr, t.astype(jnp.float32))
        return (p, s, o, t + 1), (loss, acc)

    @jax.jit
    def epoch(p, s, o, t, xb, yb):  # one epoch = scan over [steps, B, ...] batches
        (p, s, o, t), (losses, accs) = lax.scan(step, (p, s, o, t), (xb, yb))
        return p, s, o, t, losses, accs.mean()

    @jax.jit
    def evaluate(p, s, x, y):
        logits, _ = apply(p, s, x, False)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    x_tr, y_tr = x_all[train_idx].reshape(-1, *xshape), y_all[train_idx]
    x_te, y_te = jnp.asarray(x_all[test_idx].reshape(-1, *xshape)), jnp.asarray(y_all[test_idx])

    t0 = time.time()
    t = jnp.asarray(0, jnp.int32)
    history = []
    for e in range(epochs):
        order = rng.permutation(len(train_idx))
        xb = x_tr[order].reshape(steps_per_epoch, BATCH, *xshape)
        yb = y_tr[order].reshape(steps_per_epoch, BATCH)
        params, state, ost, t, losses, acc = epoch(params, state, ost, t, xb, yb)
        loss = float(losses.mean())
        test_acc = float(evaluate(params, state, x_te, y_te))
        history.append((loss, float(acc), test_acc, np.asarray(losses)))
        if args.verbose:
            print(f"  {name} seed {seed} epoch {e + 1}: loss {float(loss):.4f} "
                  f"train {float(acc):.4f} test {test_acc:.4f}", flush=True)
    wall = time.time() - t0
    _, train_acc, test_acc, _ = history[-1]
    return dict(test_acc=test_acc, train_acc=train_acc, wall=wall, history=history,
                params=params, state=state, apply=apply, xshape=xshape,
                train_idx=train_idx, test_idx=test_idx)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", metavar="model", help=f"any of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs "
                    "(the cosine schedule stretches over the longer run)")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's base "
                    "learning rate (diagnostics only)")
    ap.add_argument("--forget-bias", type=float, default=0.0, help="row_lstm forget-gate bias init")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every epoch")
    args = ap.parse_args()
    args.models = args.models or list(MODELS)
    for m in args.models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")

    x_all, y_all = load_mnist()
    for name in args.models:
        tag = name + (f" forget_bias={args.forget_bias}" if name == "row_lstm" and args.forget_bias else "")
        tag += f" epochs={args.epochs}" if args.epochs else ""
        tag += f" lr={args.lr}" if args.lr is not None else ""
        results = []
        for seed in args.seeds:
            r = run(name, seed, args, x_all, y_all)
            test_acc, train_acc, wall = r["test_acc"], r["train_acc"], r["wall"]
            results.append((test_acc, train_acc, wall))
            print(f"{tag} seed {seed}: test {test_acc * 100:.2f}%  train(last epoch) "
                  f"{train_acc * 100:.2f}%  wall {wall:.1f}s", flush=True)
        te, tr, wt = (np.mean([r[i] for r in results]) for i in range(3))
        print(f"{tag} MEAN over seeds {args.seeds}: test {te * 100:.2f}%  "
              f"train {tr * 100:.2f}%  wall {wt:.1f}s/run", flush=True)


if __name__ == "__main__":
    main()
