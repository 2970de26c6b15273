"""MuJoCo Hopper: interpolation and extrapolation from a fraction of each run's points.

Simulates the Hopper of the DeepMind Control Suite from random states (no control), observes
``--fraction`` of the 100 points of each run, fits a :class:`latentode.LatentODE`, and on
held-out runs reports

- interpolation MSE: condition on the observed points, reconstruct all 100;
- extrapolation MSE: condition on the observed points of the first half, predict the whole
  second half;

on the scale of Rubanova et al. (2019), ``(x - min) / max`` with each channel's minimum and
maximum over the generated runs. Their Latent ODE (ODE encoder) with 10% of the points scores
interpolation 0.360e-2 and extrapolation 1.441e-2 (10 000 runs). Writes a figure of four
channels of one held-out run.

Needs the ``hopper`` extra: ``pip install "latentode[hopper]"``.

    python examples/hopper.py --help
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

from latentode import LatentODE  # noqa: E402
from latentode.datasets import make_hopper  # noqa: E402
from latentode.metrics import masked_mse  # noqa: E402
from latentode.plotting import plot_posterior  # noqa: E402
from latentode.profiling import peak_rss_mib  # noqa: E402

SHOW = ["q_rootz", "q_hip", "v_rootz", "v_hip"]


def _config(args) -> dict:
    """The run's settings, without the file paths of the machine it ran on."""
    return {k: v for k, v in vars(args).items() if k not in ("output", "json")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-series", type=int, default=1000, help="runs (paper: 10 000)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of points observed")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent-dim", type=int, default=15)
    parser.add_argument("--encoder", choices=["odernn", "gru"], default="gru")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="hopper.png", help="figure to write")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)

    n_times = 100
    n_obs = max(2, round(args.fraction * n_times))
    start = time.perf_counter()
    data = make_hopper(n_series=args.n_series, n_obs=n_obs, n_times=n_times, random_state=args.seed)
    print(
        f"simulated {args.n_series} runs in {time.perf_counter() - start:.1f} s; "
        f"{n_obs} of {n_times} points observed per run"
    )
    scale = np.where(data.data_max != 0, data.data_max, 1.0)  # the paper's normalize_data

    model = LatentODE(
        encoder=args.encoder,
        latent_dim=args.latent_dim,
        ode_hidden_dim=100,
        encoder_hidden_dim=100,
        decoder_hidden_dim=100,
        encode_fraction=0.5,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        validation_fraction=0.0,  # the paper's protocol: every training series
        random_state=args.seed,
    )
    start = time.perf_counter()
    model.fit(data.train)
    fit_seconds = time.perf_counter() - start

    t_split = data.times[n_times // 2]
    interp = model.predict(data.test, times=data.times).values
    early, _ = data.test.split_at(t_split)
    keep = [data.test.ids.index(sid) for sid in early.ids]
    later = data.times >= t_split
    extrap = model.predict(early, times=data.times[later]).values
    future = data.test_values[keep][:, later]
    results = {
        "interpolation_mse": masked_mse(data.test_values / scale, interp / scale),
        "extrapolation_mse": masked_mse(future / scale, extrap / scale),
        # reference: each channel's mean over the training observations, at every point
        "mean_predictor_mse": masked_mse(
            data.test_values / scale,
            np.broadcast_to(
                np.nanmean(np.concatenate([s.values for s in data.train]), 0) / scale,
                data.test_values.shape,
            ),
        ),
        "n_extrapolated": len(keep),
        "fit_seconds": fit_seconds,
        "epochs_run": len(model.history_.loss),
        "n_train": len(data.train),
        "n_test": len(data.test),
        "peak_rss_mib": peak_rss_mib(),
    }
    print(f"fitted {len(data.train)} runs in {fit_seconds:.0f} s; on {len(data.test)} held out:")
    print(f"  interpolation MSE  {results['interpolation_mse']:.3e}  (paper, 10%: 0.360e-2)")
    print(f"  extrapolation MSE  {results['extrapolation_mse']:.3e}  (paper, 10%: 1.441e-2)")
    print(f"  training mean      {results['mean_predictor_mse']:.3e}")

    show = early[[0]]
    sid = show.ids[0]
    draws = model.sample(show, times=data.times, n_samples=100)
    coords = {"time": data.times, "feature": data.train.feature_names}
    truth = xr.DataArray(
        data.test_values[data.test.ids.index(sid)], dims=("time", "feature"), coords=coords
    )
    fig, axes = plt.subplots(len(SHOW), 1, figsize=(8, 2.2 * len(SHOW)), sharex=True)
    plot_posterior(draws, show, series=sid, features=SHOW, truth=truth, axes=axes)
    fig.suptitle(f"Hopper run {sid}: conditioned on the observed points of the first half")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    if args.json:
        record = {"config": _config(args), "results": results}
        Path(args.json).write_text(json.dumps(record, indent=2))
    return results


if __name__ == "__main__":
    main()
