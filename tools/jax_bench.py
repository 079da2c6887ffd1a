"""The MLP workload of BENCHMARKS.md in JAX, for a same-run comparison with `nnc bench`.

784-512-256-10, ReLU, softmax cross-entropy, Adam (lr 1e-3), batch 128, f32, jit.
Threads: pass 1 or 2 (XLA's CPU thread pool is capped through XLA_FLAGS).
Run: python3 tools/jax_bench.py 1
"""
import os
import sys
import time

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

rng = np.random.default_rng(0)
sizes = [784, 512, 256, 10]
params = []
for a, b in zip(sizes, sizes[1:]):
    lim = np.sqrt(6 / (a + b))
    params.append((jnp.asarray(rng.uniform(-lim, lim, (a, b)), jnp.float32), jnp.zeros(b, jnp.float32)))
x = jnp.asarray(rng.standard_normal((128, 784)), jnp.float32)
y = jnp.asarray(rng.integers(0, 10, 128), jnp.int32)


def loss(ps, x, y):
    h = x
    for i, (w, b) in enumerate(ps):
        h = h @ w + b
        if i < len(ps) - 1:
            h = jax.nn.relu(h)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), y[:, None], 1))


def adam(ps, m, v, g, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
    ps = jax.tree.map(lambda p, m, v: p - lr / (1 - b1**t) * m / (jnp.sqrt(v) / jnp.sqrt(1 - b2**t) + eps), ps, m, v)
    return ps, m, v


@jax.jit
def step(ps, m, v, t, x, y):
    l, g = jax.value_and_grad(loss)(ps, x, y)
    ps, m, v = adam(ps, m, v, g, t)
    return ps, m, v, l


m = jax.tree.map(jnp.zeros_like, params)
v = jax.tree.map(jnp.zeros_like, params)
t0 = time.perf_counter()
out = step(params, m, v, 1.0, x, y)
jax.block_until_ready(out)
print(f"jax compile + first step: {(time.perf_counter() - t0) * 1e3:.0f} ms")
ps, m, v = params, m, v
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
print(f"jax {threads}T step: median {times[len(times) // 2]:.3f} ms, min {times[0]:.3f} ms")
