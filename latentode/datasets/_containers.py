"""Containers for irregularly sampled series and the collation of mini-batches.

A series is its own observation times and a ``(n_obs, n_features)`` array of values in which
NaN means "not observed". A data set is an ordered collection of such series that share
feature names. A :class:`Batch` is a mini-batch laid on the union of its series' time points,
with an observation mask.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr

__all__ = [
    "IrregularSeries",
    "IrregularDataset",
    "Batch",
    "collate",
    "from_pandas",
    "from_arrays",
    "as_dataset",
]


@dataclass(frozen=True, eq=False)
class IrregularSeries:
    """One irregularly sampled, possibly partially observed, multivariate series.

    Parameters
    ----------
    id : hashable
        The series' identifier (patient id, sensor id, ...).
    times : ndarray of shape (n_obs,)
        Observation times in the user's units, strictly increasing.
    values : ndarray of shape (n_obs, n_features)
        Observed values; NaN marks a feature not observed at that time.

    Notes
    -----
    Build series through :func:`from_arrays`, :func:`from_pandas` or :func:`as_dataset`, which
    validate and normalise the input; the constructor itself only stores.
    """

    id: object
    times: np.ndarray
    values: np.ndarray

    @property
    def n_obs(self) -> int:
        """Number of observation times."""
        return int(self.times.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """Boolean array of shape (n_obs, n_features), True where a value is observed."""
        return ~np.isnan(self.values)


class IrregularDataset(Sequence):
    """An ordered collection of irregular series sharing feature names.

    Parameters
    ----------
    series : sequence of IrregularSeries
        The series, each with ``values`` of shape (n_obs_i, n_features).
    feature_names : sequence of str
        One name per feature column.

    Examples
    --------
    >>> import numpy as np
    >>> from latentode.datasets import from_arrays
    >>> data = from_arrays([(np.array([0.0, 0.5]), np.array([[1.0], [2.0]]))])
    >>> len(data), data.n_features
    (1, 1)
    """

    def __init__(self, series: Sequence[IrregularSeries], feature_names: Sequence[str]):
        self._series = list(series)
        self.feature_names = [str(f) for f in feature_names]

    # -- sequence protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._series)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._series[int(key)]
        if isinstance(key, slice):
            return IrregularDataset(self._series[key], self.feature_names)
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return IrregularDataset([self._series[int(i)] for i in idx], self.feature_names)

    def __repr__(self) -> str:
        n_obs = [s.n_obs for s in self._series]
        span = f", {min(n_obs)}-{max(n_obs)} observation times each" if n_obs else ""
        return (
            f"IrregularDataset({len(self)} series, {self.n_features} features "
            f"{self.feature_names}{span})"
        )

    # -- properties ------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return len(self.feature_names)

    @property
    def ids(self) -> list:
        """Series identifiers, in order."""
        return [s.id for s in self._series]

    @property
    def t_min(self) -> float:
        """Earliest observation time over all series."""
        return float(min(s.times[0] for s in self._series))

    @property
    def t_max(self) -> float:
        """Latest observation time over all series."""
        return float(max(s.times[-1] for s in self._series))

    def split_at(self, time: float) -> tuple[IrregularDataset, IrregularDataset]:
        """Split every series into its observations before ``time`` and from ``time`` on.

        The extrapolation protocol: condition on the first part, score the second. Only the
        series observed on both sides are kept, in order and with their ids.

        Parameters
        ----------
        time : float
            In the series' time unit.

        Returns
        -------
        before, after : IrregularDataset
            Observations at times ``< time`` and ``>= time``; the same series in each.

        Raises
        ------
        ValueError
            If no series is observed on both sides of ``time``.
        """
        time = float(time)
        before, after = [], []
        for s in self._series:
            early = s.times < time
            if early.any() and not early.all():
                before.append(IrregularSeries(s.id, s.times[early], s.values[early]))
                after.append(IrregularSeries(s.id, s.times[~early], s.values[~early]))
        if not before:
            raise ValueError(
                f"split_at: no series has observations both before and from time={time} "
                f"(observed times span {self.t_min} to {self.t_max}); pick a time inside them."
            )
        return (IrregularDataset(before, self.feature_names),
                IrregularDataset(after, self.feature_names))  # fmt: skip

    # -- conversion ------------------------------------------------------------------------
    def to_pandas(self, *, id_name: str = "series", time_name: str = "time") -> pd.DataFrame:
        """Return the data as a frame indexed by (series id, time), one column per feature.

        Returns
        -------
        DataFrame of shape (total observation times, n_features)
        """
        ids = np.concatenate([np.full(s.n_obs, i) for i, s in enumerate(self._series)])
        id_values = [self._series[i].id for i in ids]
        times = np.concatenate([s.times for s in self._series])
        values = np.concatenate([s.values for s in self._series], axis=0)
        index = pd.MultiIndex.from_arrays([id_values, times], names=[id_name, time_name])
        return pd.DataFrame(values, index=index, columns=self.feature_names)

    def to_xarray(self, *, name: str = "values") -> xr.DataArray:
        """Return the data on the union of the series' times, NaN where not observed.

        The inverse of :func:`from_xarray`: ``from_xarray(data.to_xarray())`` gives the same
        series (rows with nothing observed are where another series was observed).

        Parameters
        ----------
        name : str, default "values"

        Returns
        -------
        xarray.DataArray of shape (series, time, feature)
            Coordinates: series ids, the union of observation times, feature names.
        """
        grid = np.unique(np.concatenate([s.times for s in self._series]))
        out = np.full((len(self), grid.size, self.n_features), np.nan)
        for i, s in enumerate(self._series):
            out[i, np.searchsorted(grid, s.times)] = s.values
        return xr.DataArray(
            out,
            dims=("series", "time", "feature"),
            coords={
                "series": np.asarray(self.ids, dtype=object),
                "time": grid,
                "feature": list(self.feature_names),
            },
            name=name,
        )


@dataclass
class Batch:
    """A mini-batch of series laid on the union of their observation times.

    Attributes
    ----------
    times : Tensor of shape (time,)
        Sorted union of the series' observation times (in whatever units they were given).
    values : Tensor of shape (batch, time, features)
        Observed values, 0 where not observed.
    mask : BoolTensor of shape (batch, time, features)
        True where a value is observed.
    ids : list
        Series identifiers, length ``batch``.
    encode_mask : BoolTensor of shape (batch, time, features) or None
        When set (see :meth:`truncate_encoder`), the observations the recognition network may
        read; the likelihood still scores all of ``mask``.
    labels : LongTensor of shape (batch,) or None
        Class index of each series, for supervised training.
    obs_weight : Tensor of shape (batch, 1, features) or None
        When set (see :meth:`weight_pairs`), the weight of each (series, feature) pair's
        observations in the training likelihood; None weights every observation by 1.
    """

    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    ids: list
    encode_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    obs_weight: torch.Tensor | None = None

    @property
    def observed(self) -> torch.Tensor:
        """BoolTensor of shape (batch, time): True where any feature is observed."""
        return self.mask.any(-1)

    def rows(self, index: torch.Tensor) -> Batch:
        """The series at positions ``index``, in that order, on the same time grid.

        Parameters
        ----------
        index : LongTensor of shape (n,)

        Returns
        -------
        Batch
            ``values, mask (n, time, features)``; copies, so the batch itself is left as it is.
        """
        index = torch.as_tensor(index, dtype=torch.long)
        picked = {
            f.name: getattr(self, f.name)[index.to(getattr(self, f.name).device)]
            for f in dataclasses.fields(self)
            if f.name != "times" and torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, ids=[self.ids[i] for i in index.tolist()], **picked)

    def to(self, device) -> Batch:
        """Return the batch on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, **moved)

    def subsample(self, keep: float, *, generator: torch.Generator | None = None) -> Batch:
        """Randomly hide observed time points, keeping each with probability ``keep``.

        All features of a time point are hidden together; a series that would lose every
        point keeps its original observations. Used as training-time augmentation
        (Rubanova et al. 2019 subsample a fraction of the observed points).

        Parameters
        ----------
        keep : float in (0, 1]
            Probability of keeping each observed time point of each series.
        generator : torch.Generator, optional
            On the CPU; drives the draw.

        Returns
        -------
        Batch
            Same ``times``; ``values`` and ``mask`` of shape (batch, time, features) with the
            hidden points unobserved (value 0).
        """
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be in (0, 1]; got {keep!r}.")
        if keep == 1:
            return self
        draw = torch.rand(self.mask.shape[:2], generator=generator).to(self.mask.device)
        rows = self.observed & (draw < keep)
        empty = ~rows.any(-1)
        rows = torch.where(empty[:, None], self.observed, rows)
        mask = self.mask & rows[..., None]
        encode = None if self.encode_mask is None else self.encode_mask & mask
        return dataclasses.replace(self, values=self.values * mask, mask=mask, encode_mask=encode)

    def weight_pairs(self, scale: float) -> Batch:
        """Give every observed (series, feature) pair the same total weight ``scale``.

        Each observation of feature ``d`` in series ``b`` gets the weight ``scale / n_bd``,
        where ``n_bd`` is how often ``d`` is observed in ``b`` (in ``mask``, so after any
        :meth:`subsample`): a channel measured twice counts as much as one measured a hundred
        times, as in the per-(series, feature) averages of
        :func:`latentode.metrics.series_feature_mse`.

        Parameters
        ----------
        scale : float
            Total weight of a pair; the mean number of observations per observed pair of the
            training data keeps the likelihood's overall weight against the KL term.

        Returns
        -------
        Batch
            With ``obs_weight`` of shape (batch, 1, features), 0 for pairs never observed.
        """
        if not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
            raise ValueError(f"scale must be a positive number; got {scale!r}.")
        count = self.mask.sum(1, keepdim=True, dtype=self.values.dtype)
        weight = torch.where(count > 0, scale / count.clamp(min=1), torch.zeros_like(count))
        return dataclasses.replace(self, obs_weight=weight)

    def truncate_encoder(
        self, low: float, *, generator: torch.Generator | None = None
    ) -> Batch:
        """Let the encoder read only an early part of each series (forecast training).

        For each series a fraction ``u ~ Uniform(low, 1)`` is drawn and the encoder sees the
        observations up to ``first + u * (last - first)`` of its observed span (at least the
        first one); the likelihood still scores every observation, so the model learns to
        carry ``z0`` inferred from the early part over the rest.

        Parameters
        ----------
        low : float in (0, 1]
            Smallest fraction of the span shown; 1 leaves the batch as it is.
        generator : torch.Generator, optional
            On the CPU; drives the draw.

        Returns
        -------
        Batch
            With ``encode_mask`` of shape (batch, time, features).
        """
        if not 0 < low <= 1:
            raise ValueError(f"low must be in (0, 1]; got {low!r}.")
        if low == 1:
            return self
        observed = self.observed
        t = self.times.expand(observed.shape)
        first = torch.where(observed, t, torch.inf).amin(-1)
        last = torch.where(observed, t, -torch.inf).amax(-1)
        u = low + (1 - low) * torch.rand(observed.shape[0], generator=generator)
        cut = first + u.to(t.device, t.dtype) * (last - first)
        rows = observed & (t <= cut[:, None])
        return dataclasses.replace(self, encode_mask=self.mask & rows[..., None])


