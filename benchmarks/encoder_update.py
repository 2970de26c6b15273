"""The ODE-RNN encoder's fused GRU update against ``torch.nn.GRUCell`` stepped per read.

    python benchmarks/encoder_update.py [--blocks 6] [--repeats 15] [--threads 2]

One batch shaped like the periodic set of the peers' comparison (50 series, 50 of 100 grid
times observed at random, one feature, latent 10, hidden 25) is encoded forwards and
backwards by :class:`latentode.recurrent.ODERNNEncoder` as the library runs it — the GRU's
input gates for every read in one product, a series without a read held through its update
gate — and by the same encoder, same parameters and same schedule, stepping
``torch.nn.GRUCell`` at each clock step and holding series without a read with
``torch.where``. The two alternate in blocks of ``--repeats`` batches in one process; per
scheme (Euler, RK4) the median and range over the blocks of the milliseconds per batch, and
the largest difference of the encodings and of the gradients, are printed and written to
``benchmarks/results/encoder_update.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from latentode.recurrent import ODERNNEncoder  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def per_read_cell(enc: ODERNNEncoder, values, mask, times):
    """The encoding with ``enc.cell`` stepped at each clock step (the reference path)."""
    dt, inputs, reading = enc.reads(values, mask, times)
    anyone = reading.any(0).tolist()
    h = values.new_zeros(values.shape[0], enc.hidden_dim)
    for s in range(reading.shape[1]):
        if s > 0:
            h = enc._step(h, dt[:, s - 1, None])
        if anyone[s]:
            h = torch.where(reading[:, s, None], enc.cell(inputs[:, s], h), h)
    loc, raw = enc.out(h).chunk(2, dim=-1)
    return loc, torch.nn.functional.softplus(raw) + 1e-4


def run(path, values, mask, times, repeats: int) -> None:
    """``repeats`` forward and backward passes of one encoding path."""
    for _ in range(repeats):
        loc, scale = path(values, mask, times)
        (loc.sum() + scale.sum()).backward()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "encoder_update.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_series, n_times = 50, 100
    times = torch.linspace(0, 1, n_times)
    mask = torch.zeros(n_series, n_times, 1, dtype=torch.bool)
    for b in range(n_series):
        mask[b, torch.randperm(n_times)[:50]] = True
    values = torch.randn(n_series, n_times, 1)
    results = {}
    for method in ("euler", "rk4"):
        enc = ODERNNEncoder(1, 10, method=method)
        paths = {"fused": enc, "per-read GRUCell": lambda *a, e=enc: per_read_cell(e, *a)}
        grads = {}
        for name, path in paths.items():
            enc.zero_grad()
            loc, scale = path(values, mask, times)
            (loc.sum() + scale.sum()).backward()
            grads[name] = (loc.detach(), [p.grad.clone() for p in enc.parameters()])
        (a, ga), (b, gb) = grads.values()
        gap = max(float((p - q).abs().max()) for p, q in zip(ga, gb, strict=True))
        scale = max(float(p.abs().max()) for p in gb)
        timings = {name: [] for name in paths}
        for _ in range(args.blocks):
            for name, path in paths.items():
                run(path, values, mask, times, 3)  # warm the allocator
                start = time.perf_counter()
                run(path, values, mask, times, args.repeats)
                timings[name].append((time.perf_counter() - start) / args.repeats * 1e3)
        results[method] = {
            name: {"ms_per_batch": statistics.median(v), "min": min(v), "max": max(v)}
            for name, v in timings.items()
        } | {
            "encoding_max_difference": float((a - b).abs().max()),
            "gradient_max_difference": gap,
            "gradient_max_magnitude": scale,
        }
        r = results[method]
        print(
            f"{method:5} fused {r['fused']['ms_per_batch']:.1f} ms, per-read GRUCell "
            f"{r['per-read GRUCell']['ms_per_batch']:.1f} ms per batch (forward and backward); "
            f"encodings differ by {r['encoding_max_difference']:.1e}, gradients by {gap:.1e} "
            f"(largest {scale:.1f})"
        )
    config = vars(args) | {"output": Path(args.output).name}
    write_results(Path(args.output), {"configuration": config, "results": results})
    return results


if __name__ == "__main__":
    main()
