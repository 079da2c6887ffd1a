"""The workloads of benches/workloads/ in JAX, for a same-run comparison with `nnc bench`.

mlp:  784-512-256-10, ReLU, softmax cross-entropy, Adam (lr 1e-3), batch 128.
cnn:  conv3x3(8)-relu-pool2-conv3x3(16)-relu-pool2-dense10, SGD momentum, batch 64.
lstm: LSTM 32->128, T=20, last h -> dense 10, cross-entropy, Adam, batch 32.
All f32 and jit-compiled, the same layers as benches/workloads/*.nn.
Threads: 1 or 2 (XLA's CPU thread pool is capped through XLA_FLAGS).
Run: python3 tools/jax_bench.py 1 [mlp|cnn|lstm]
"""
import os
import sys
import time

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
workload = sys.argv[2] if len(sys.argv) > 2 else "mlp"
os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

rng = np.random.default_rng(0)


def glorot(shape, fan_in, fan_out):
    lim = np.sqrt(6 / (fan_in + fan_out))
    return jnp.asarray(rng.uniform(-lim, lim, shape), jnp.float32)


def xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def mlp():
    sizes = [784, 512, 256, 10]
    ps = [(glorot((a, b), a, b), jnp.zeros(b, jnp.float32)) for a, b in zip(sizes, sizes[1:])]

    def loss(ps, x, y):
        h = x
        for i, (w, b) in enumerate(ps):
            h = h @ w + b
            if i < len(ps) - 1:
                h = jax.nn.relu(h)
        return xent(h, y)

    x = jnp.asarray(rng.standard_normal((128, 784)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 128), jnp.int32)
    return ps, loss, x, y, "adam"


def cnn():
    def conv(x, w, b):
        dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NCHW", "OIHW", "NCHW"))
        y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        return y + b[None, :, None, None]

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    ps = [
        (glorot((8, 1, 3, 3), 9, 72), jnp.zeros(8, jnp.float32)),
        (glorot((16, 8, 3, 3), 72, 144), jnp.zeros(16, jnp.float32)),
        (glorot((784, 10), 784, 10), jnp.zeros(10, jnp.float32)),
    ]

    def loss(ps, x, y):
        h = pool(jax.nn.relu(conv(x, *ps[0])))
        h = pool(jax.nn.relu(conv(h, *ps[1])))
        return xent(h.reshape(h.shape[0], -1) @ ps[2][0] + ps[2][1], y)

    x = jnp.asarray(rng.standard_normal((64, 1, 28, 28)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 64), jnp.int32)
    return ps, loss, x, y, "momentum"


def lstm():
    n_in, n = 32, 128
    ps = [
        (glorot((n_in, 4 * n), n_in, 4 * n), glorot((n, 4 * n), n, 4 * n), jnp.zeros(4 * n, jnp.float32)),
        (glorot((n, 10), n, 10), jnp.zeros(10, jnp.float32)),
    ]

    def loss(ps, x, y):
        (wx, wh, b), (wo, bo) = ps
        xw = jnp.swapaxes(x, 0, 1) @ wx + b  # [T, N, 4n]

        def cell(carry, z):
            h, c = carry
            z = z + h @ wh
            i, f, g, o = jax.nn.sigmoid(z[:, :n]), jax.nn.sigmoid(z[:, n:2 * n]), jnp.tanh(z[:, 2 * n:3 * n]), jax.nn.sigmoid(z[:, 3 * n:])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((x.shape[0], n), jnp.float32)
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), xw)
        return xent(h @ wo + bo, y)

    x = jnp.asarray(rng.standard_normal((32, 20, n_in)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 32), jnp.int32)
    return ps, loss, x, y, "adam"


params, loss, x, y, opt = {"mlp": mlp, "cnn": cnn, "lstm": lstm}[workload]()


def update(ps, m, v, g, t):
    if opt == "momentum":
        # SGD with momentum 0.9, lr 0.01 (the CNN workload's optimizer).
        m = jax.tree.map(lambda m, g: 0.9 * m + g, m, g)
        return jax.tree.map(lambda p, m: p - 0.01 * m, ps, m), m, v
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-3
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
    ps = jax.tree.map(lambda p, m, v: p - lr / (1 - b1**t) * m / (jnp.sqrt(v) / jnp.sqrt(1 - b2**t) + eps), ps, m, v)
    return ps, m, v


@jax.jit
def step(ps, m, v, t, x, y):
    l, g = jax.value_and_grad(loss)(ps, x, y)
    ps, m, v = update(ps, m, v, g, t)
    return ps, m, v, l


m = jax.tree.map(jnp.zeros_like, params)
v = jax.tree.map(jnp.zeros_like, params)
t0 = time.perf_counter()
out = step(params, m, v, 1.0, x, y)
jax.block_until_ready(out)
print(f"jax compile + first step: {(time.perf_counter() - t0) * 1e3:.0f} ms")
ps = params
for i in range(10):
    ps, m, v, l = step(ps, m, v, float(i + 2), x, y)
jax.block_until_ready(l)
times = []
for i in range(200):
    t = time.perf_counter()
    ps, m, v, l = step(ps, m, v, float(i + 12), x, y)
    jax.block_until_ready(l)
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(f"jax {workload} {threads}T step: median {times[len(times) // 2]:.3f} ms, min {times[0]:.3f} ms")