def collate(
    series: Iterable[IrregularSeries],
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    times_transform=None,
    values_transform=None,
) -> Batch:
    """Lay a list of series on the union of their time points.

    Parameters
    ----------
    series : iterable of IrregularSeries
        Series with equal numbers of features.
    dtype : torch.dtype, default torch.float32
        Floating dtype of the returned tensors.
    device : torch.device or str, optional
        Where the tensors live.
    times_transform, values_transform : callable, optional
        Applied to the union grid ``(time,)`` and to the values array ``(batch, time, features)``
        (NumPy, NaN = missing) before conversion; the estimators use them to rescale.

    Returns
    -------
    Batch
        ``times (time,)``, ``values (batch, time, features)``, ``mask (batch, time, features)``.
    """
    series = list(series)
    if not series:
        raise ValueError("collate() needs at least one series; got an empty list.")
    all_times = np.concatenate([s.times for s in series])
    grid = np.unique(all_times)
    n_features = series[0].values.shape[1]
    dense = np.full((len(series), grid.shape[0], n_features), np.nan)
    # one scatter for the whole batch: row b takes series b's values at its grid positions
    rows = np.repeat(np.arange(len(series)), [len(s.times) for s in series])
    dense[rows, np.searchsorted(grid, all_times)] = np.concatenate([s.values for s in series])
    if times_transform is not None:
        grid = times_transform(grid)
    if values_transform is not None:
        dense = values_transform(dense)
    mask = ~np.isnan(dense)
    values = np.where(mask, dense, 0.0)
    return Batch(
        times=torch.as_tensor(grid, dtype=dtype, device=device),
        values=torch.as_tensor(values, dtype=dtype, device=device),
        mask=torch.as_tensor(mask, device=device),
        ids=[s.id for s in series],
    )


