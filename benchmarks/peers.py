"""latentode beside the two public Latent ODE implementations, measured in one sitting.

    python benchmarks/peers.py [--peers ../shared/peers] [--runs 2] [--threads 2]

The peers — torchdiffeq's spiral demo (Chen et al. 2018) and Rubanova et al.'s
``run_models.py`` (2019) — run unmodified through their instrumented runners (see the peers
folder's README), each in a fresh process, alternating with latentode's run of the same
configuration (peer, latentode, peer, latentode, ...), all with the same thread count
(``OMP_NUM_THREADS`` and ``torch.set_num_threads``). Configurations:

- ``spiral``: the demo's protocol — 1000 spirals of 100 points, full batch, latent 4, tanh RNN
  recognition network, dopri5 at the demo's tolerances (rtol 1e-7, atol 1e-9) — for
  ``--spiral-iterations`` iterations; latentode runs it at the demo's tolerances and, as a
  second row against the same peer runs, at its own defaults (1e-3 / 1e-4).
- ``periodic``: Rubanova et al.'s toy set (1000 series, 50 of 100 points, latent 10, ODE-RNN
  encoder, batch 50) for ``--periodic-epochs`` epochs; latentode records its held-out MSE
  after every epoch, so the time it takes to reach the peer's final test MSE is measured too.
  latentode runs it with its ODE-RNN encoder stepped by Euler, as the peer's is (steps of a
  fiftieth of the time span), and, as a second row, with its default RK4 steps.

Per side: the median and spread (min–max) of the seconds per training iteration, the process
CPU seconds, the peak resident memory of the whole process (imports included) and the
accuracy reached; for the spirals also the forward function evaluations per iteration (the
peer's median, latentode's mean over the iterations), since at the demo's tolerances the cost
of an iteration follows the stiffness of the dynamics each side has learned so far; per
configuration the ratios of the medians (peer / latentode: above 1, latentode is faster or
smaller). The two sides do not score accuracy the same way (the peers
print their own losses), so both figures are recorded as each side reports them, and for the
periodic set the same held-out MSE. Writes ``benchmarks/results/peers.json``; skips with a
reason when the peers folder is absent.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import versions  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_PEERS = HERE.parent.parent / "shared" / "peers"


def _run(command: list[str], *, cwd: Path, threads: int) -> tuple[str, float, float]:
    """Run a command in a fresh process: (stdout, wall seconds, CPU seconds of the child)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, wall, cpu


def _summary_line(stdout: str) -> dict:
    """The JSON of the ``SUMMARY {...}`` line a peer runner prints."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("SUMMARY "):
            return json.loads(line[len("SUMMARY ") :])
    raise RuntimeError("the peer runner printed no SUMMARY line")


def _ours(config: list[str], threads: int, seed: int) -> tuple[dict, float, float]:
    """latentode's side: one configuration of ``suite.py`` in a fresh worker process."""
    command = [sys.executable, str(HERE / "suite.py"), "--worker", *config]
    command += [f"--threads={threads}", f"--seed={seed}"]
    stdout, wall, cpu = _run(command, cwd=HERE, threads=threads)
    return json.loads(stdout.strip().splitlines()[-1]), wall, cpu


def spiral_peer(peers: Path, iterations: int, threads: int, seed: int) -> dict:
    command = [sys.executable, "run_spiral.py", "torchdiffeq_example/latent_ode.py", str(seed)]
    command += ["out_spiral.json", "--", "--niters", str(iterations)]
    stdout, wall, cpu = _run(command, cwd=peers, threads=threads)
    s = _summary_line(stdout)
    return {
        "seconds_per_iteration": s["iter_s_median"],
        "iterations": s["n_iters"],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "peak_rss_mib": s["maxrss_MiB"],
        "nfe_forward_per_iteration": s["nfe_fwd_median"],
        "accuracy": {"loss_mean_last10": s["loss_mean_last10"]},
    }


def spiral_ours(iterations: int, threads: int, seed: int, tolerances: str) -> dict:
    flags = [f"--spiral-iterations={iterations}", "--spiral-data=demo", "--spiral-encoder=rnn"]
    r, wall, cpu = _ours(
        ["spiral", "native", *flags, f"--spiral-tolerances={tolerances}"], threads, seed
    )
    return {
        "seconds_per_iteration": r["seconds_per_iteration"],
        "iterations": r["epochs"],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "peak_rss_mib": r["peak_rss_mib"],
        "nfe_forward_per_iteration": r["nfe_forward_per_iteration"],
        "accuracy": {"final_loss": r["final_loss"], "extrapolation_rmse": r["extrapolation_rmse"]},
    }


def periodic_peer(peers: Path, epochs: int, threads: int, seed: int) -> dict:
    command = [sys.executable, "run_lode.py", "latent_ode", "out_periodic.json", "--"]
    command += ["--niters", str(epochs), "-n", "1000", "-s", "50", "-l", "10"]
    command += ["--dataset", "periodic", "--latent-ode", "--noise-weight", "0.01"]
    command += ["-r", str(1991 + seed)]
    stdout, wall, cpu = _run(command, cwd=peers, threads=threads)
    s = _summary_line(stdout)
    return {
        "seconds_per_iteration": s["train_iter_s_median"],
        "seconds_per_epoch": s["epoch_train_s_median"],
        "training_seconds": s["train_iter_s_median"] * s["n_train_iters"],
        "iterations": s["n_train_iters"],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "peak_rss_mib": s["maxrss_MiB"],
        "accuracy": {"test_mse": s["test_mse_final"], "test_mse_best": s["test_mse_best"]},
    }


