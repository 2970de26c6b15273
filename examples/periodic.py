"""Interpolation and extrapolation of irregular periodic series (Rubanova et al. 2019, sec. 4.1).

Sine waves of random frequency and phase on 100 irregular time points; each series shows
``--n-obs`` of them. A Latent ODE with the ODE-RNN recognition network is fitted and scored on
held-out series for two tasks, as mean squared error against the noisy values:

- interpolation: condition on a series' observed points, reconstruct all 100 points;
- extrapolation: condition on the observed points in the first half of the window, predict
  the 50 points of the second half.

Baselines: the non-latent ODE-RNN forecaster (extrapolation) and the mean of the training
values. Writes a figure of a few held-out series with their posterior bands.

    python examples/periodic.py --help
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
import xarray as xr  # noqa: E402

from latentode import LatentODE, ODERNNBaseline  # noqa: E402
from latentode.datasets import make_periodic  # noqa: E402
from latentode.metrics import masked_mse  # noqa: E402
from latentode.plotting import plot_posterior  # noqa: E402
from latentode.profiling import peak_rss_mib  # noqa: E402


def _config(args) -> dict:
    """The run's settings, without the file paths of the machine it ran on."""
    return {k: v for k, v in vars(args).items() if k not in ("output", "json", "path")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-series", type=int, default=1000)
    parser.add_argument("--n-obs", type=int, default=30, help="observed points per series")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--baseline-epochs", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=6)
    parser.add_argument("--noise-std", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="periodic.png", help="figure to write")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)

    data = make_periodic(
        n_series=args.n_series, n_obs=args.n_obs, noise_std=args.noise_std, random_state=args.seed
    )
    t_split = float(np.median(data.times))
    start = time.perf_counter()
    model = LatentODE(
        encoder="odernn",
        latent_dim=args.latent_dim,
        max_epochs=args.epochs,
        encode_fraction=0.5,
        validation_fraction=0.0,  # the paper's protocol: every training series
        lr=0.01,
        lr_decay=0.98,
        random_state=args.seed,
    ).fit(data.train)
    fit_seconds = time.perf_counter() - start

    interp = model.predict(data.test, times=data.times).values
    early, _ = data.test.split_at(t_split)
    keep = [data.test.ids.index(sid) for sid in early.ids]
    later = data.times[data.times >= t_split]
    future = data.test_values[keep][:, data.times >= t_split]
    extrap = model.predict(early, times=later).values

    baseline = ODERNNBaseline(max_epochs=args.baseline_epochs, random_state=args.seed)
    baseline.fit(data.train)
    # the forecaster predicts after each series' last observation: query the second half
    base_extrap = baseline.predict(early, times=later).values

    mean = np.mean(np.concatenate([s.values for s in data.train]))
    results = {
        "interpolation_mse": masked_mse(data.test_values, interp),
        "extrapolation_mse": masked_mse(future, extrap),
        "odernn_extrapolation_mse": masked_mse(future, base_extrap),
        "mean_predictor_mse": masked_mse(future, np.full_like(future, mean)),
        "fit_seconds": fit_seconds,
        "peak_rss_mib": peak_rss_mib(),
    }
    print(
        f"fitted {len(data.train)} series ({args.n_obs} of 100 points each) in {fit_seconds:.0f} s"
    )
    print(f"interpolation MSE, all 100 points:        {results['interpolation_mse']:.4f}")
    print(f"extrapolation MSE, second half:           {results['extrapolation_mse']:.4f}")
    print(f"  ODE-RNN forecaster:                      {results['odernn_extrapolation_mse']:.4f}")
    print(f"  mean of the training values:             {results['mean_predictor_mse']:.4f}")

    show = early[:3]
    draws = model.sample(show, times=data.times, n_samples=200)
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, sid in zip(axes, show.ids, strict=True):
        row = data.test.ids.index(sid)
        truth = xr.DataArray(
            data.test_truth[row],
            dims=("time", "feature"),
            coords={"time": data.times, "feature": ["value"]},
        )
        plot_posterior(draws, show, series=sid, truth=truth, axes=[ax])
    fig.suptitle("conditioned on the first half, extrapolating the second")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    if args.json:
        record = {"config": _config(args), "results": results}
        Path(args.json).write_text(json.dumps(record, indent=2))
    return results


if __name__ == "__main__":
    main()