# -- the validation gate ------------------------------------------------------------------
def _to_float(a: np.ndarray, *, name: str, series_id, what: str, advice: str) -> np.ndarray:
    if np.iscomplexobj(a):
        raise TypeError(
            f"{name}: series {series_id!r} has complex {what}; pass real numbers (e.g. the real "
            "and imaginary parts as two features)."
        )
    try:
        return a.astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: series {series_id!r} has non-numeric {what} (dtype {a.dtype}); {advice}."
        ) from None


def _as_time_array(times, *, name: str, series_id, time_unit: str | None) -> np.ndarray:
    t = np.asarray(times)
    if t.dtype == object and t.size and isinstance(t.flat[0], (pd.Timedelta, dt.timedelta)):
        t = pd.to_timedelta(t).to_numpy()
    if np.issubdtype(t.dtype, np.datetime64) or (
        t.dtype == object and t.size and isinstance(t.flat[0], (pd.Timestamp, dt.datetime))
    ):
        raise TypeError(
            f"{name}: series {series_id!r} has datetime times; convert them to elapsed time "
            "from a reference (the series' start, an admission time) first, e.g. "
            "df.time - df.groupby(id_col).time.transform('min'), then pass time_unit."
        )
    if np.issubdtype(t.dtype, np.timedelta64):
        if time_unit is None:
            raise TypeError(
                f"{name}: series {series_id!r} has timedelta times; build the data with "
                "from_pandas(..., time_unit='h') or from_arrays(..., time_unit='h') to say in "
                "which unit time is counted."
            )
        t = t / pd.Timedelta(1, unit=time_unit).to_timedelta64()
    t = _to_float(
        t, name=name, series_id=series_id, what="times", advice="pass numbers in your time unit"
    )
    if t.ndim != 1:
        raise ValueError(
            f"{name}: series {series_id!r} has times of shape {t.shape}; expected (n_obs,)."
        )
    if not np.all(np.isfinite(t)):
        bad = t[~np.isfinite(t)][0]
        raise ValueError(
            f"{name}: series {series_id!r} has a non-finite time ({bad}); every observation "
            "needs a finite time — drop or fix those rows."
        )
    return t


