"""Out-of-core training: fit from a Parquet data set larger than memory, with bounded memory.

    python benchmarks/out_of_core.py [--series 200000] [--obs 250] [--subset 20000]
                                     [--folder DIR] [--workers 1] [--threads 2] [--device cpu]

Writes a synthetic data set of ``--series`` series with ``--obs`` observation times each
(by default 200,000 series and 50 M observation rows, 4 features each observed at half the
times: damped oscillations on a 0.1-hour grid over 48 hours, like vital signs) as Parquet
row groups of 256 series, then, each in a fresh process:

- ``open``: indexes it (:class:`~latentode.datasets.ParquetSeries`);
- ``stream``: one epoch of ``fit`` streamed from the whole set (``--workers`` DataLoader
  workers reading and collating beside training);
- ``stream-subset`` / ``memory-subset``: one epoch over the first ``--subset`` series, streamed
  from Parquet and, for comparison, from memory (an ``IrregularDataset``).

Reports each part's wall time, series per second and peak resident memory (``ru_maxrss``,
imports included), and writes ``benchmarks/results/out_of_core.json``. The data set is kept
in ``--folder`` (default: a temporary folder, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_worker, write_results  # noqa: E402

GROUP = 256  # series per row group
FEATURES = ["hr", "map", "temp", "resp"]
MODEL = dict(
    latent_dim=8,
    encoder="gru",
    encoder_hidden_dim=32,
    ode_hidden_dim=32,
    decoder_hidden_dim=32,
    batch_size=500,
    max_epochs=1,
    validation_fraction=0.0,  # the same series from memory as streamed
    random_state=0,
    verbose=False,
)


def write_synthetic(path: Path, n_series: int, n_obs: int, seed: int = 0) -> int:
    """Write the data set in row groups of GROUP series; returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    grid = np.round(np.arange(0, 48.0001, 0.1), 1)
    writer, rows = None, 0
    for start in range(0, n_series, GROUP):
        n = min(GROUP, n_series - start)
        # each series: n_obs distinct grid times, sorted
        keys = rng.random((n, grid.size)).argsort(1)[:, :n_obs]
        t = np.sort(grid[keys], axis=1)
        freq = rng.uniform(0.1, 0.6, (n, 1, 1))
        decay = rng.uniform(0.0, 0.05, (n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1, len(FEATURES)))
        level = rng.normal(0, 1, (n, 1, len(FEATURES)))
        x = level + np.exp(-decay * t[..., None]) * np.sin(freq * t[..., None] + phase)
        x = x + rng.normal(0, 0.1, x.shape)
        seen = rng.random(x.shape) < 0.5
        seen[..., 0] |= ~seen.any(-1)  # every row observes something
        x = np.where(seen, x, np.nan).astype(np.float32).reshape(-1, len(FEATURES))
        ids = np.repeat(np.arange(start, start + n), n_obs)
        columns = {"series": pa.array(ids), "time": pa.array(t.reshape(-1))}
        for j, name in enumerate(FEATURES):
            columns[name] = pa.array(x[:, j], mask=np.isnan(x[:, j]))
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=table.num_rows)
        rows += table.num_rows
    writer.close()
    return rows


def worker(part: str, path: str, subset: int, workers: int, threads: int, device: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from latentode import LatentODE
    from latentode.datasets import ParquetSeries, write_parquet
    from latentode.profiling import peak_rss_mib

    model = {**MODEL, "device": device}
    start = time.perf_counter()
    stored = ParquetSeries(path, workers=workers)
    out = {"open_seconds": time.perf_counter() - start, "series": len(stored)}
    if part == "open":
        out.update(rows=stored.n_obs, blocks=stored.n_blocks)
    elif part == "stream":
        start = time.perf_counter()
        LatentODE(**model).fit(stored)
        out["fit_seconds"] = time.perf_counter() - start
    else:
        data = stored.head(subset)
        out["series"] = len(data)
        if part == "stream-subset":
            folder = tempfile.mkdtemp()
            try:
                write_parquet(data, os.path.join(folder, "subset.parquet"), series_per_group=GROUP)
                del data
                source = ParquetSeries(folder, workers=workers)
                start = time.perf_counter()
                LatentODE(**model).fit(source)
                out["fit_seconds"] = time.perf_counter() - start
            finally:
                shutil.rmtree(folder)
        else:
            start = time.perf_counter()
            LatentODE(**model).fit(data)
            out["fit_seconds"] = time.perf_counter() - start
    if "fit_seconds" in out:
        out["series_per_second"] = out["series"] / out["fit_seconds"]
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=200_000)
    parser.add_argument("--obs", type=int, default=250, help="observation times per series")
    parser.add_argument("--subset", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the model trains (cpu, cuda)")
    parser.add_argument("--folder", help="where to keep the data set (default: temporary)")
    parser.add_argument("--parts", default="open,memory-subset,stream-subset,stream")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results/out_of_core.json"))
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        part, path, subset, workers, threads, device = args.worker
        print(json.dumps(worker(part, path, int(subset), int(workers), int(threads), device)))
        return {}
    folder = Path(args.folder or tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"synthetic_{args.series}x{args.obs}.parquet"
    try:
        results = {}
        if not path.exists():
            start = time.perf_counter()
            rows = write_synthetic(path, args.series, args.obs)
            results["write"] = {"seconds": time.perf_counter() - start, "rows": rows}
            print(f"wrote {rows} rows in {results['write']['seconds']:.0f} s", flush=True)
        results["file_mib"] = path.stat().st_size / 2**20
        for part in args.parts.split(","):
            flags = [part, str(path), str(args.subset), str(args.workers), str(args.threads)]
            flags.append(args.device)
            results[part] = run_worker(__file__, flags)
            print(part, json.dumps(results[part]), flush=True)
        if "stream-subset" in results and "memory-subset" in results:
            results["subset_stream_over_memory"] = (
                results["stream-subset"]["series_per_second"]
                / results["memory-subset"]["series_per_second"]
            )
            ratio = results["subset_stream_over_memory"]
            print(f"streamed / in memory, series per second: {ratio:.2f}")
        keys = ("series", "obs", "subset", "workers", "threads", "device")
        config = {k: getattr(args, k) for k in keys}
        write_results(Path(args.output), {"configuration": config, "model": MODEL, **results})
        return results
    finally:
        if not args.folder:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
