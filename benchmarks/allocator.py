"""Page faults and step time of training with and without the allocator tuning (glibc).

    python benchmarks/allocator.py [--runs 3] [--epochs 12] [--threads 1]

A full-batch fit of 1000 synthetic series (100 times, 2 features, GRU-free ``rnn`` encoder,
latent 4, no validation split) is run in a fresh process per measurement, alternately with
``LATENTODE_MALLOC_TUNING=1`` (the default: freed memory is held between steps) and ``=0``
(glibc's own heuristics). Each process fits one epoch first (its working set is faulted in
either way), then ``--epochs`` more, and reports the minor page faults and seconds of the
second fit per epoch. The machine's transparent-huge-page mode is recorded beside the
figures: with ``always``, a fault maps 2 MiB instead of 4 KiB and the default heuristics
fault far less, so the tuning's effect is a property of the machine, not a constant.
Writes ``benchmarks/results/allocator.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

WORKER = """
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from latentode import LatentODE
from latentode.datasets import from_arrays
epochs = int(sys.argv[2])
rng = np.random.default_rng(0)
t = np.linspace(0.0, 4.0, 100)
phase = rng.uniform(0, 6, size=(1000, 1, 1))
values = np.sin(t[None, :, None] + phase) + 0.1 * rng.normal(size=(1000, 100, 2))
data = from_arrays([(t, v) for v in values])
model = LatentODE(latent_dim=4, encoder="rnn", batch_size=1000, max_epochs=1,
                  validation_fraction=0.0, random_state=0)
model.fit(data)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
model.set_params(max_epochs=epochs).fit(data)
seconds = time.perf_counter() - start
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults_per_epoch": faults / epochs, "s_per_epoch": seconds / epochs}))
"""


def huge_pages() -> str | None:
    """The bracketed transparent-huge-page mode (``always``, ``madvise``, ``never``), if known."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text.strip()


def measure(tuning: str, threads: int, epochs: int) -> dict:
    env = {**os.environ, "LATENTODE_MALLOC_TUNING": tuning}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(threads), str(epochs)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker (tuning={tuning}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "allocator.json"
    )
    args = parser.parse_args(argv)
    runs = {"held": [], "default": []}
    for _ in range(args.runs):  # alternate, so drift in the machine's load hits both sides
        runs["held"].append(measure("1", args.threads, args.epochs))
        runs["default"].append(measure("0", args.threads, args.epochs))
    summary = {
        side: {
            key: statistics.median(r[key] for r in rs)
            for key in ("faults_per_epoch", "s_per_epoch")
        }
        for side, rs in runs.items()
    }
    for side, s in summary.items():
        print(
            f"{side:>8}: {s['faults_per_epoch']:9.0f} page faults/epoch, "
            f"{s['s_per_epoch']:.3f} s/epoch (median of {args.runs})"
        )
    payload = {
        "config": {"runs": args.runs, "epochs": args.epochs, "threads": args.threads},
        "transparent_huge_pages": huge_pages(),
        "runs": runs,
        "median": summary,
    }
    write_results(args.output, payload)
    return payload


if __name__ == "__main__":
    main()