def _normalise_series(
    series_id, times, values, *, name: str, n_features: int | None, time_unit: str | None
):
    t = _as_time_array(times, name=name, series_id=series_id, time_unit=time_unit)
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(
            f"{name}: series {series_id!r} has values of shape {v.shape}; expected "
            "(n_obs, n_features)."
        )
    v = _to_float(
        v,
        name=name,
        series_id=series_id,
        what="values",
        advice="select numeric feature columns only",
    )
    if v.shape[0] != t.shape[0]:
        raise ValueError(
            f"{name}: series {series_id!r} has {t.shape[0]} times but {v.shape[0]} rows of "
            "values; they must match."
        )
    if n_features is not None and v.shape[1] != n_features:
        raise ValueError(
            f"{name}: series {series_id!r} has {v.shape[1]} features, the others "
            f"{n_features}; all series must share the same features."
        )
    if np.isinf(v).any():
        raise ValueError(
            f"{name}: series {series_id!r} contains an infinite value; use NaN for 'not "
            "observed' and fix or drop infinite readings."
        )
    # drop rows with nothing observed, sort, merge duplicate times
    keep = ~np.isnan(v).all(axis=1)
    t, v = t[keep], v[keep]
    if t.shape[0] == 0:
        raise ValueError(
            f"{name}: series {series_id!r} has no observed value; remove it or give it at "
            "least one observation."
        )
    unsorted = bool(np.any(np.diff(t) < 0))
    if unsorted:
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
    if np.any(np.diff(t) == 0):
        t, v = _merge_duplicate_times(t, v, name=name, series_id=series_id)
    return t, v, unsorted


