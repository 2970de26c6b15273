"""Forecast quality on held-out series: accuracy and calibration beside the simple baselines.

Splits the series of a data set into training (70%), calibration (10%) and test (20%) series;
fits two Latent ODEs on the training series — the model of the papers and the same with
``anchor=True`` (means blended with the nearest observations; ``--anchor path``:
``anchor="path"``, the observations carried along the decoded path first) — and calibrates their
predictives on the calibration series; fits the baselines (last value carried forward, linear
interpolation, the feature mean, each with empirical bands) on the training series; then, on
the test series, hides

- extrapolation: each series' second half (periodic) or everything after 24 h (PhysioNet),
- imputation: 10% of the observed values at random,

and scores every model on the hidden values with :func:`latentode.evaluation.evaluate`: MSE
per observed value, MAE, CRPS, the coverage, width and interval score of central intervals
(10% to 95%), per feature and overall. The Latent ODE is scored with its own bands, with
the default calibration (:meth:`LatentODE.calibrate` without options) and calibrated with the
task's own hold-out on the calibration series; both Latent ODEs also with ``z0`` drawn from
the encoder's ``q(z0 | x)`` itself (``importance_samples=0``), beside the default importance
resampling. Writes
``benchmarks/results/forecast_quality_<dataset>.json`` and a reliability diagram per task
(PNG), and prints the overall rows.

    python benchmarks/forecast_quality.py --dataset periodic
    python benchmarks/forecast_quality.py --dataset physionet --physionet-path DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import versions  # noqa: E402

from latentode import FeatureMean, LastValue, LatentODE, LinearInterpolation  # noqa: E402
from latentode.evaluation import RELIABILITY_LEVELS, evaluate, hold_out, reliability  # noqa: E402
from latentode.plotting import plot_reliability  # noqa: E402
from latentode.profiling import peak_rss_mib  # noqa: E402


def from_q(model):
    """A copy of a fitted Latent ODE that draws z0 from its encoder's q, not resampled."""
    return copy.deepcopy(model).set_params(importance_samples=0)


