"""Training memory of an ODE block versus the number of solver steps: adjoint against backprop.

The claim of Chen et al. (2018, section 2) that matters in practice: with the adjoint method
the memory of a training step does not grow with the number of solver steps, while
backpropagating through the solver's operations keeps every intermediate state. Here the ODE
block of ``examples/odenet_digits.py`` (a convolutional vector field, 32 channels on 8x8
feature maps, batch 16) is solved with fixed-step RK4 forced to take 10 to 1000 steps, and one
training step (forward and backward) is measured in a fresh process per configuration:

- peak resident memory of the process, and the part added by the step (``ru_maxrss`` after
  the step minus before it);
- bytes autograd saved for the backward pass (:class:`latentode.profiling.SavedTensors`);
- wall time of the step, and function evaluations forward and backward.

Writes ``benchmarks/results/odenet_memory.json`` and a plot ``odenet_memory.png`` beside it.

    python benchmarks/odenet_memory.py --help
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _example():
    spec = importlib.util.spec_from_file_location(
        "odenet_digits", HERE.parent / "examples" / "odenet_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worker(mode: str, steps: int, *, batch: int, channels: int, size: int) -> dict:
    """One configuration, measured in this (fresh) process."""
    import torch

    from latentode.nn import ODEBlock
    from latentode.profiling import SavedTensors, peak_rss_mib

    torch.set_num_threads(1)
    torch.manual_seed(0)
    func = _example().ODEFunc(channels)
    x = torch.randn(batch, channels, size, size)

    def block(n):
        return ODEBlock(
            func, method="rk4", options={"step_size": 1.0 / n}, adjoint=mode == "adjoint"
        )

    # warm up allocators and kernels with a one-step solve, then take the baseline
    warm = block(1)
    warm(x.clone().requires_grad_(True)).square().mean().backward()
    func.zero_grad()
    before = peak_rss_mib()
    b = block(steps)
    start = time.perf_counter()
    with SavedTensors() as saved:
        out = b(x.clone().requires_grad_(True))
    out.square().mean().backward()
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "steps": steps,
        "peak_rss_added_mib": peak_rss_mib() - before,
        "peak_rss_mib": peak_rss_mib(),
        "saved_for_backward_mib": saved.mib,
        "step_seconds": seconds,
        "nfe_forward": b.nfe["forward"],
        "nfe_backward": b.nfe["backward"],
    }


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = [
        ("peak_rss_added_mib", "peak memory added by a step (MiB)"),
        ("saved_for_backward_mib", "saved for backward (MiB)"),
        ("step_seconds", "time of a training step (s)"),
    ]
    for ax, (key, label) in zip(axes, keys, strict=True):
        for mode, style in (("direct", "o-"), ("adjoint", "s-")):
            rows = [r for r in results if r["mode"] == mode]
            ax.plot(
                [r["steps"] for r in rows],
                [max(r[key], 1e-3) for r in rows],
                style,
                label="backprop through the solver" if mode == "direct" else "adjoint",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("RK4 steps per solve")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize="small")
    fig.suptitle("ODE block training step: memory and time versus solver steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=8, help="feature map height and width")
    parser.add_argument("--output", default=str(RESULTS / "odenet_memory.json"))
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = dict(batch=args.batch, channels=args.channels, size=args.size)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), **shape)))
        return None

    results = []
    print(
        f"{'mode':8} {'steps':>6} {'peak':>10} {'peak added':>11} {'saved':>9} {'NFE f/b':>11} "
        f"{'time':>8}"
    )
    for mode in ("direct", "adjoint"):
        for steps in args.steps:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                mode,
                str(steps),
                "--batch",
                str(args.batch),
                "--channels",
                str(args.channels),
                "--size",
                str(args.size),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(r)
            print(
                f"{mode:8} {steps:>6} {r['peak_rss_mib']:>6.0f} MiB "
                f"{r['peak_rss_added_mib']:>7.1f} MiB "
                f"{r['saved_for_backward_mib']:>5.1f} MiB "
                f"{r['nfe_forward']:>5}/{r['nfe_backward']:<5} {r['step_seconds']:>7.2f}s"
            )
    ratios = {}
    for mode in ("direct", "adjoint"):
        rows = {r["steps"]: r for r in results if r["mode"] == mode}
        lo = min(rows)
        for hi in sorted(rows)[1:]:
            for key in ("peak_rss_mib", "peak_rss_added_mib", "saved_for_backward_mib"):
                ratios[f"{mode} {key} {hi}/{lo} steps"] = (
                    rows[hi][key] / rows[lo][key] if rows[lo][key] > 0 else None
                )
    for name, value in ratios.items():
        if name.split()[-2].split("/")[0] in (str(10 * min(args.steps)), str(max(args.steps))):
            print(f"{name}: {value:.2f}x")
    import torch

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "config": {**shape, "steps": args.steps, "method": "rk4", "threads": 1},
                "results": results,
                "ratios": ratios,
                "versions": {"python": platform.python_version(), "torch": torch.__version__},
                "machine": platform.machine(),
            },
            indent=2,
        )
    )
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return results


if __name__ == "__main__":
    main()