def _merge_duplicate_times(t, v, *, name, series_id):
    uniq, inverse = np.unique(t, return_inverse=True)
    merged = np.full((uniq.shape[0], v.shape[1]), np.nan)
    for row, slot in enumerate(inverse):
        for d in np.flatnonzero(~np.isnan(v[row])):
            old = merged[slot, d]
            if np.isnan(old):
                merged[slot, d] = v[row, d]
            elif old != v[row, d]:
                raise ValueError(
                    f"{name}: series {series_id!r} has two different values ({old} and "
                    f"{v[row, d]}) for feature {d} at time {uniq[slot]}; keep one of them."
                )
    return uniq, merged


def from_arrays(
    data: Iterable,
    *,
    ids: Sequence | None = None,
    feature_names: Sequence[str] | None = None,
    time_unit: str | None = None,
) -> IrregularDataset:
    """Build a data set from ``(times, values)`` pairs.

    Parameters
    ----------
    data : iterable of (times, values)
        ``times`` of shape (n_obs_i,), ``values`` of shape (n_obs_i, n_features) or (n_obs_i,);
        NumPy arrays, lists or tensors (any device, any real dtype). NaN marks "not
        observed". Times are finite numbers in one unit from a common origin; negative times
        (before that origin) are fine.
    ids : sequence, optional
        Series identifiers; default ``0 .. n_series - 1``.
    feature_names : sequence of str, optional
        Default ``x0, x1, ...``.
    time_unit : str, optional
        Needed when times are timedeltas: the unit in which they are counted, e.g. ``"h"``,
        ``"min"``, ``"D"`` (anything ``pd.Timedelta(1, unit=...)`` accepts).

    Returns
    -------
    IrregularDataset
        Times sorted (with one warning), duplicate times merged per feature, fully missing
        rows dropped.

    Raises
    ------
    ValueError, TypeError
        Naming the series and the offending value: infinite values, non-finite or non-numeric
        times, datetimes, complex or non-numeric values, a series with nothing observed,
        conflicting values at one time, shapes that do not match.
    """
    return _from_pairs(data, ids=ids, feature_names=feature_names, time_unit=time_unit,
                       name="data", stacklevel=3)  # fmt: skip


def _from_pairs(data, *, ids, feature_names, time_unit, name, stacklevel) -> IrregularDataset:
    pairs = list(data)
    if not pairs:
        raise ValueError(f"{name} is empty; pass at least one (times, values) pair.")
    if ids is None:
        ids = list(range(len(pairs)))
    elif len(ids) != len(pairs):
        raise ValueError(f"{name}: got {len(ids)} ids for {len(pairs)} series.")
    series = []
    n_features = None
    unsorted = []
    for sid, pair in zip(ids, pairs, strict=True):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(
                f"{name}: series {sid!r} is a {type(pair).__name__}; each item must be a "
                "(times, values) pair."
            )
        times, values = (_tensor_to_numpy(x) for x in pair)
        t, v, was_unsorted = _normalise_series(
            sid, times, values, name=name, n_features=n_features, time_unit=time_unit
        )
        if was_unsorted:
            unsorted.append(sid)
        n_features = v.shape[1]
        series.append(IrregularSeries(sid, t, v))
    if unsorted:
        warnings.warn(
            f"{name}: {len(unsorted)} series had unsorted times and were sorted (first: "
            f"{unsorted[0]!r}).",
            stacklevel=stacklevel,
        )
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(n_features)]
    elif len(feature_names) != n_features:
        raise ValueError(f"{name}: {len(feature_names)} feature_names for {n_features} features.")
    return IrregularDataset(series, feature_names)


def _tensor_to_numpy(x):
    """Tensors on any device and of any real dtype (bfloat16 included) to float64 NumPy."""
    if not torch.is_tensor(x):
        return x
    x = x.detach().cpu()
    return x.numpy() if x.is_complex() else x.to(torch.float64).numpy()


