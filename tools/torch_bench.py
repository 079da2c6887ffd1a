"""The workloads of benches/workloads/ in PyTorch, for a same-run comparison with `nnc bench`.

mlp:  784-512-256-10, ReLU, softmax cross-entropy, Adam (lr 1e-3, fused), batch 128.
cnn:  conv3x3(8)-relu-pool2-conv3x3(16)-relu-pool2-dense10, SGD momentum 0.9 (lr 0.01), batch 64.
lstm: LSTM 32->128, T=20, last h -> dense 10, cross-entropy, Adam (fused), batch 32.
All f32, the same layers as benches/workloads/*.nn (and tools/jax_bench.py).
Run: python3 tools/torch_bench.py THREADS WORKLOAD [eager|compile]
Prints `torch-<mode> <workload> <T>T step: median X ms, min Y ms` over 200 timed steps
after 10 warm-up steps (torch.compile: after its compilation, which is printed).
"""
import sys
import time

import torch

nn = torch.nn


class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(32, 128, batch_first=True)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


def workload_model(workload):
    """The PyTorch module of a workload of benches/workloads/ (also used by tools/deploy_bench.py)."""
    if workload == "mlp":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    if workload == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
        )
    return Lstm()


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    workload = sys.argv[2] if len(sys.argv) > 2 else "mlp"
    mode = sys.argv[3] if len(sys.argv) > 3 else "eager"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = workload_model(workload)
    if workload == "mlp":
        x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    elif workload == "cnn":
        x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    else:
        x, y = torch.randn(32, 20, 32), torch.randint(0, 10, (32,))

    if workload == "cnn":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if mode == "compile":
        step = torch.compile(step)
        t0 = time.perf_counter()
        step()
        print(f"torch.compile + first step: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    for _ in range(10):
        step()
    times = []
    for _ in range(200):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(f"torch-{mode} {workload} {threads}T step: median {times[len(times) // 2]:.3f} ms, min {times[0]:.3f} ms")


if __name__ == "__main__":
    main()
