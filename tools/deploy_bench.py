"""Inference timings of the peers, for tools/deploy_bench.sh (one measurement per call).

    python deploy_bench.py RUNTIME MODEL BATCH THREADS SECONDS [ONNX]

RUNTIME: `export` (writes the PyTorch model as ONNX to the path ONNX, for onnxruntime
on PyTorch's own graph: native Conv and MaxPool), `torch` (PyTorch eager under torch.inference_mode, the model defined below with
the same layers as the nnc example), `ort` (onnxruntime on ONNX, default graph
optimizations). MODEL: digits or mnist_cnn (examples/), or mlp, cnn or lstm
(benches/workloads/; the LSTM as `nn.LSTM`, exported as ONNX's LSTM op). Prints one line:
`<runtime> batch <B>: <us> us per call (median of <R> rounds of <n>), <rows/s> rows/s`,
timed the way tools/build_bench.c times a built library (rounds of about 10 ms, median).
"""
import sys
import time

import numpy as np

runtime, model, batch, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
onnx_path = sys.argv[6] if len(sys.argv) > 6 else None
shape = {"digits": (batch, 64), "mnist_cnn": (batch, 1, 28, 28), "mlp": (batch, 784), "cnn": (batch, 1, 28, 28),
         "lstm": (batch, 20, 32)}[model]
x = np.random.default_rng(42).uniform(-1, 1, size=shape).astype(np.float32)


def torch_model(name):
    import torch

    nn = torch.nn
    if name == "digits":  # examples/digits.nn: Dense(64, 128), relu, (dropout), Dense(128, 10)
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    if name in ("mlp", "cnn", "lstm"):  # benches/workloads/<name>.nn, as in tools/torch_bench.py
        from torch_bench import workload_model

        return workload_model(name)
    # examples/mnist_cnn.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )


if runtime == "export":
    import torch

    m = torch_model(model).eval()
    torch.onnx.export(m, (torch.from_numpy(x),), onnx_path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    sys.exit(0)
if runtime == "torch":
    import torch

    torch.set_num_threads(threads)
    m = torch_model(model).eval()
    xt = torch.from_numpy(x)

    def call():
        with torch.inference_mode():
            m(xt)
elif runtime == "ort":
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feed = {name: x}

    def call():
        sess.run(None, feed)
else:
    sys.exit(f"unknown runtime {runtime}")

for _ in range(20):
    call()
per = 1
while True:
    a = time.perf_counter()
    for _ in range(per):
        call()
    if time.perf_counter() - a > 0.01 or per > 1_000_000:
        break
    per *= 2
times = []
t0 = time.perf_counter()
while time.perf_counter() - t0 < seconds or len(times) < 5:
    a = time.perf_counter()
    for _ in range(per):
        call()
    times.append((time.perf_counter() - a) / per)
times.sort()
med = times[len(times) // 2]
print(f"{runtime} batch {batch}: {med * 1e6:.2f} us per call (median of {len(times)} rounds of {per}), {batch / med:.0f} rows/s")