def from_pandas(
    df: pd.DataFrame,
    *,
    id_col: str,
    time_col: str,
    value_cols: Sequence[str] | None = None,
    time_unit: str | None = None,
) -> IrregularDataset:
    """Build a data set from a long frame: one row per (series, time), one column per feature.

    Parameters
    ----------
    df : DataFrame
        The long frame. Missing values (NaN) mean "not observed".
    id_col : str
        Column holding the series identifier.
    time_col : str
        Column holding observation times: numbers, or timedeltas with ``time_unit``.
    value_cols : sequence of str, optional
        Feature columns; default all other columns. Nullable dtypes (``Float64``, ``Int64``)
        work, ``pd.NA`` meaning "not observed".
    time_unit : str, optional
        Unit in which timedelta times are counted, e.g. ``"h"``.

    Returns
    -------
    IrregularDataset

    Raises
    ------
    ValueError, TypeError
        Unknown or non-numeric columns, missing series ids, and every case of
        :func:`from_arrays`, naming the series.
    """
    return _from_long(df, id_col=id_col, time_col=time_col, value_cols=value_cols,
                      time_unit=time_unit, name="from_pandas")  # fmt: skip


def _from_long(df, *, id_col, time_col, value_cols, time_unit, name) -> IrregularDataset:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name}: `df` must be a pandas DataFrame, got {type(df).__name__}.")
    for arg, col in (("id_col", id_col), ("time_col", time_col)):
        if col not in df.columns:
            raise ValueError(
                f"{name}: {arg}={col!r} is not a column; columns are {list(df.columns)}."
            )
    if value_cols is None:
        value_cols = [c for c in df.columns if c not in (id_col, time_col)]
    missing = [c for c in value_cols if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name}: value_cols {missing} are not columns; columns are {list(df.columns)}."
        )
    if not value_cols:
        raise ValueError(f"{name}: no feature columns; pass value_cols.")
    non_numeric = [
        c
        for c in value_cols
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_complex_dtype(df[c])
    ]
    if non_numeric:
        raise TypeError(
            f"{name}: value_cols {non_numeric} are not real numbers (dtypes "
            f"{[str(df[c].dtype) for c in non_numeric]}); convert or drop them."
        )
    if df.empty:
        raise ValueError(f"{name}: `df` has no rows; pass at least one observation.")
    no_id = df[id_col].isna()
    if no_id.any():
        raise ValueError(
            f"{name}: {int(no_id.sum())} rows have a missing series id in {id_col!r} (first at "
            f"index {df.index[no_id.to_numpy()][0]!r}); give every row an id or drop those rows."
        )
    ids, series = [], []
    times = df[time_col]
    if pd.api.types.is_numeric_dtype(times) and not pd.api.types.is_bool_dtype(times):
        times = times.astype("float64")  # nullable Int64/Float64: pd.NA becomes NaN
    values = df[list(value_cols)].astype("float64")
    for sid, rows in df.groupby(id_col, sort=False).indices.items():
        ids.append(sid.item() if isinstance(sid, np.generic) else sid)  # plain Python ids
        series.append((times.iloc[rows].to_numpy(), values.iloc[rows].to_numpy()))
    return _from_pairs(series, ids=ids, feature_names=[str(c) for c in value_cols],
                       time_unit=time_unit, name=name, stacklevel=4)  # fmt: skip


def _from_panel(df: pd.DataFrame, *, name: str) -> IrregularDataset:
    if not isinstance(df.index, pd.MultiIndex) or df.index.nlevels != 2:
        raise ValueError(
            f"{name}: a DataFrame must be indexed by (series id, time) — a 2-level MultiIndex — "
            "with one column per feature; use df.set_index([id_col, time_col]) or "
            "latentode.datasets.from_pandas for a long frame."
        )
    id_name, time_name = df.index.names
    id_name = id_name or "__series__"
    time_name = time_name or "__time__"
    flat = df.copy()
    flat.index = flat.index.set_names([id_name, time_name])
    flat = flat.reset_index()
    return _from_long(flat, id_col=id_name, time_col=time_name, value_cols=list(df.columns),
                      time_unit=None, name=name)  # fmt: skip


