"""Fit a Latent ODE to irregularly observed 2-D spirals and plot posterior extrapolations.

The protocol of Chen et al. (2018), section 5.1: 1000 spirals (half clockwise), each observed at
``--n-obs`` random points of a 100-step window with Gaussian noise; the model extrapolates the
100 steps that follow. Prints the extrapolation RMSE against the noise-free spirals and writes a
figure of a few held-out spirals with 50% and 90% credible bands.

    python examples/spirals.py --help
"""

from __future__ import annotations

import argparse
import logging
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from latentode import LatentODE  # noqa: E402
from latentode.datasets import make_spirals  # noqa: E402
from latentode.plotting import plot_posterior  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-series", type=int, default=1000)
    parser.add_argument("--n-obs", type=int, default=30, help="observed points per series")
    # the settings of the spiral benchmark (benchmarks/configs.py): forecast training, the
    # data's noise fixed, a slowly decaying learning rate
    tuned = dict(max_epochs=1000, lr=0.02, lr_decay=0.997, encode_fraction=0.5, obs_std=0.1)
    parser.add_argument("--epochs", type=int, default=tuned["max_epochs"])
    parser.add_argument("--lr", type=float, default=tuned["lr"], help="Adam learning rate")
    parser.add_argument(
        "--lr-decay", type=float, default=tuned["lr_decay"], help="learning-rate factor per epoch"
    )
    parser.add_argument(
        "--encode-fraction",
        type=float,
        default=tuned["encode_fraction"],
        help="forecast training: smallest fraction of each series' span the encoder reads",
    )
    parser.add_argument(
        "--obs-std",
        type=float,
        default=tuned["obs_std"],
        help="fixed observation noise std (the data's); 0 learns it",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="spirals_extrapolation.png", help="PNG to write")
    parser.add_argument("--verbose", action="store_true", help="log every epoch too")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = make_spirals(n_series=args.n_series, n_obs=args.n_obs, random_state=args.seed)
    start = time.perf_counter()
    model = LatentODE(
        latent_dim=4,
        max_epochs=args.epochs,
        lr=args.lr,
        lr_decay=args.lr_decay,
        encode_fraction=args.encode_fraction,
        obs_std=args.obs_std or None,
        validation_fraction=0.0,  # the paper's protocol: every training series
        random_state=args.seed,
        verbose=True,  # a progress bar when run in a terminal
    )
    model.fit(data.train)
    seconds = time.perf_counter() - start

    t_future = data.test_extrapolation_times
    mean = model.predict(data.test, times=t_future)
    rmse = float(np.sqrt(np.mean((mean.values - data.test_extrapolation_truth) ** 2)))
    rmse_noisy = float(np.sqrt(np.mean((mean.values - data.test_extrapolation_values) ** 2)))
    print(f"fitted {len(data.train)} spirals (n_obs={args.n_obs}) in {seconds:.0f} s")
    print(f"extrapolation RMSE on {len(data.test)} held-out spirals, 100 future steps:")
    print(f"  vs noise-free spirals: {rmse:.4f}")
    print(f"  vs noisy observations: {rmse_noisy:.4f} (noise std {data.noise_std})")

    # figure: three held-out spirals, phase plot and one panel per coordinate
    times = np.concatenate([data.times, t_future])
    show = data.test[:3]
    draws = model.sample(show, times=times, n_samples=200)
    truth = xr.DataArray(
        data.test_truth[:3],
        dims=("series", "time", "feature"),
        coords={"series": show.ids, "time": times, "feature": ["x", "y"]},
    )
    fig, axes = plt.subplots(3, 3, figsize=(13, 9), gridspec_kw={"width_ratios": [1, 1.3, 1.3]})
    for row, sid in enumerate(show.ids):
        ax = axes[row, 0]
        m = draws["mean"].sel(series=sid)
        for k in range(20):
            ax.plot(m.sel(feature="x")[k], m.sel(feature="y")[k], color="C0", alpha=0.15, lw=0.8)
        mm = m.mean("sample")
        ax.plot(mm.sel(feature="x"), mm.sel(feature="y"), color="C0", lw=1.8)
        ax.plot(truth.sel(series=sid, feature="x"), truth.sel(series=sid, feature="y"), "k:", lw=1)
        s = show[row]
        ax.scatter(s.values[:, 0], s.values[:, 1], s=12, color="k", zorder=3)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"spiral {sid}: x-y plane")
        plot_posterior(draws, show, series=sid, truth=truth.sel(series=sid), axes=axes[row, 1:])
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")
    return rmse


if __name__ == "__main__":
    main()
