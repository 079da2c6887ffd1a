"""Writes PyTorch state dicts (safetensors) and PyTorch's outputs on fixed inputs, for
tests/deploy.rs: `nnc predict --torch` must give the same outputs.

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch safetensors numpy
    /tmp/tv/bin/python tools/torch_state_dict.py tests/data/torch

Models: the MLP of examples/digits.nn (Linear 64-128, relu, Linear 128-10) and the
LSTM + GRU model of tests/data/torch/rnn.nn.
"""
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/torch"
torch.manual_seed(0)


class Digits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Rnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 4, batch_first=True)
        self.gru = torch.nn.GRU(3, 4, batch_first=True)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        _, g = self.gru(x)
        return self.fc(torch.cat([h[-1], g[-1]], dim=1))


for name, model, x in [
    ("digits", Digits(), torch.rand(6, 64) * 16),
    ("rnn", Rnn(), torch.randn(4, 5, 3)),
]:
    model.eval()
    with torch.no_grad():
        y = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/{name}_state_dict.safetensors")
    save_file({"x": x.contiguous(), "y": y.contiguous()}, f"{out}/{name}_io.safetensors")
    print(name, list(model.state_dict().keys()))