def from_xarray(
    data,
    *,
    series_dim: str = "series",
    time_dim: str = "time",
    feature_dim: str = "feature",
    time_unit: str | None = None,
) -> IrregularDataset:
    """Build a data set from an xarray grid, NaN meaning "not observed".

    Parameters
    ----------
    data : xarray.DataArray or xarray.Dataset
        A DataArray of dims (series, time, feature) or (series, time) (one feature, named
        after the array); or a Dataset whose data variables, each of dims (series, time), are
        the features. Other dims are an error; the order of dims does not matter.
    series_dim, time_dim, feature_dim : str
        Names of the dims. Their coordinates give series ids, times and feature names.
    time_unit : str, optional
        Unit in which timedelta times are counted, e.g. ``"h"``.

    Returns
    -------
    IrregularDataset
        One series per entry of ``series_dim``, holding the times at which it has at least one
        observed value.

    Raises
    ------
    ValueError, TypeError
        Wrong dims, a series with no observation, and every case of :func:`from_arrays`.
    """
    name = "from_xarray"
    if isinstance(data, xr.Dataset):
        if not data.data_vars:
            raise ValueError(f"{name}: the Dataset has no data variables to use as features.")
        for var, arr in data.data_vars.items():
            if set(arr.dims) != {series_dim, time_dim}:
                raise ValueError(
                    f"{name}: data variable {var!r} has dims {arr.dims}; every feature of a "
                    f"Dataset needs dims ({series_dim!r}, {time_dim!r}) — or pass a DataArray "
                    f"with a {feature_dim!r} dim."
                )
        data = data.to_dataarray(dim=feature_dim)
    elif not isinstance(data, xr.DataArray):
        raise TypeError(
            f"{name}: `data` must be an xarray DataArray or Dataset, got {type(data).__name__}."
        )
    elif feature_dim not in data.dims:
        data = data.expand_dims({feature_dim: [str(data.name) if data.name else "x0"]}, -1)
    if set(data.dims) != {series_dim, time_dim, feature_dim}:
        raise ValueError(
            f"{name}: `data` has dims {data.dims}; expected ({series_dim!r}, {time_dim!r}, "
            f"{feature_dim!r}) — name them with series_dim=, time_dim=, feature_dim=."
        )
    data = data.transpose(series_dim, time_dim, feature_dim)
    times = data[time_dim].values
    features = [str(f) for f in data[feature_dim].values]
    ids, pairs = [], []
    values = np.asarray(data.values)
    for i, sid in enumerate(data[series_dim].values):
        sid = sid.item() if isinstance(sid, np.generic) else sid  # plain Python ids
        v = _to_float(values[i], name=name, series_id=sid, what="values",
                      advice="pass real numbers")  # fmt: skip
        rows = ~np.isnan(v).all(axis=1)
        if not rows.any():
            raise ValueError(
                f"{name}: series {sid!r} has no observed value; drop it "
                f"(data.dropna({series_dim!r}, how='all')) or fill it in."
            )
        ids.append(sid)
        pairs.append((times[rows], v[rows]))
    return _from_pairs(pairs, ids=ids, feature_names=features, time_unit=time_unit, name=name,
                       stacklevel=3)  # fmt: skip


def as_dataset(X, *, name: str = "X") -> IrregularDataset:
    """The validation gate: turn any supported input into an :class:`IrregularDataset`.

    Parameters
    ----------
    X : IrregularDataset, DataFrame, xarray object, IrregularSeries, or list of (times, values)
        A DataFrame must be indexed by (series id, time) with one column per feature; an
        xarray DataArray or Dataset as :func:`from_xarray` takes it (default dim names).
    name : str
        The argument's name, used in error messages.

    Returns
    -------
    IrregularDataset
    """
    if isinstance(X, IrregularDataset):
        if len(X) == 0:
            raise ValueError(f"{name} is an empty data set; pass at least one series.")
        return X
    if isinstance(X, IrregularSeries):
        return IrregularDataset([X], [f"x{i}" for i in range(X.values.shape[1])])
    if isinstance(X, pd.DataFrame):
        if X.empty:
            raise ValueError(f"{name} is an empty DataFrame; pass at least one observation.")
        return _from_panel(X, name=name)
    if isinstance(X, (xr.DataArray, xr.Dataset)):
        return from_xarray(X)
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(f"{name} is empty; pass at least one (times, values) pair.")
        return _from_pairs(X, ids=None, feature_names=None, time_unit=None, name=name,
                           stacklevel=4)  # fmt: skip
    raise TypeError(
        f"{name} must be an IrregularDataset, a DataFrame indexed by (series id, time), an "
        f"xarray DataArray (series, time, feature), or a list of (times, values) pairs; got "
        f"{type(X).__name__}."
    )
