"""Float64 reference gradients from JAX for the models in tests/data/reference/.

Each model is written again here in plain JAX with nnc's layouts (the language draft section
10). For each, random parameters and inputs are drawn, JAX computes the loss and the
gradient of every parameter in float64, and everything is written to
tests/data/reference/<name>.safetensors: parameters and states by their nnc names,
inputs by their input names, `loss`, and `grad.<param>`. The Rust test
`tests/reference.rs` runs `nnc`'s autodiff on the same .nn file and tensors and must
agree.

Run (needs `pip install jax numpy safetensors`):  python3 tools/jax_reference.py
"""

import os

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "reference")
rng = np.random.default_rng(0)
B = 3


def normal(*shape, scale=0.5):
    return rng.standard_normal(shape) * scale


def labels(n, classes):
    return rng.integers(0, classes, size=n).astype(np.int32)


def dense(p, name, x):
    return x @ p[name + ".W"] + p[name + ".b"]


def dense_params(p, name, n_in, n_out):
    p[name + ".W"] = normal(n_in, n_out)
    p[name + ".b"] = normal(n_out, scale=0.1)


def log_softmax(z, axis=-1):
    z = z - lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))


def softmax(z, axis=-1):
    return jnp.exp(log_softmax(z, axis))


def cross_entropy(z, y):
    return -jnp.mean(jnp.sum(jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype) * log_softmax(z), axis=-1))


def sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def mlp():
    p = {}
    dense_params(p, "fc1", 6, 8)
    dense_params(p, "fc2", 8, 3)
    inputs = {"x": normal(B, 6, scale=1.0), "y": labels(B, 3)}

    def loss(p):
        z = dense(p, "fc2", jnp.tanh(dense(p, "fc1", inputs["x"])))
        return cross_entropy(z, inputs["y"]) + 0.01 * 0.5 * jnp.sum(p["fc1.W"] ** 2)

    return p, {}, inputs, loss