def periodic_ours(epochs: int, threads: int, seed: int, encoder_solver: str) -> dict:
    flags = [f"--periodic-epochs={epochs}", "--periodic-eval-every=1"]
    flags.append(f"--periodic-encoder-solver={encoder_solver}")
    r, wall, cpu = _ours(["periodic", "native", *flags], threads, seed)
    return {
        "seconds_per_iteration": r["seconds_per_iteration"],
        "seconds_per_epoch": r["seconds_per_epoch"],
        "training_seconds": r["fit_seconds"],
        "iterations": round(r["epochs"] * r["seconds_per_epoch"] / r["seconds_per_iteration"]),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "peak_rss_mib": r["peak_rss_mib"],
        "accuracy": {"test_mse": r["interpolation_mse"]},
        "mse_curve": r["mse_curve"],
    }


def _side(runs: list[dict]) -> dict:
    """Median and range of each figure over the runs of one side."""
    out = {"runs": runs}
    keys = ("seconds_per_iteration", "cpu_seconds", "peak_rss_mib", "wall_seconds")
    for key in keys + ("nfe_forward_per_iteration",):
        if key not in runs[0]:
            continue
        values = [r[key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def _ratios(peer: dict, ours: dict) -> dict:
    return {
        key: peer[key]["median"] / ours[key]["median"]
        for key in ("seconds_per_iteration", "cpu_seconds", "peak_rss_mib")
    }


def _time_to(peer_runs: list[dict], our_runs: list[dict]) -> dict:
    """latentode's training seconds to the peer's final test MSE (median of the peer runs)."""
    target = statistics.median(r["accuracy"]["test_mse"] for r in peer_runs)
    peer_seconds = statistics.median(r["training_seconds"] for r in peer_runs)
    reached = []
    for r in our_runs:
        hits = [c for c in r["mse_curve"] if c["mse"] <= target]
        reached.append(hits[0]["fit_seconds"] if hits else None)
    done = [s for s in reached if s is not None]
    ours = statistics.median(done) if len(done) == len(reached) else None
    return {
        "target_test_mse": target,
        "peer_training_seconds": peer_seconds,
        "latentode_seconds_per_run": reached,
        "ratio": peer_seconds / ours if ours else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=str(DEFAULT_PEERS), help="the peers folder")
    parser.add_argument("--runs", type=int, default=2, help="runs of each side (>= 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spiral-iterations", type=int, default=100)
    parser.add_argument("--periodic-epochs", type=int, default=10)
    parser.add_argument("--configs", nargs="+", default=["spiral", "periodic"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "peers.json"))
    args = parser.parse_args(argv)
    source = Path(args.peers)
    if not (source / "run_spiral.py").exists():
        print(f"skipped: no peers folder at {source.name!r} (see --peers)")
        return 0
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    configs = {}
    with tempfile.TemporaryDirectory() as folder:
        peers = Path(folder) / "peers"  # the peer scripts write files next to themselves
        shutil.copytree(source, peers)
        for config in args.configs:
            peer_runs, ours = [], {}
            for k in range(args.runs):
                seed = args.seed + k
                if config == "spiral":
                    peer_runs.append(spiral_peer(peers, args.spiral_iterations, args.threads, seed))
                    for tol in ("demo", "library"):
                        ours.setdefault(f"latentode ({tol} tolerances)", []).append(
                            spiral_ours(args.spiral_iterations, args.threads, seed, tol)
                        )
                else:
                    peer_runs.append(periodic_peer(peers, args.periodic_epochs, args.threads, seed))
                    for scheme, name in (("euler", "Euler"), ("rk4", "RK4")):
                        ours.setdefault(f"latentode ({name} encoder)", []).append(
                            periodic_ours(args.periodic_epochs, args.threads, seed, scheme)
                        )
                print(f"{config}: run {k + 1} of {args.runs} done", flush=True)
            peer = _side(peer_runs)
            entry = {"peer": peer, "latentode": {}}
            for name, runs in ours.items():
                side = _side(runs)
                entry["latentode"][name] = side | {"ratios": _ratios(peer, side)}
                if config == "periodic":
                    entry["latentode"][name]["time_to_peer_accuracy"] = _time_to(peer_runs, runs)
            configs[config] = entry
    print(f"\n{'config':9} {'side':32} {'s/iter':>8} {'CPU s':>7} {'peak MiB':>9}  accuracy")
    for config, entry in configs.items():
        rows = [("peer", entry["peer"])] + list(entry["latentode"].items())
        for name, side in rows:
            acc = " ".join(
                f"{k} {statistics.median(r['accuracy'][k] for r in side['runs']):.4g}"
                for k in side["runs"][0]["accuracy"]
            )
            if "nfe_forward_per_iteration" in side:
                acc += f"; NFE/iteration {side['nfe_forward_per_iteration']['median']:.0f}"
            print(
                f"{config:9} {name:32} {side['seconds_per_iteration']['median']:8.4f} "
                f"{side['cpu_seconds']['median']:7.1f} {side['peak_rss_mib']['median']:9.0f}  {acc}"
            )
        for name, side in entry["latentode"].items():
            r = side["ratios"]
            line = (
                f"  {name}: {r['seconds_per_iteration']:.2f}x per iteration, "
                f"{r['cpu_seconds']:.2f}x CPU, {r['peak_rss_mib']:.2f}x memory (peer / latentode)"
            )
            tta = side.get("time_to_peer_accuracy")
            if tta:
                line += f"; to the peer's MSE {tta['target_test_mse']:.4g}: " + (
                    f"{tta['ratio']:.2f}x" if tta["ratio"] else "not reached in every run"
                )
            print(line)
    payload = {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "configuration": vars(args) | {"peers": source.name, "output": Path(args.output).name},
        "configs": configs,
        "versions": versions(),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
