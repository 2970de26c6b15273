"""ODE-Net against ResNet and RK-Net on handwritten digits (Chen et al. 2018, section 3).

Three classifiers share a convolutional stem and a linear head and differ in the middle:
six residual blocks (ResNet); one continuous-depth block solved by fixed-step RK4 and trained by
backpropagating through the solver's operations (RK-Net); the same block solved adaptively
(dopri5) and trained with the adjoint method (ODE-Net). Prints test error, parameter count,
memory held for the backward pass per mini-batch (what autograd saves), NFE and time.

Data: scikit-learn's bundled 8x8 digits (1797 images, no download), 80/20 split. With
``--mnist PATH`` (a folder holding the four original MNIST ``*-ubyte.gz`` files) it trains on
MNIST's 28x28 images instead.

    python examples/odenet_digits.py --help
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentode.nn import ODEBlock
from latentode.profiling import SavedTensors


def norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(32, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class TimeConv(nn.Module):
    """A 3x3 convolution that also sees time, as an extra constant channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([tt, x], 1))


class ODEFunc(nn.Module):
    """The residual block's body as a vector field f(t, h)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.conv1 = norm(channels), TimeConv(channels)
        self.norm2, self.conv2 = norm(channels), TimeConv(channels)
        self.norm3 = norm(channels)

    def forward(self, t, x):
        x = self.conv1(t, torch.relu(self.norm1(x)))
        x = self.conv2(t, torch.relu(self.norm2(x)))
        return self.norm3(x)


def build(kind: str, channels: int, size: int) -> nn.Module:
    if size >= 28:  # MNIST: downsample 28 -> 7 as in the paper
        stem = nn.Sequential(
            nn.Conv2d(1, channels, 3),
            norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 4, 2, 1),
            norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 4, 2, 1),
        )
    else:
        stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), norm(channels), nn.ReLU())
    if kind == "resnet":
        middle = nn.Sequential(*[ResBlock(channels) for _ in range(6)])
    elif kind == "rknet":
        middle = ODEBlock(ODEFunc(channels), method="rk4", options={"step_size": 0.25})
    else:
        middle = ODEBlock(ODEFunc(channels), rtol=1e-3, atol=1e-3, adjoint=True)
    head = nn.Sequential(
        norm(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)
    )
    return nn.Sequential(stem, middle, head)


def load_digits_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    return train_test_split(
        x, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )


def load_mnist(folder: str):
    root = Path(folder)

    def read(name, offset):
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"--mnist: {path} not found; put the four MNIST files there.")
        with gzip.open(path) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    x_tr = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) / np.float32(255)
    x_te = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) / np.float32(255)
    y_tr = read("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    y_te = read("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return x_tr.astype(np.float32), x_te.astype(np.float32), y_tr, y_te


def nfe_of(model):
    blocks = [m for m in model.modules() if isinstance(m, ODEBlock)]
    return blocks[0] if blocks else None


def train_and_test(kind, data, *, channels, epochs, batch_size, lr, seed):
    x_tr, x_te, y_tr, y_te = (torch.as_tensor(a) for a in data)
    torch.manual_seed(seed)
    model = build(kind, channels, x_tr.shape[-1])
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    block = nfe_of(model)
    saved_mib, start = 0.0, time.perf_counter()
    nfe_f = nfe_b = steps = 0
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(batch_size):
            if block is not None:
                block.reset_nfe()
            opt.zero_grad()
            with SavedTensors() as saved:
                loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            saved_mib = max(saved_mib, saved.mib)
            loss.backward()
            opt.step()
            if block is not None:
                nfe_f += block.nfe["forward"]
                nfe_b += block.nfe["backward"]
            steps += 1
        sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in x_te.split(500)])
    error = float((pred != y_te).float().mean())
    return {
        "model": kind,
        "test_error": error,
        "parameters": params,
        "saved_for_backward_mib": saved_mib,
        "nfe_forward_per_step": nfe_f / steps if block else None,
        "nfe_backward_per_step": nfe_b / steps if block else None,
        "train_seconds": seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["resnet", "rknet", "odenet"],
        choices=["resnet", "rknet", "odenet"],
    )
    parser.add_argument("--mnist", help="folder with the MNIST *-ubyte.gz files")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_mnist(args.mnist) if args.mnist else load_digits_data(args.seed)
    print(
        f"{'MNIST' if args.mnist else 'digits 8x8'}: {len(data[0])} training, "
        f"{len(data[1])} test images"
    )
    results = []
    print(
        f"{'model':8} {'test error':>10} {'params':>8} {'saved MiB':>9} {'NFE f/b':>11} {'time':>7}"
    )
    for kind in args.models:
        r = train_and_test(
            kind,
            data,
            channels=args.channels,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
        )
        nfe = (
            f"{r['nfe_forward_per_step']:.0f}/{r['nfe_backward_per_step']:.0f}"
            if r["nfe_forward_per_step"] is not None
            else "-"
        )
        print(
            f"{kind:8} {r['test_error']:>10.2%} {r['parameters']:>8,} "
            f"{r['saved_for_backward_mib']:>9.2f} {nfe:>11} {r['train_seconds']:>6.0f}s"
        )
        results.append(r)
    if args.output:
        config = {k: v for k, v in vars(args).items() if k != "output"}
        Path(args.output).write_text(json.dumps({"config": config, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
