"""Continuous normalizing flow against a planar flow on 2-D densities (Chen et al. 2018, sec. 4).

Both flows transform a standard normal and are fitted by maximum likelihood on fresh samples
from scikit-learn's two moons and two circles; the script prints the negative log-likelihood
of held-out samples (nats per point, lower is better) and draws, for each data set, the data,
each flow's density and samples from the CNF, in the manner of the paper's Figures 4 and 5.
The two flows have about the same number of parameters: a CNF whose dynamics MLP has 32 hidden
units, and 256 planar layers (Pyro's ``Planar``, 5 parameters each). Planar layers have no
closed-form inverse, so that flow runs in the normalizing direction (data to noise), which
gives its exact density but no samples; the CNF is inverted by solving backwards in time and
gives both.

    python examples/cnf_density.py --help
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.distributions.transforms import Planar  # noqa: E402
from sklearn.datasets import make_circles, make_moons  # noqa: E402
from torch import nn  # noqa: E402

from latentode.flows import CNF, CNFDynamics  # noqa: E402

DATASETS = {
    "moons": lambda n, rng: make_moons(n, noise=0.05, random_state=rng)[0],
    "circles": lambda n, rng: make_circles(n, factor=0.5, noise=0.05, random_state=rng)[0],
}


def sampler(name: str, seed: int):
    """Standardised draws from a data set; each call a fresh sample."""
    rng = np.random.RandomState(seed)
    ref = DATASETS[name](20000, rng)
    mean, std = ref.mean(0), ref.std()

    def draw(n):
        return torch.as_tensor((DATASETS[name](n, rng) - mean) / std, dtype=torch.float32)

    return draw


class PlanarDensity(nn.Module):
    """A stack of planar layers in the normalizing direction, data -> standard normal.

    Planar layers have no closed-form inverse, so for maximum likelihood they map data to
    noise, ``log p(x) = log N(T(x)) + log |det dT/dx|``; the density is exact, but the model
    cannot be sampled.
    """

    def __init__(self, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Planar(2) for _ in range(n_layers))
        self.base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)

    def log_prob(self, x):
        log_det = torch.zeros(x.shape[:-1])
        for layer in self.layers:
            y = layer(x)
            log_det = log_det + layer.log_abs_det_jacobian(x, y)
            x = y
        return self.base.log_prob(x) + log_det


def make_flow(kind: str, hidden: int, n_planar: int):
    if kind == "planar":
        flow = PlanarDensity(n_planar)
        return flow, flow
    cnf = CNF(2, CNFDynamics(2, hidden), rtol=1e-4, atol=1e-4)
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    return dist.TransformedDistribution(base, [cnf]), cnf


def fit(kind, draw, *, iterations, batch, lr, hidden, n_planar, seed):
    torch.manual_seed(seed)
    flow, module = make_flow(kind, hidden, n_planar)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    start = time.perf_counter()
    for _ in range(iterations):
        opt.zero_grad()
        loss = -flow.log_prob(draw(batch)).mean()
        loss.backward()
        opt.step()
        sched.step()
    return flow, module, time.perf_counter() - start


def held_out_nll(flow, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(-torch.cat([flow.log_prob(c) for c in x.split(2500)]).mean())


def density_grid(flow, lim=2.6, n=120):
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        logp = flow.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1))
    return logp.exp().reshape(n, n).numpy(), lim


def _config(args) -> dict:
    """The run's settings, without the file paths of the machine it ran on."""
    return {k: v for k, v in vars(args).items() if k not in ("output", "json", "path")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--hidden", type=int, default=32, help="CNF dynamics width")
    parser.add_argument("--planar-layers", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="cnf_density.png", help="figure to write")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)

    results = []
    fig, axes = plt.subplots(
        len(args.datasets), 4, figsize=(13, 3.3 * len(args.datasets)), squeeze=False
    )
    print(f"{'data':8} {'flow':7} {'params':>7} {'held-out NLL':>13} {'fit':>7}")
    for row, name in enumerate(args.datasets):
        draw = sampler(name, args.seed)
        test = draw(10000)
        fitted, nlls = {}, {}
        for kind in ("cnf", "planar"):
            flow, module, seconds = fit(
                kind,
                draw,
                iterations=args.iterations,
                batch=args.batch,
                lr=args.lr,
                hidden=args.hidden,
                n_planar=args.planar_layers,
                seed=args.seed,
            )
            nll = held_out_nll(flow, test)
            params = sum(p.numel() for p in module.parameters())
            fitted[kind], nlls[kind] = flow, nll
            results.append(
                {
                    "data": name,
                    "flow": kind,
                    "parameters": params,
                    "held_out_nll": nll,
                    "fit_seconds": seconds,
                }
            )
            print(f"{name:8} {kind:7} {params:>7} {nll:>13.3f} {seconds:>6.0f}s")
        ax = axes[row]
        ax[0].scatter(*test[:2000].T, s=2, alpha=0.5, color="k")
        ax[0].set_title(f"{name}: data")
        for k, (kind, title) in enumerate((("cnf", "CNF density"), ("planar", "planar density"))):
            img, lim = density_grid(fitted[kind])
            ax[1 + k].imshow(img, extent=(-lim, lim, -lim, lim), origin="lower", cmap="viridis")
            ax[1 + k].set_title(f"{title} (NLL {nlls[kind]:.2f})")
        with torch.no_grad():
            samples = fitted["cnf"].sample((2000,))
        ax[3].scatter(*samples.T, s=2, alpha=0.5, color="C0")
        ax[3].set_title("CNF samples")
        for a in ax:
            a.set_xlim(-2.6, 2.6)
            a.set_ylim(-2.6, 2.6)
            a.set_aspect("equal")
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    if args.json:
        record = {"config": _config(args), "results": results}
        Path(args.json).write_text(json.dumps(record, indent=2))
    return results


if __name__ == "__main__":
    main()
