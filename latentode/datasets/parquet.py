"""Series stored in Parquet files and read block by block: data sets larger than memory.

A :class:`ParquetSeries` is a long table — one row per (series, time), one column per
feature — in one Parquet file or a folder of them, with each series' rows contiguous (sorted
by series). Opening it reads the columns once, one row group at a time, to index where every
series starts and to summarise the data (feature means and spreads, the time span): nothing
is kept in memory but that index. :meth:`ParquetSeries.stream` then yields shuffled
mini-batches for training: each epoch visits the row groups in a new random order, reads a
*window* of them (a few thousand series), shuffles the series inside it and cuts it into
batches, so memory stays bounded by the window whatever the size of the data. Batches are
collated in DataLoader worker processes; their order does not depend on the number of
workers, and an epoch can be resumed at any step without reading what came before it.
:func:`write_parquet` writes such files, in row groups small enough to shuffle well.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ._batch import collate
from ._containers import IrregularDataset
from ._convert import _from_pairs, as_dataset

__all__ = ["ParquetSeries", "write_parquet"]

_NAME = "ParquetSeries"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "reading and writing Parquet needs the package pyarrow "
            '(pip install pyarrow, or pip install "latentode[parquet]").'
        ) from None
    return pa, pq


def write_parquet(
    data,
    path,
    *,
    id_col: str = "series",
    time_col: str = "time",
    series_per_group: int = 256,
) -> None:
    """Write series to one Parquet file that :class:`ParquetSeries` reads in small blocks.

    Parameters
    ----------
    data : IrregularDataset (or anything ``as_dataset`` accepts), or an iterable of them
        The series; an iterable of data sets (chunks with the same features) is written one
        chunk at a time, so data larger than memory can be converted chunk by chunk.
    path : str or path-like
        The file to write (replaced if it exists).
    id_col, time_col : str
        Names of the id and time columns; the features keep their names.
    series_per_group : int, default 256
        Series per Parquet row group. A row group is the unit :meth:`ParquetSeries.stream`
        shuffles and reads; smaller groups shuffle better, larger ones read faster.

    Notes
    -----
    Rows are written series by series, each in time order, one row per observation time and
    NaN (a Parquet null) where a feature is not observed.
    """
    pa, pq = _pyarrow()
    if not isinstance(series_per_group, (int, np.integer)) or series_per_group < 1:
        raise ValueError(f"series_per_group must be a positive integer, got {series_per_group!r}.")
    chunks = [data] if _is_one_dataset(data) else data
    writer, names = None, None
    try:
        for chunk in chunks:
            chunk = as_dataset(chunk, name="data")
            if names is None:
                names = chunk.feature_names
                clash = {id_col, time_col} & set(names)
                if clash:
                    raise ValueError(
                        f"write_parquet: feature(s) {sorted(clash)} have the name of the id or "
                        "time column; pass other id_col= / time_col= names."
                    )
            elif chunk.feature_names != names:
                raise ValueError(
                    f"write_parquet: a chunk has features {chunk.feature_names}, the first "
                    f"{names}; every chunk needs the same features in the same order."
                )
            for start in range(0, len(chunk), int(series_per_group)):
                table = _table(pa, chunk[start : start + int(series_per_group)], id_col, time_col)
                if writer is None:
                    writer = pq.ParquetWriter(os.fspath(path), table.schema)
                writer.write_table(table, row_group_size=table.num_rows)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("write_parquet: `data` holds no series; nothing was written.")


def _is_one_dataset(data) -> bool:
    import pandas as pd

    return isinstance(data, (IrregularDataset, pd.DataFrame)) or (
        isinstance(data, list) and data and isinstance(data[0], tuple)
    )


def _table(pa, data: IrregularDataset, id_col: str, time_col: str):
    lengths = [s.n_obs for s in data]
    ids = np.repeat(np.asarray(data.ids, dtype=object), lengths).tolist()
    columns = {id_col: pa.array(ids), time_col: pa.array(np.concatenate([s.times for s in data]))}
    values = np.concatenate([s.values for s in data])
    for j, name in enumerate(data.feature_names):
        col = values[:, j]
        columns[name] = pa.array(col, mask=np.isnan(col))
    return pa.table(columns)


@dataclass(frozen=True)
class _Block:
    """The series that start in one row group: (group, first row, end row) pieces to read."""

    file: int
    pieces: tuple
    n_series: int


class _Moments:
    """Count, mean and sum of squared deviations per feature, merged group by group."""

    def __init__(self, n_features: int):
        self.n = np.zeros(n_features)
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)

    def add(self, values: np.ndarray) -> None:
        seen = ~np.isnan(values)
        n = seen.sum(0).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(values, 0) / np.maximum(n, 1), 0.0)
            m2 = np.nansum(np.where(seen, values - mean, 0.0) ** 2, 0)
        total = self.n + n
        delta = mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean = np.where(total > 0, self.mean + delta * n / np.maximum(total, 1), 0.0)
            self.m2 = self.m2 + m2 + np.where(total > 0, delta**2 * self.n * n / total, 0.0)
        self.n = total


class ParquetSeries:
    """Irregular series in Parquet files, indexed once and read in blocks.

    Parameters
    ----------
    path : str or path-like
        A Parquet file, or a folder whose ``*.parquet`` files (sorted by name) are read in
        turn. One row per observation time: a series id column, a time column and the
        feature columns; null or NaN marks a feature not observed. Each series' rows must be
        contiguous (the table sorted by series) and in one file; :func:`write_parquet` writes
        such files.
    id_col, time_col : str, default "series", "time"
        The id and time columns.
    value_cols : sequence of str, optional
        The feature columns; default every other column.
    time_unit : str, optional
        The unit of the times (e.g. ``"h"``); needed when the time column holds durations.
    window : int, default 4096
        Series shuffled together when streaming: memory holds about ``window`` series per
        reading process (more when row groups hold more series than that).
    workers : int, default 0
        DataLoader worker processes that read and collate while the model trains (0: the
        training process reads). Training is the same for any number of workers.

    Attributes
    ----------
    feature_names : list of str
    n_obs : int
        Rows with at least one observed value.
    t_min, t_max : float
        Earliest and latest observation time.
    mean, std : ndarray of shape (features,)
        Mean and standard deviation of each feature's observed values.

    Notes
    -----
    Opening reads every row group once (the id, time and feature columns) and keeps an
    index of row groups, plus per series its first and last time and which features it
    observes: a few dozen bytes per series. Estimators accept a ``ParquetSeries`` wherever
    ``fit`` takes training series (unsupervised fits), streaming it; ``series(i)`` and
    :meth:`head` give series in memory.

    Examples
    --------
    >>> import os, tempfile
    >>> from latentode.datasets import ParquetSeries, make_periodic, write_parquet
    >>> path = os.path.join(tempfile.mkdtemp(), "periodic.parquet")
    >>> write_parquet(make_periodic(n_series=40, random_state=0).train, path)
    >>> data = ParquetSeries(path, window=1024, workers=2)
    >>> len(data), data.feature_names
    (32, ['value'])
    """

    def __init__(
        self,
        path,
        *,
        id_col="series",
        time_col="time",
        value_cols=None,
        time_unit=None,
        window: int = 4096,
        workers: int = 0,
    ):
        pa, pq = _pyarrow()
        for arg, value, low in (("window", window, 1), ("workers", workers, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{_NAME}: {arg} must be an integer >= {low}, got {value!r}.")
        self.window, self.workers = int(window), int(workers)
        self.path = os.fspath(path)
        self.files = _parquet_files(self.path)
        names = pq.read_schema(self.files[0]).names
        for arg, col in (("id_col", id_col), ("time_col", time_col)):
            if col not in names:
                raise ValueError(
                    f"{_NAME}: {arg}={col!r} is not a column of {os.path.basename(self.files[0])}; "
                    f"columns are {names}."
                )
        if value_cols is None:
            value_cols = [c for c in names if c not in (id_col, time_col)]
        missing = [c for c in value_cols if c not in names]
        if missing or not value_cols:
            raise ValueError(
                f"{_NAME}: value_cols {missing or value_cols} are not feature columns; columns "
                f"are {names}."
            )
        self.id_col, self.time_col = id_col, time_col
        self.feature_names = [str(c) for c in value_cols]
        self.time_unit = time_unit
        self._open = {}
        self._scan(pa, pq)

    # -- the one pass over the data ---------------------------------------------------------
    def _scan(self, pa, pq) -> None:
        moments = _Moments(len(self.feature_names))
        blocks, first, last, observed, rows_seen = [], [], [], [], 0
        seen_ids, t_min, t_max = set(), np.inf, -np.inf
        self._row_groups = []
        for f, file in enumerate(self.files):
            pf = pq.ParquetFile(file)
            self._check_schema(pa, pf.schema_arrow, file)
            previous = None  # the id of the last series of the previous row group
            for g in range(pf.num_row_groups):
                ids, times, values = self._columns(pf.read_row_group(g, columns=self._cols), file)
                self._row_groups.append((f, g))
                if len(ids) == 0:
                    continue
                rows_seen += len(ids)
                moments.add(values)
                new = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
                ends = np.r_[new[1:], len(ids)]
                runs = list(zip(new, ends, strict=True))
                if previous is not None and ids[0] == previous:  # continues into this group
                    s, e = runs.pop(0)
                    blocks[-1] = _Block(
                        f, blocks[-1].pieces + ((g, int(s), int(e)),), blocks[-1].n_series
                    )
                    self._extend(first, last, observed, times[s:e], values[s:e], merge=True)
                for s, e in runs:
                    sid = ids[s]
                    key = sid.item() if isinstance(sid, np.generic) else sid
                    if key in seen_ids:
                        raise ValueError(
                            f"{_NAME}: the rows of series {key!r} are not contiguous (it appears "
                            f"again in row group {g} of {os.path.basename(file)}); sort the "
                            f"table by {self.id_col!r}, or rewrite it with write_parquet."
                        )
                    seen_ids.add(key)
                    self._extend(first, last, observed, times[s:e], values[s:e], merge=False)
                if runs:
                    s0 = int(runs[0][0])
                    blocks.append(_Block(f, ((g, s0, len(ids)),), len(runs)))
                previous = ids[-1]
                ok = ~np.isnan(values).all(1)
                if ok.any():
                    t_min, t_max = min(t_min, times[ok].min()), max(t_max, times[ok].max())
        if not blocks:
            raise ValueError(f"{_NAME}: {self.path!r} holds no rows.")
        self._blocks = blocks
        self._first, self._last = np.asarray(first), np.asarray(last)
        self._observed = np.asarray(observed)
        empty = np.flatnonzero(~self._observed.any(1))
        if len(empty):
            raise ValueError(
                f"{_NAME}: series number {int(empty[0])} (in file order) has no observed value; "
                "drop it from the table."
            )
        never = [n for n, c in zip(self.feature_names, moments.n, strict=True) if c == 0]
        if never:
            raise ValueError(
                f"{_NAME}: feature(s) {never} are never observed; drop those columns or pass "
                "value_cols= without them."
            )
        self.n_obs, self.t_min, self.t_max = int(rows_seen), float(t_min), float(t_max)
        self.mean = moments.mean
        self.std = np.sqrt(moments.m2 / np.maximum(moments.n, 1))
        self._counts = moments.n
        self._ids_digest = hashlib.sha256(repr(sorted(map(repr, seen_ids))).encode()).hexdigest()

    @staticmethod
    def _extend(first, last, observed, times, values, *, merge: bool) -> None:
        ok = ~np.isnan(values).all(1)
        t = times[ok]
        seen = ~np.isnan(values).all(0)
        if merge:
            if len(t):
                first[-1] = min(first[-1], t.min())
                last[-1] = max(last[-1], t.max())
            observed[-1] = observed[-1] | seen
            return
        first.append(t.min() if len(t) else np.inf)
        last.append(t.max() if len(t) else -np.inf)
        observed.append(seen)

    def _check_schema(self, pa, schema, file) -> None:
        names = schema.names
        missing = [c for c in self._cols if c not in names]
        if missing:
            raise ValueError(
                f"{_NAME}: {os.path.basename(file)} has no column(s) {missing}; every file "
                "needs the same columns."
            )
        bad = [
            c
            for c in self.feature_names
            if not (
                pa.types.is_integer(schema.field(c).type)
                or pa.types.is_floating(schema.field(c).type)
            )
        ]
        if bad:
            raise TypeError(
                f"{_NAME}: value_cols {bad} are not real numbers (types "
                f"{[str(schema.field(c).type) for c in bad]}); convert or leave them out."
            )
        kind = schema.field(self.time_col).type
        if pa.types.is_duration(kind) and self.time_unit is None:
            raise ValueError(
                f"{_NAME}: the time column {self.time_col!r} holds durations; pass "
                "time_unit= (e.g. 'h') to count them in."
            )
        if not (
            pa.types.is_duration(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
        ):
            raise TypeError(
                f"{_NAME}: the time column {self.time_col!r} is of type {kind}; give numbers (or "
                "durations with time_unit=) counted from each series' origin."
            )

    @property
    def _cols(self) -> list:
        return [self.id_col, self.time_col, *self.feature_names]

    def _columns(self, table, file):
        """(ids, times, values) of a table: object/int ids, float times, float values."""
        import pyarrow as pa

        ids = table.column(self.id_col)
        if ids.null_count:
            raise ValueError(
                f"{_NAME}: {ids.null_count} rows of {os.path.basename(file)} have no series id "
                f"in {self.id_col!r}; give every row an id or drop those rows."
            )
        ids = ids.to_numpy()
        t = table.column(self.time_col)
        if pa.types.is_duration(t.type):
            import pandas as pd

            ns = t.cast(pa.duration("ns")).cast(pa.int64()).to_numpy(zero_copy_only=False)
            times = ns / pd.Timedelta(1, unit=self.time_unit).value
        else:
            times = t.cast(pa.float64()).to_numpy(zero_copy_only=False)
        values = np.empty((table.num_rows, len(self.feature_names)))
        for j, name in enumerate(self.feature_names):
            values[:, j] = table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(times)
        if bad.any():
            sid = ids[np.flatnonzero(bad)[0]]
            raise ValueError(
                f"{_NAME}: series {sid!r} has a missing or infinite time in "
                f"{os.path.basename(file)}; drop or fix that row."
            )
        return ids, times, values

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._first)

    def __repr__(self) -> str:
        return (
            f"ParquetSeries({len(self)} series, {self.n_obs} rows, {len(self._blocks)} blocks, "
            f"features {self.feature_names})"
        )

    def __getstate__(self):  # open file handles stay in their process
        return {**self.__dict__, "_open": {}}

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return len(self.feature_names)

    @property
    def n_blocks(self) -> int:
        """Number of blocks (row groups where series start)."""
        return len(self._blocks)

    @property
    def typical_span(self) -> float:
        """Median over series of the time from the first to the last observation."""
        return float(np.median(self._last - self._first))

    @property
    def observed_pairs(self) -> int:
        """Number of (series, feature) pairs with at least one observation."""
        return int(self._observed.sum())

    @property
    def observed_values(self) -> np.ndarray:
        """Observed values per feature, shape (features,)."""
        return self._counts.copy()

    def fingerprint(self) -> str:
        """SHA-256 of the files' sizes and the data's summary, to recognise the same data.

        Cheaper than hashing every value: the series ids, row counts, time span and every
        feature's count, mean and spread.
        """
        digest = hashlib.sha256()
        for file in self.files:
            digest.update(f"{os.path.basename(file)}:{os.path.getsize(file)}".encode())
        digest.update(repr((self.feature_names, self.n_obs, self.t_min, self.t_max)).encode())
        for arr in (self._counts, self.mean, self.std, self._first, self._last):
            digest.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        digest.update(self._ids_digest.encode())
        return digest.hexdigest()

    def _file(self, f: int):
        if f not in self._open:
            _, pq = _pyarrow()
            self._open[f] = pq.ParquetFile(self.files[f])
        return self._open[f]

    def read_blocks(self, blocks: Iterable[int]) -> IrregularDataset:
        """The series of some blocks, in memory.

        Parameters
        ----------
        blocks : iterable of int
            Block numbers, ``0 .. n_blocks - 1``.

        Returns
        -------
        IrregularDataset
        """
        import pyarrow as pa

        pairs, ids = [], []
        for b in blocks:
            block = self._blocks[int(b)]
            pf = self._file(block.file)
            pieces = [
                pf.read_row_group(g, columns=self._cols).slice(s, e - s) for g, s, e in block.pieces
            ]
            table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
            sid, t, v = self._columns(table, self.files[block.file])
            starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
            for s, e in zip(starts, np.r_[starts[1:], len(sid)], strict=True):
                ids.append(sid[s].item() if isinstance(sid[s], np.generic) else sid[s])
                pairs.append((t[s:e], v[s:e]))
        return _from_pairs(
            pairs,
            ids=ids,
            feature_names=self.feature_names,
            time_unit=self.time_unit,
            name=_NAME,
            stacklevel=3,
        )

    def head(self, n: int) -> IrregularDataset:
        """The first ``n`` series (in file order) in memory, shape as :meth:`read_blocks`."""
        taken, count = [], 0
        for b, block in enumerate(self._blocks):
            if count >= n:
                break
            taken.append(b)
            count += block.n_series
        return self.read_blocks(taken)[:n]

    # -- shuffled mini-batches -------------------------------------------------------------
    def plan(self, epoch: int, *, batch_size: int, window: int, seed: int, world: int = 1):
        """The mini-batches of one epoch, without reading any data.

        Parameters
        ----------
        epoch, seed : int
            The shuffle is a function of both.
        batch_size : int
            Series per global step; with ``world`` processes each takes
            ``ceil(batch_size / world)``.
        window : int
            Series shuffled together: row groups are taken in random order until a window
            holds at least this many series.
        world : int, default 1
            Processes; each reads its own share of the row groups.

        Returns
        -------
        StreamPlan
        """
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self._blocks))
        local = -(-batch_size // world)
        ranks = []
        for r in range(world):
            windows, steps, current, count = [], [], [], 0
            for b in order[r::world]:
                current.append(int(b))
                count += self._blocks[b].n_series
                if count >= window:
                    windows.append((tuple(current), count))
                    current, count = [], 0
            if current:
                windows.append((tuple(current), count))
            for w, (_, n) in enumerate(windows):
                steps.extend((w, s, min(s + local, n)) for s in range(0, n, local))
            ranks.append((windows, steps))
        n_steps = min(len(steps) for _, steps in ranks)
        sizes = np.zeros(n_steps, dtype=np.int64)
        for _, steps in ranks:
            sizes += [e - s for _, s, e in steps[:n_steps]]
        return StreamPlan(
            epoch=epoch, seed=seed, ranks=tuple(ranks), n_steps=n_steps, global_sizes=sizes
        )

    def stream(
        self,
        plan: StreamPlan,
        *,
        rank: int = 0,
        start: int = 0,
        workers: int = 0,
        times_transform=None,
        values_transform=None,
        dtype: torch.dtype = torch.float32,
    ):
        """Iterate over the batches of ``plan`` that process ``rank`` takes.

        Parameters
        ----------
        plan : StreamPlan
            From :meth:`plan`.
        rank : int, default 0
            This process's place among ``plan``'s processes.
        start : int, default 0
            First step: an interrupted epoch resumes here; earlier windows are not read.
        workers : int, default 0
            DataLoader worker processes that read and collate (0: in this process). The
            batches and their order are the same for any number of workers.
        times_transform, values_transform : callable, optional
            As in :func:`~latentode.datasets.collate` (the estimators' rescaling).
        dtype : torch.dtype, default torch.float32

        Yields
        ------
        (int, Batch)
            The step number and the collated batch: ``times (time,)``,
            ``values``/``mask (batch, time, features)``.
        """
        epoch = _Epoch(self, plan, rank, start, times_transform, values_transform, dtype)
        if workers == 0:
            yield from epoch
            return
        loader = torch.utils.data.DataLoader(
            epoch,
            batch_size=None,
            num_workers=workers,
            collate_fn=_as_is,
            worker_init_fn=_one_thread,
            prefetch_factor=2,
            # the workers draw nothing; their seeds must not come from (and move) the global
            # random stream that the model's draws use
            generator=torch.Generator().manual_seed(0),
        )
        yield from loader


@dataclass(frozen=True)
class StreamPlan:
    """One epoch's mini-batches over a :class:`ParquetSeries` (see :meth:`ParquetSeries.plan`).

    Attributes
    ----------
    epoch, seed : int
    ranks : tuple
        Per process: its windows ``(blocks, n_series)`` and its steps
        ``(window, first, end)`` (positions in the shuffled window).
    n_steps : int
        Steps every process takes (the smallest count over processes).
    global_sizes : ndarray of shape (n_steps,)
        Series per step over all processes: a process weights its loss by its share.
    """

    epoch: int
    seed: int
    ranks: tuple
    n_steps: int
    global_sizes: np.ndarray


def _as_is(item):
    return item


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


class _Epoch(torch.utils.data.IterableDataset):
    """One process's batches of a plan from ``start`` on; worker ``i`` of ``n`` collates
    steps ``start + i``, ``start + i + n``, ..., which the DataLoader hands out in turn."""

    def __init__(self, source, plan, rank, start, times_transform, values_transform, dtype):
        super().__init__()
        self.source, self.plan, self.rank, self.start = source, plan, rank, start
        self.transforms = (times_transform, values_transform)
        self.dtype = dtype

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        windows, steps = self.plan.ranks[self.rank]
        mine = range(self.start + worker, self.plan.n_steps, n_workers)
        by_window: dict[int, list] = {}
        for k in mine:
            by_window.setdefault(steps[k][0], []).append(k)
        for w, ks in by_window.items():  # dicts keep the (increasing) order of steps
            blocks, n = windows[w]
            series = self.source.read_blocks(blocks)
            rng = np.random.default_rng([self.plan.seed, self.plan.epoch, self.rank, w])
            order = rng.permutation(n)
            for k in ks:
                _, s, e = steps[k]
                yield (
                    k,
                    collate(
                        [series[int(i)] for i in order[s:e]],
                        dtype=self.dtype,
                        times_transform=self.transforms[0],
                        values_transform=self.transforms[1],
                    ),
                )


def _parquet_files(path: str) -> list:
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f)
            for f in os.listdir(path)
            if f.endswith((".parquet", ".pq")) and not f.startswith((".", "_"))
        )
        if not files:
            raise ValueError(f"{_NAME}: the folder {path!r} holds no *.parquet files.")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"{_NAME}: {path!r} does not exist; give a Parquet file or folder.")
    return [path]
