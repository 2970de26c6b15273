"""Chen et al. (2018), Table 2: predictive RMSE of spiral extrapolation, RNN vs Latent ODE.

For each ``n_obs`` in {30, 50, 100}: 1000 spirals (800 train, 200 test, noise std 0.1), each
observed at ``n_obs`` random points of a 100-step window; both models condition on a held-out
spiral's observed points and predict the 100 steps that follow. RMSE is computed over those
100 future steps and both coordinates of the 200 held-out spirals, against the noise-free
spiral (``rmse``) and against noisy observations of it (``rmse_noisy``). The paper does not
state its noise level nor against which it computed RMSE.

Each fit runs in its own process so that its peak memory (maximum resident set size, which
includes the Python interpreter and PyTorch, about 300 MiB) is its own.

    python benchmarks/spirals_table2.py --help
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from configs import SPIRALS_LATENT_ODE  # noqa: E402

PAPER = {  # Chen et al. (2018), Table 2
    "rnn": {30: 0.3937, 50: 0.3202, 100: 0.1813},
    "latent_ode": {30: 0.1642, 50: 0.1502, 100: 0.1346},
}


def run_one(kind: str, n_obs: int, args: dict) -> dict:
    import numpy as np
    import torch

    from latentode import LatentODE, RNNBaseline
    from latentode.datasets import make_spirals

    torch.set_num_threads(args["threads"])
    data = make_spirals(
        n_series=args["n_series"],
        n_obs=n_obs,
        noise_std=args["noise_std"],
        random_state=args["seed"],
    )
    if kind == "latent_ode":
        params = dict(
            max_epochs=args["epochs"][n_obs],
            validation_fraction=0.0,  # the paper's protocol: every training series
            random_state=args["seed"],
            subsample=args["subsample"][n_obs],
            **args["latent_ode"],
        )
        model = LatentODE(**params)
    else:
        params = dict(max_epochs=args["rnn_epochs"], random_state=args["seed"])
        model = RNNBaseline(**params)
    start = time.perf_counter()
    model.fit(data.train)
    fit_seconds = time.perf_counter() - start
    pred = model.predict(data.test, times=data.test_extrapolation_times).values
    history = model.history_
    result = {
        "model": kind,
        "n_obs": n_obs,
        "params": model.get_params(),
        "rmse": float(np.sqrt(np.mean((pred - data.test_extrapolation_truth) ** 2))),
        "rmse_noisy": float(np.sqrt(np.mean((pred - data.test_extrapolation_values) ** 2))),
        "fit_seconds": fit_seconds,
        "epochs": len(history.loss),
        "seconds_per_epoch_median": statistics.median(history.seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "paper_rmse": PAPER[kind][n_obs] if n_obs in PAPER[kind] else None,
    }
    if kind == "latent_ode":
        result["nfe_forward_per_epoch_mean"] = statistics.mean(history.nfe_forward)
        result["nfe_backward_per_epoch_mean"] = statistics.mean(history.nfe_backward)
        result["iterations_per_epoch"] = -(-len(data.train) // model.batch_size)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-obs", type=int, nargs="+", default=[30, 50, 100])
    parser.add_argument("--n-series", type=int, default=1000)
    parser.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=[1000, 1000, 1500],
        help="Latent ODE epochs: one value, or one per --n-obs",
    )
    tuned = SPIRALS_LATENT_ODE
    parser.add_argument("--lr", type=float, default=tuned["lr"], help="Latent ODE learning rate")
    parser.add_argument("--lr-decay", type=float, default=tuned["lr_decay"], help="per epoch")
    parser.add_argument(
        "--subsample",
        type=float,
        nargs="+",
        default=[1.0],
        help="Latent ODE training-time fraction of observed points kept per batch: one value, or "
        "one per --n-obs",
    )
    parser.add_argument(
        "--encode-fraction",
        type=float,
        default=tuned["encode_fraction"],
        help="Latent ODE forecast training: smallest fraction of each series' span encoded",
    )
    parser.add_argument(
        "--obs-std",
        type=float,
        default=tuned["obs_std"],
        help="Latent ODE fixed observation noise std; 0 learns it",
    )
    parser.add_argument(
        "--models", nargs="+", default=["latent_ode", "rnn"], choices=["latent_ode", "rnn"]
    )
    parser.add_argument("--rnn-epochs", type=int, default=300, help="RNN baseline epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-std", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="fits run side by side (the small models here are bound by per-call overhead, so "
        "one thread per fit is as fast as two; wall times are measured under this load)",
    )
    parser.add_argument(
        "--output",
        default=os.path.join(os.path.dirname(__file__), "results", "spirals_table2.json"),
    )
    args = parser.parse_args(argv)
    per_n_obs = {}
    for name in ("epochs", "subsample"):
        given = getattr(args, name)
        if len(given) not in (1, len(args.n_obs)):
            parser.error(f"--{name} takes one value or one per --n-obs")
        per_n_obs[name] = dict(zip(args.n_obs, given * len(args.n_obs), strict=False))
    config = {
        "n_series": args.n_series,
        "epochs": per_n_obs["epochs"],
        "rnn_epochs": args.rnn_epochs,
        "seed": args.seed,
        "noise_std": args.noise_std,
        "threads": args.threads,
        "jobs": args.jobs,
        "latent_ode": {
            "lr": args.lr,
            "lr_decay": args.lr_decay,
            "encode_fraction": args.encode_fraction,
            "obs_std": args.obs_std or None,
        },
        "subsample": per_n_obs["subsample"],
    }
    results = []
    ctx = mp.get_context("spawn")
    # the longest fits first, so that two workers finish together
    jobs = [(kind, n_obs) for kind in args.models for n_obs in sorted(args.n_obs, reverse=True)]
    # a fresh process per fit (max_tasks_per_child=1) so that each peak RSS is the fit's own
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(run_one, kind, n_obs, config) for kind, n_obs in jobs]
        for future in futures:
            res = future.result()
            results.append(res)
            kind, n_obs = res["model"], res["n_obs"]
            print(
                f"{kind:>10} n_obs={n_obs:<3} rmse {res['rmse']:.4f} "
                f"(noisy {res['rmse_noisy']:.4f})"
                f"  fit {res['fit_seconds']:.0f} s  peak {res['peak_rss_mib']:.0f} MiB",
                flush=True,
            )

    print(
        "\nPredictive RMSE on 100 extrapolated steps "
        f"(vs noise-free spirals; noise std {args.noise_std})"
    )
    print(f"{'n_obs':>6} | {'RNN paper':>9} {'RNN here':>9} | {'LODE paper':>10} {'LODE here':>10}")
    for n_obs in args.n_obs:
        here = {r["model"]: r["rmse"] for r in results if r["n_obs"] == n_obs}
        nan = float("nan")
        print(
            f"{n_obs:>6} | {PAPER['rnn'].get(n_obs, nan):>9.4f} {here.get('rnn', nan):>9.4f} | "
            f"{PAPER['latent_ode'].get(n_obs, nan):>10.4f} {here.get('latent_ode', nan):>10.4f}"
        )
    payload = {
        "benchmark": "spirals_table2",
        "config": config,
        "versions": {
            "python": platform.python_version(),
            **{p: version(p) for p in ("latentode", "torch", "pyro-ppl", "torchdiffeq")},
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"wrote {args.output}")
    return payload


if __name__ == "__main__":
    sys.exit(main() and 0)
