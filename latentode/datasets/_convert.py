"""The input gate: user data (arrays, pandas, xarray) to a validated data set.

Every entry point of the package turns its data into an
:class:`~latentode.datasets.IrregularDataset` through :func:`as_dataset`, which sorts times,
merges duplicate time stamps, drops empty rows, converts time units and otherwise raises
``ValueError``/``TypeError`` naming the argument and the series.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ._containers import IrregularDataset, IrregularSeries

__all__ = ["as_dataset", "from_arrays", "from_pandas", "from_xarray"]


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
    return _from_pairs(
        data, ids=ids, feature_names=feature_names, time_unit=time_unit, name="data", stacklevel=3
    )


def _from_pairs(data, *, ids, feature_names, time_unit, name, stacklevel) -> IrregularDataset:
    if time_unit is not None:
        try:
            pd.Timedelta(1, unit=time_unit)
        except (ValueError, TypeError):
            raise ValueError(
                f"time_unit={time_unit!r} is not a unit of time; use e.g. 's', 'min', 'h' or 'D'."
            ) from None
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
    return IrregularDataset(series, feature_names, time_unit=time_unit)


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
    return _from_long(
        df,
        id_col=id_col,
        time_col=time_col,
        value_cols=value_cols,
        time_unit=time_unit,
        name="from_pandas",
    )


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
    return _from_pairs(
        series,
        ids=ids,
        feature_names=[str(c) for c in value_cols],
        time_unit=time_unit,
        name=name,
        stacklevel=4,
    )


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
    return _from_long(
        flat,
        id_col=id_name,
        time_col=time_name,
        value_cols=list(df.columns),
        time_unit=None,
        name=name,
    )


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
        v = _to_float(
            values[i], name=name, series_id=sid, what="values", advice="pass real numbers"
        )
        rows = ~np.isnan(v).all(axis=1)
        if not rows.any():
            raise ValueError(
                f"{name}: series {sid!r} has no observed value; drop it "
                f"(data.dropna({series_dim!r}, how='all')) or fill it in."
            )
        ids.append(sid)
        pairs.append((times[rows], v[rows]))
    return _from_pairs(
        pairs, ids=ids, feature_names=features, time_unit=time_unit, name=name, stacklevel=3
    )


def _from_series(series: list, *, name: str) -> IrregularDataset:
    """Unnamed series objects (what scikit-learn's indexing makes of a data set) as a data
    set with default names: features ``x0, x1, ...`` and static covariates ``static0, ...``."""
    widths = {s.values.shape[1] for s in series}
    if len(widths) > 1:
        raise ValueError(f"{name}: the series have {sorted(widths)} features; all need the same.")
    statics = {None if s.static is None else s.static.shape[0] for s in series}
    if len(statics) > 1:
        raise ValueError(
            f"{name}: the series carry static covariates of different lengths "
            f"({sorted(statics, key=str)}); attach one table to all of them with with_static."
        )
    n_static = statics.pop() or 0
    return IrregularDataset(
        series,
        [f"x{i}" for i in range(widths.pop())],
        static_names=[f"static{i}" for i in range(n_static)],
    )


def as_dataset(X, *, name: str = "X") -> IrregularDataset:
    """The validation gate: turn any supported input into an :class:`IrregularDataset`.

    Parameters
    ----------
    X : IrregularDataset, DataFrame, xarray object, IrregularSeries, or list of (times, values)
        or of IrregularSeries (what scikit-learn's indexing makes of a data set). A DataFrame
        must be indexed by (series id, time) with one column per feature; an xarray
        DataArray or Dataset as :func:`from_xarray` takes it (default dim names).
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
        return _from_series([X], name=name)
    if isinstance(X, pd.DataFrame):
        if X.empty:
            raise ValueError(f"{name} is an empty DataFrame; pass at least one observation.")
        return _from_panel(X, name=name)
    if isinstance(X, (xr.DataArray, xr.Dataset)):
        return from_xarray(X)
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(f"{name} is empty; pass at least one (times, values) pair.")
        if all(isinstance(s, IrregularSeries) for s in X):
            return _from_series(list(X), name=name)
        return _from_pairs(X, ids=None, feature_names=None, time_unit=None, name=name, stacklevel=4)
    raise TypeError(
        f"{name} must be an IrregularDataset, a DataFrame indexed by (series id, time), an "
        f"xarray DataArray (series, time, feature), or a list of (times, values) pairs; got "
        f"{type(X).__name__}."
    )