def load(args):
    """The data set as one IrregularDataset, and the extrapolation rule of hold_out."""
    if args.dataset == "periodic":
        from latentode.datasets import make_periodic

        data = make_periodic(n_series=args.n_series or 1000, random_state=args.seed)
        series = type(data.train)([*data.train, *data.test], data.train.feature_names)
        span = float(data.times[-1] - data.times[0])
        return series, {"last": span / 2}
    from latentode.datasets import load_physionet2012

    icu = load_physionet2012(args.physionet_path, quantization=args.quantization)
    return icu.data, {"after": 24.0}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["periodic", "physionet"], default="periodic")
    parser.add_argument("--physionet-path", help="folder with set-a.tar.gz and Outcomes-a.txt")
    parser.add_argument("--quantization", type=float, default=0.1, help="PhysioNet: hours")
    parser.add_argument(
        "--n-series",
        type=int,
        default=None,
        help="periodic: series to generate (default 1000); PhysioNet: a random subset of the "
        "stays (default all)",
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--encoder", default="odernn", help="the Latent ODE's encoder")
    parser.add_argument("--encode-fraction", type=float, default=0.5)
    parser.add_argument("--likelihood", default="normal", help="the Latent ODEs' noise family")
    parser.add_argument(
        "--noise-rank", type=int, default=0, help="shared noise components (LatentODE noise_rank)"
    )
    parser.add_argument(
        "--heteroscedastic",
        action="store_true",
        help="noise scales that vary with the latent state (LatentODE heteroscedastic)",
    )
    parser.add_argument(
        "--hide-fraction",
        type=float,
        default=0.0,
        help="share of observed values hidden from the encoder in training (LatentODE "
        "hide_fraction)",
    )
    parser.add_argument(
        "--same-time-readout",
        type=int,
        default=0,
        help="width of the readout of a value from those seen at its time (LatentODE "
        "same_time_readout; 0: none)",
    )
    parser.add_argument(
        "--log-features",
        default="none",
        help="the Latent ODEs' log_features: none, auto, or names separated by commas",
    )
    parser.add_argument(
        "--anchor",
        choices=["level", "path"],
        default="level",
        help="the anchored model's blend: anchor=True (level) or anchor='path'",
    )
    parser.add_argument("--samples", type=int, default=200, help="draws per held-out value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="JSON to write (default in benchmarks/results)")
    args = parser.parse_args(argv)
    if args.dataset == "physionet" and not args.physionet_path:
        parser.error("--dataset physionet needs --physionet-path")
    out = Path(
        args.output or Path(__file__).parent / "results" / f"forecast_quality_{args.dataset}.json"
    )

    log_features = {"none": None, "auto": "auto"}.get(args.log_features)
    if log_features is None and args.log_features != "none":
        log_features = args.log_features.split(",")
    data, extrapolation = load(args)
    order = np.random.default_rng(args.seed).permutation(len(data))
    if args.dataset == "physionet" and args.n_series:  # a random subset of the stays
        data = data[np.sort(order[: args.n_series])]
        order = np.random.default_rng(args.seed).permutation(len(data))
    n_train, n_cal = int(0.7 * len(data)), int(0.1 * len(data))
    train = data[order[:n_train]]
    calibration = data[order[n_train : n_train + n_cal]]
    test = data[order[n_train + n_cal :]]
    sizes = f"{len(train)} training, {len(calibration)} calibration, {len(test)} test series"
    print(f"{args.dataset}: {sizes}")

    fit_seconds, fitted = {}, {}
    anchored = "latent ODE, anchored" if args.anchor == "level" else "latent ODE, path-anchored"
    blend = True if args.anchor == "level" else "path"
    for name, anchor in (("latent ODE", False), (anchored, blend)):
        start = time.perf_counter()
        fitted[name] = LatentODE(
            encoder=args.encoder,
            encode_fraction=args.encode_fraction,
            likelihood=args.likelihood,
            noise_rank=args.noise_rank,
            heteroscedastic=args.heteroscedastic,
            hide_fraction=args.hide_fraction,
            same_time_readout=args.same_time_readout,
            log_features=log_features,
            anchor=anchor,
            max_epochs=args.epochs,
            validation_fraction=0.0,  # the calibration series are a split of their own
            random_state=args.seed,
        ).fit(train)
        fit_seconds[name] = time.perf_counter() - start
        print(f"{name}: fitted in {fit_seconds[name]:.0f} s", flush=True)
    plain, model = fitted["latent ODE"], fitted[anchored]
    start = time.perf_counter()
    default = copy.deepcopy(model).calibrate(calibration)
    calibration_seconds = time.perf_counter() - start
    baselines = {
        "last value": LastValue(random_state=args.seed).fit(train),
        "linear interpolation": LinearInterpolation(random_state=args.seed).fit(train),
        "feature mean": FeatureMean(random_state=args.seed).fit(train),
    }
    results = {}
    for task, rule in (("extrapolation", extrapolation), ("imputation", {"fraction": 0.1})):
        models = {
            # calibrated on the calibration series with the task's own hold-out
            f"{anchored}, calibrated for the task": copy.deepcopy(model).calibrate(
                calibration, **rule
            ),
            f"{anchored}, default calibration": default,
            f"{anchored}, own bands": model,
            "latent ODE, calibrated for the task": copy.deepcopy(plain).calibrate(
                calibration, **rule
            ),
            # the same two with z0 drawn from the encoder's q itself, as trained: what
            # importance resampling (the estimators' default) changes
            f"{anchored}, calibrated for the task, z0 from q": from_q(model).calibrate(
                calibration, **rule
            ),
            "latent ODE, calibrated for the task, z0 from q": from_q(plain).calibrate(
                calibration, **rule
            ),
            **baselines,
        }
        context, target = hold_out(test, **rule, random_state=args.seed)
        table = evaluate(models, context, target, levels=RELIABILITY_LEVELS, n_samples=args.samples)
        results[task] = table.to_dict("records")
        overall = table[table.feature == "all"].set_index("model")
        print(f"\n{task} ({rule}): {int(overall.n.iloc[0])} held-out values")
        per_feature = table[table.feature != "all"].pivot(
            index="feature", columns="model", values="mse"
        )
        print("median over features of MSE / last value's MSE:")
        print(per_feature.div(per_feature["last value"], axis=0).median().round(3).to_string())
        print(
            overall[["mse", "mae", "mse_scaled", "crps", "coverage_50", "coverage_90", "width_90"]]
            .round(4)
            .to_string()
        )
        ax = plot_reliability(reliability(table))
        ax.set_title(f"{args.dataset}, {task}")
        ax.figure.savefig(out.with_name(f"{out.stem}_{task}.png"), dpi=120, bbox_inches="tight")
    record = {
        "dataset": args.dataset,
        # the data folder by its name only: results never name paths of the machine
        "configuration": {
            **vars(args),
            "physionet_path": args.physionet_path and Path(args.physionet_path).name,
            "output": out.name,
        },
        "series": {"train": len(train), "calibration": len(calibration), "test": len(test)},
        "fit_seconds": fit_seconds,
        "calibration_seconds": calibration_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "results": results,
        "versions": versions(),
    }
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"\nwrote {out}")
    return record


if __name__ == "__main__":
    main()
