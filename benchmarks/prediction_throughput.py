"""Prediction throughput: series per second of predict, sample and predict_quantiles.

    python benchmarks/prediction_throughput.py --physionet-path DIR [--series 400] [--threads 2]
        [--device cuda] [--same-time-readout 64]

A model is fitted briefly on PhysioNet 2012 set A stays (GRU encoder, latent 20, 37
channels; the weights' quality does not change the cost), then each prediction method is
timed on ``--series`` other stays of 0–48 h, at each stay's own observation times and for a
24-hour horizon after each stay's end (20 points), with the methods' default numbers of
draws, with ``z0`` importance-resampled (the default ``importance_samples``) and drawn from
``q`` itself (``importance_samples=0``). Every call runs without a gradient tape, in chunks
of series. Without
``--physionet-path``, synthetic stays of the same shape (37 channels, about 75 observation
times over 48 h, 13% of values observed) are used. Reports the median of ``--repeats``
calls; writes ``benchmarks/results/prediction_throughput.json``. (Without ``times``,
``predict`` and ``sample`` answer on the union of the series' times, every series at every
time: for hundreds of stays at minute resolution that grid has thousands of times, so the
benchmark passes each stay's own times, as a user imputing or smoothing would.)

With ``--same-time-readout H`` the model has a same-time readout of width ``H`` (and
``noise_rank=8``, the configuration it is used with), and the held-out draws of an
imputation evaluation are timed too — 10% of each stay's values hidden, 100 draws at each
(:func:`latentode.evaluation.held_out_draws`, what ``evaluate`` and ``calibrate`` run) —
with the readout read at the held-out entries only (``sample(..., entries=)``, the default
there) and at every entry of their times, as before ``entries`` existed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from latentode import LatentODE  # noqa: E402
from latentode.datasets import from_arrays, load_physionet2012  # noqa: E402
from latentode.evaluation import held_out_draws, hold_out  # noqa: E402
from latentode.profiling import peak_rss_mib  # noqa: E402


def synthetic_stays(n: int, seed: int):
    """Stays shaped like PhysioNet's: 37 channels, ~75 times in 48 h, ~13% observed."""
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(n):
        k = int(rng.integers(40, 110))
        times = np.sort(rng.choice(np.arange(0, 48 * 60), size=k, replace=False)) / 60.0
        values = rng.normal(size=(k, 37))
        values[rng.random((k, 37)) > 0.13] = np.nan
        values[np.arange(k), rng.integers(0, 37, size=k)] = rng.normal(size=k)  # one per row
        series.append((times, values))
    return from_arrays(series)


class EveryEntry:
    """A fitted model whose ``sample`` takes no ``entries``: held-out draws then read every
    entry of the held-out values' times."""

    def __init__(self, model):
        self.model = model

    def sample(self, X, *, times, n_samples):
        return self.model.sample(X, times=times, n_samples=n_samples)


def timed(call, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--physionet-path", help="folder with set-a.tar.gz (else synthetic)")
    parser.add_argument("--series", type=int, default=400, help="stays predicted per call")
    parser.add_argument("--train", type=int, default=400, help="stays of the brief fit")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    parser.add_argument(
        "--same-time-readout",
        type=int,
        default=0,
        help="width of the model's same-time readout (with noise_rank=8); also times the "
        "held-out draws of an imputation evaluation",
    )
    parser.add_argument("--output", help="JSON to write (default in benchmarks/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.output or Path(__file__).parent / "results" / "prediction_throughput.json")
    if args.physionet_path:
        data = load_physionet2012(args.physionet_path).data
        order = np.random.default_rng(args.seed).permutation(len(data))
        train = data[order[: args.train]]
        test = data[order[args.train : args.train + args.series]]
        source = "PhysioNet 2012 set A"
    else:
        train = synthetic_stays(args.train, args.seed)
        test = synthetic_stays(args.series, args.seed + 1)
        source = "synthetic PhysioNet-shaped stays"
    model = LatentODE(
        encoder="gru",
        latent_dim=20,
        max_epochs=args.epochs,
        validation_fraction=0.0,
        random_state=args.seed,
        device=args.device,
        verbose=False,
        same_time_readout=args.same_time_readout,
        noise_rank=8 if args.same_time_readout else 0,
    ).fit(train)
    own = {s.id: s.times for s in test}
    calls = {
        "predict (own times, 32 draws)": lambda: model.predict(test, times=own),
        "sample (own times, 100 draws)": lambda: model.sample(test, times=own),
        "predict_quantiles (own times, 200 draws)": lambda: model.predict_quantiles(test),
        "predict_quantiles (24 h horizon, 200 draws)": lambda: model.predict_quantiles(
            test, horizon=24.0
        ),
    }
    if args.same_time_readout:
        context, target = hold_out(test, fraction=0.1, random_state=args.seed)
        calls["held-out values (10%, 100 draws), read at those only"] = lambda: held_out_draws(
            model, context, target, 100
        )
        calls["held-out values (10%, 100 draws), read at every entry of their times"] = lambda: (
            held_out_draws(EveryEntry(model), context, target, 100)
        )
    results = {}
    print(f"{len(test)} {source}, {args.threads} threads, device {args.device}")
    # z0 by importance resampling (the default proposals), then drawn from q itself
    for proposals in (model.importance_samples, 0):
        model.set_params(importance_samples=proposals)
        for name, call in calls.items():
            name = f"{name}, importance_samples={proposals}"
            seconds = timed(call, args.repeats)
            results[name] = {"seconds": seconds, "series_per_second": len(test) / seconds}
            print(f"{name:72s} {seconds:7.2f} s  {len(test) / seconds:8.1f} series/s", flush=True)
    payload = {
        "configuration": vars(args)
        | {
            "output": out.name,
            "physionet_path": Path(args.physionet_path).name if args.physionet_path else None,
        },
        "data": source,
        "observations_per_series": float(np.mean([np.isfinite(s.values).sum() for s in test])),
        "results": results,
        "peak_rss_mib": peak_rss_mib(),
    }
    write_results(out, payload)


if __name__ == "__main__":
    main()
