"""Memory and time of a Latent ODE's solve-and-backward: gradient modes against horizon and outputs.

The latent trajectory of a batch of series is solved at output times over a horizon and a
decoder-like loss is backpropagated, as in one training step of the spiral model (latent 4,
dynamics MLP of width 20, 1000 series, dopri5 at rtol 1e-7 / atol 1e-9 by default). Four ways
to get the gradient:

- ``backprop``: through the native solver's operations;
- ``torchdiffeq``: through torchdiffeq's ``odeint`` (the reference);
- ``adjoint``: torchdiffeq's continuous adjoint (``odeint_adjoint``);
- ``checkpoint``: the native solver's checkpointed discrete adjoint.

Two sweeps, each configuration in a fresh process: the horizon grows (100 output times on
``[0, T]``), and the number of output times grows (fixed horizon). Measured: peak resident
memory and the part the step adds, bytes autograd saved for backward, wall time (median of
``--repeats``), function evaluations forward and backward.

    python benchmarks/adjoint_memory.py --help
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_worker, versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("backprop", "torchdiffeq", "adjoint", "checkpoint")


def _solver_kwargs(mode: str) -> dict:
    return {
        "backprop": dict(backend="native"),
        "torchdiffeq": dict(backend="torchdiffeq"),
        "adjoint": dict(adjoint=True),
        "checkpoint": dict(adjoint="checkpoint"),
    }[mode]


def worker(mode, horizon, n_out, *, batch, latent, hidden, rtol, atol, repeats) -> dict:
    """One configuration, measured in this (fresh) process."""
    import torch

    from latentode.nn import ODEFunc
    from latentode.profiling import SavedTensors, peak_rss_mib
    from latentode.solvers import ODESolver

    torch.set_num_threads(1)
    torch.manual_seed(0)
    func = ODEFunc(latent, hidden)
    decoder = torch.nn.Linear(latent, 2)
    z0 = torch.randn(batch, latent)
    t = torch.linspace(0, horizon, n_out)
    target = torch.randn(n_out, batch, 2)
    solver = ODESolver(func, rtol=rtol, atol=atol, **_solver_kwargs(mode))

    def step(record=None):
        solver.reset_nfe()
        z = z0.clone().requires_grad_(True)
        if record is None:
            zs = solver(z, t)
        else:
            with record:
                zs = solver(z, t)
        (decoder(zs) - target).square().mean().backward()

    step()  # warm-up: allocators, kernels
    before = peak_rss_mib()
    saved = SavedTensors()
    step(saved)
    added = peak_rss_mib() - before
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {
        "mode": mode,
        "horizon": horizon,
        "n_out": n_out,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_added_mib": added,
        "saved_for_backward_mib": saved.mib,
        "step_seconds": statistics.median(seconds),
        "nfe_forward": solver.nfe["forward"],
        "nfe_backward": solver.nfe["backward"],
    }


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    keys = [
        ("saved_for_backward_mib", "saved for backward (MiB)"),
        ("step_seconds", "time of solve + backward (s)"),
        ("nfe_backward", "function evaluations, backward"),
    ]
    for row, (sweep, xkey, xlabel) in enumerate(
        (
            ("horizon", "horizon", "horizon T (100 outputs)"),
            ("outputs", "n_out", "output times (fixed horizon)"),
        )
    ):
        for ax, (key, label) in zip(axes[row], keys, strict=True):
            for mode, style in zip(MODES, ("o-", "v--", "s-", "D-"), strict=True):
                rows = [r for r in results if r["sweep"] == sweep and r["mode"] == mode]
                if not any(r[key] for r in rows):
                    continue  # no backward solve: nothing to draw on a log scale
                ax.plot(
                    [r[xkey] for r in rows], [max(r[key], 1e-3) for r in rows], style, label=mode
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("Latent ODE solve + backward: gradient modes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizons", type=float, nargs="+", default=[2.0, 20.0])
    parser.add_argument("--outputs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--fixed-horizon", type=float, default=5.0)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--latent", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=20)
    parser.add_argument("--rtol", type=float, default=1e-7)
    parser.add_argument("--atol", type=float, default=1e-9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS / "adjoint_memory.json"))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = dict(
        batch=args.batch,
        latent=args.latent,
        hidden=args.hidden,
        rtol=args.rtol,
        atol=args.atol,
        repeats=args.repeats,
    )
    if args.worker:
        mode, horizon, n_out = args.worker
        print(json.dumps(worker(mode, float(horizon), int(n_out), **shape)))
        return None

    flags = [f"--{k}={v}" for k, v in shape.items()]
    configs = [("horizon", h, 100) for h in args.horizons]
    configs += [("outputs", args.fixed_horizon, n) for n in args.outputs]
    results = []
    print(
        f"{'sweep':8} {'mode':12} {'T':>5} {'outs':>5} {'peak':>9} {'saved':>10} "
        f"{'NFE f/b':>11} {'time':>8}"
    )
    for sweep, horizon, n_out in configs:
        for mode in args.modes:
            r = run_worker(__file__, [mode, str(horizon), str(n_out), *flags])
            r["sweep"] = sweep
            results.append(r)
            print(
                f"{sweep:8} {mode:12} {horizon:>5g} {n_out:>5} {r['peak_rss_mib']:>5.0f} MiB "
                f"{r['saved_for_backward_mib']:>6.1f} MiB "
                f"{r['nfe_forward']:>5}/{r['nfe_backward']:<5} {r['step_seconds']:>7.3f}s",
                flush=True,
            )
    summary = {}
    for mode in args.modes:
        rows = sorted(
            (r for r in results if r["sweep"] == "horizon" and r["mode"] == mode),
            key=lambda r: r["horizon"],
        )
        if len(rows) >= 2:
            lo, hi = rows[0], rows[-1]
            summary[mode] = {
                "horizon_ratio": hi["horizon"] / lo["horizon"],
                "peak_rss_ratio": hi["peak_rss_mib"] / lo["peak_rss_mib"],
                "saved_ratio": (
                    hi["saved_for_backward_mib"] / lo["saved_for_backward_mib"]
                    if lo["saved_for_backward_mib"] > 0
                    else None
                ),
                "backward_over_forward_nfe": [r["nfe_backward"] / r["nfe_forward"] for r in rows],
            }
    for mode, s in summary.items():
        ratios = ", ".join(f"{x:.2f}" for x in s["backward_over_forward_nfe"])
        print(
            f"{mode}: horizon x{s['horizon_ratio']:g} -> peak memory x{s['peak_rss_ratio']:.2f}"
            f", backward/forward NFE {ratios}"
        )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "config": {
            **shape,
            "horizons": args.horizons,
            "outputs": args.outputs,
            "fixed_horizon": args.fixed_horizon,
            "threads": 1,
        },
        "results": results,
        "summary": summary,
        "versions": versions(),
    }
    out.write_text(json.dumps(record, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return record


if __name__ == "__main__":
    main()