def conv(x, w, b, stride, pad):
    y = lax.conv_general_dilated(
        x, w, (stride, stride), [(pad, pad), (pad, pad)], dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    return y + b.reshape(1, -1, 1, 1)


def cnn():
    p = {
        "c1.W": normal(3, 1, 3, 3),
        "c1.b": normal(3, scale=0.1),
        "bn.gamma": 1.0 + normal(3, scale=0.1),
        "bn.beta": normal(3, scale=0.1),
        "c2.W": normal(4, 3, 3, 3),
        "c2.b": normal(4, scale=0.1),
    }
    dense_params(p, "fc", 4, 3)
    states = {"bn.mean": np.zeros(3), "bn.var": np.ones(3)}
    inputs = {"x": normal(B, 1, 6, 6, scale=1.0), "y": labels(B, 3)}

    def loss(p):
        h = conv(inputs["x"], p["c1.W"], p["c1.b"], 1, 1)
        mu = jnp.mean(h, axis=(0, 2, 3), keepdims=True)
        var = jnp.mean((h - mu) ** 2, axis=(0, 2, 3), keepdims=True)
        h = (h - mu) / jnp.sqrt(var + 1e-5) * p["bn.gamma"].reshape(1, -1, 1, 1) + p["bn.beta"].reshape(1, -1, 1, 1)
        h = jnp.maximum(h, 0.0)
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        h = jnp.maximum(conv(h, p["c2.W"], p["c2.b"], 2, 0), 0.0)
        return cross_entropy(dense(p, "fc", h.reshape(B, -1)), inputs["y"])

    return p, states, inputs, loss


def lstm():
    n = 4
    p = {"rnn.Wx": normal(3, 4 * n), "rnn.Wh": normal(n, 4 * n), "rnn.b": normal(4 * n, scale=0.1)}
    dense_params(p, "head", n, 3)
    inputs = {"x": normal(B, 5, 3, scale=1.0), "y": labels(B, 3)}

    def loss(p):
        x = inputs["x"]
        h = jnp.zeros((B, n))
        c = jnp.zeros((B, n))
        for t in range(5):
            z = x[:, t, :] @ p["rnn.Wx"] + p["rnn.b"] + h @ p["rnn.Wh"]
            i, f, g, o = sigmoid(z[:, :n]), sigmoid(z[:, n : 2 * n]), jnp.tanh(z[:, 2 * n : 3 * n]), sigmoid(z[:, 3 * n :])
            c = f * c + i * g
            h = o * jnp.tanh(c)
        return cross_entropy(dense(p, "head", h), inputs["y"])

    return p, {}, inputs, loss


def gru():
    n = 4
    p = {
        "rnn.Wx": normal(3, 3 * n),
        "rnn.Wh": normal(n, 3 * n),
        "rnn.bx": normal(3 * n, scale=0.1),
        "rnn.bh": normal(3 * n, scale=0.1),
        "plain.Wx": normal(3, n),
        "plain.Wh": normal(n, n),
        "plain.b": normal(n, scale=0.1),
    }
    inputs = {"x": normal(B, 5, 3, scale=1.0), "t": normal(B, 5, n, scale=1.0)}

    def loss(p):
        x = inputs["x"]
        h = jnp.zeros((B, n))
        hs = []
        for t in range(5):
            a = x[:, t, :] @ p["rnn.Wx"] + p["rnn.bx"]
            u = h @ p["rnn.Wh"] + p["rnn.bh"]
            r = sigmoid(a[:, :n] + u[:, :n])
            z = sigmoid(a[:, n : 2 * n] + u[:, n : 2 * n])
            c = jnp.tanh(a[:, 2 * n :] + r * u[:, 2 * n :])
            h = (1 - z) * c + z * h
            hs.append(h)
        seq = jnp.stack(hs, axis=1)
        g = jnp.zeros((B, n))
        for t in range(5):
            g = jnp.tanh(x[:, t, :] @ p["plain.Wx"] + p["plain.b"] + g @ p["plain.Wh"])
        return jnp.mean((seq - inputs["t"]) ** 2) + jnp.mean(g)

    return p, {}, inputs, loss


def attention():
    d, heads, T = 8, 2, 4
    p = {"norm.gamma": 1.0 + normal(d, scale=0.1), "norm.beta": normal(d, scale=0.1)}
    dense_params(p, "embed", 6, d)
    for w in "qkvo":
        p["attn.W" + w] = normal(d, d)
        p["attn.b" + w] = normal(d, scale=0.1)
    dense_params(p, "head", d, 3)
    inputs = {"x": normal(B, T, 6, scale=1.0), "y": labels(B, 3)}

    def loss(p):
        h = dense(p, "embed", inputs["x"])
        mu = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean((h - mu) ** 2, axis=-1, keepdims=True)
        hn = (h - mu) / jnp.sqrt(var + 1e-5) * p["norm.gamma"] + p["norm.beta"]

        def split(t):
            return t.reshape(B, T, heads, d // heads).transpose(0, 2, 1, 3)

        q = split(hn @ p["attn.Wq"] + p["attn.bq"])
        k = split(hn @ p["attn.Wk"] + p["attn.bk"])
        v = split(hn @ p["attn.Wv"] + p["attn.bv"])
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
        mask = np.arange(T).reshape(T, 1) >= np.arange(T)
        s = jnp.where(mask, s, -1e9)
        o = (softmax(s) @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
        h = h + o @ p["attn.Wo"] + p["attn.bo"]
        g = jax.nn.gelu(h, approximate=False)
        return cross_entropy(dense(p, "head", jnp.mean(g, axis=1)), inputs["y"])

    return p, {}, inputs, loss


def losses():
    p = {}
    dense_params(p, "fc", 4, 3)
    inputs = {"x": normal(B, 4, scale=1.0), "y": labels(B, 3), "t": rng.uniform(0, 1, size=(B, 3))}

    def loss(p):
        z = dense(p, "fc", inputs["x"])
        y, t = inputs["y"], inputs["t"]
        truth = jax.nn.one_hot(y, 3, dtype=z.dtype)
        sy = jnp.sum(z * truth, axis=-1, keepdims=True)
        hinge = jnp.mean(jnp.sum(jnp.maximum(z - sy + 1.0, 0.0) * (1 - truth), axis=-1))
        bce = jnp.mean(jnp.maximum(z, 0) - z * t + jnp.log(1 + jnp.exp(-jnp.abs(z))))
        T = 2.0
        lp, lq = log_softmax(t / T), log_softmax(z / T)
        kl = T * T * jnp.mean(jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1))
        l1 = jnp.sum(jnp.abs(p["fc.W"]))
        softplus = jnp.maximum(z, 0) + jnp.log(1 + jnp.exp(-jnp.abs(z)))
        elu = jnp.where(z > 0, z, jnp.exp(jnp.minimum(z, 0)) - 1)
        leaky = jnp.where(z > 0, z, 0.01 * z)
        softsign = z / (1 + jnp.abs(z))
        hardtanh = jnp.clip(z, -1, 1)
        swish = z * sigmoid(z)
        gelu_tanh = 0.5 * z * (1 + jnp.tanh(0.7978845608028654 * (z + 0.044715 * z**3)))
        acts = softplus + elu + leaky + softsign + hardtanh + swish + sigmoid(z) * gelu_tanh
        return hinge + bce + kl + 0.1 * l1 + jnp.mean(acts)

    return p, {}, inputs, loss


def additive():
    """sin, cos, a reversed slice and Bahdanau attention (AdditiveAttention)."""
    p = {"att.W": normal(4, 6), "att.U": normal(3, 6), "att.v": normal(6)}
    dense_params(p, "head", 3, 3)
    inputs = {"x": normal(B, 5, 3, scale=1.0), "q": normal(B, 4, scale=1.0), "y": labels(B, 3)}

    def loss(p):
        k = jnp.sin(2 * inputs["x"]) + jnp.cos(inputs["x"][:, ::-1, :])
        s = jnp.tanh((inputs["q"] @ p["att.W"])[:, None, :] + k @ p["att.U"]) @ p["att.v"]
        alpha = softmax(s, axis=-1)
        ctx = jnp.sum(alpha[:, :, None] * k, axis=1)
        return cross_entropy(dense(p, "head", ctx), inputs["y"])

    return p, {}, inputs, loss


def main():
    for name, make in [("mlp", mlp), ("cnn", cnn), ("lstm", lstm), ("gru", gru), ("attention", attention), ("losses", losses),
                       ("additive", additive)]:
        params, states, inputs, loss = make()
        params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        value, grads = jax.value_and_grad(loss)(params)
        out = {}
        out.update(params)
        out.update({k: np.asarray(v, dtype=np.float64) for k, v in states.items()})
        for k, v in inputs.items():
            out[k] = np.asarray(v, dtype=np.int32 if v.dtype.kind == "i" else np.float64)
        out["loss"] = np.asarray(value, dtype=np.float64)
        for k, v in grads.items():
            out["grad." + k] = np.asarray(v, dtype=np.float64)
        path = os.path.join(OUT, name + ".safetensors")
        save_file(out, path, metadata={"source": "tools/jax_reference.py", "jax": jax.__version__})
        print(f"{name}: loss {float(value):.12f} -> {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
