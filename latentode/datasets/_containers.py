"""Containers for irregularly sampled series.

A series is its own observation times and a ``(n_obs, n_features)`` array of values in which
NaN means "not observed". A data set is an ordered collection of such series that share
feature names. Mini-batches are in :mod:`latentode.datasets._batch`; building containers from
user data (the input gate) in :mod:`latentode.datasets._convert`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["IrregularDataset", "IrregularSeries"]


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
    static : ndarray of shape (n_static,) or None
        Static covariates of the series (age, sex, sensor model, ...), NaN where unknown;
        None when its data set has none (see :meth:`IrregularDataset.with_static`).

    Notes
    -----
    Build series through :func:`from_arrays`, :func:`from_pandas` or :func:`as_dataset`, which
    validate and normalise the input; the constructor itself only stores.
    """

    id: object
    times: np.ndarray
    values: np.ndarray
    static: np.ndarray | None = None

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
    time_unit : str, optional
        The unit timedelta times were counted in when the data were built (e.g. ``"h"``), so
        that a model fitted on them refuses data counted in another unit; None when unknown.
    static_names : sequence of str, default ()
        Names of the static covariates every series carries in ``static`` (attach them with
        :meth:`with_static`); empty when the series have none.

    Examples
    --------
    >>> import numpy as np
    >>> from latentode.datasets import from_arrays
    >>> data = from_arrays([(np.array([0.0, 0.5]), np.array([[1.0], [2.0]]))])
    >>> len(data), data.n_features
    (1, 1)
    """

    def __init__(
        self,
        series: Sequence[IrregularSeries],
        feature_names: Sequence[str],
        *,
        time_unit: str | None = None,
        static_names: Sequence[str] = (),
    ):
        self._series = list(series)
        self.feature_names = [str(f) for f in feature_names]
        self.time_unit = time_unit
        self.static_names = [str(f) for f in static_names]

    # -- sequence protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._series)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._series[int(key)]
        if isinstance(key, slice):
            return self._like(self._series[key])
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return self._like([self._series[int(i)] for i in idx])

    def _like(self, series) -> IrregularDataset:
        """Other series with this data set's feature names, time unit and static names."""
        return IrregularDataset(
            series, self.feature_names, time_unit=self.time_unit, static_names=self.static_names
        )

    def __repr__(self) -> str:
        n_obs = [s.n_obs for s in self._series]
        span = f", {min(n_obs)}-{max(n_obs)} observation times each" if n_obs else ""
        static = f", static {self.static_names}" if self.static_names else ""
        return (
            f"IrregularDataset({len(self)} series, {self.n_features} features "
            f"{self.feature_names}{span}{static})"
        )

    # -- properties ------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return len(self.feature_names)

    @property
    def n_static(self) -> int:
        """Number of static covariates per series (0 when none are attached)."""
        return len(self.static_names)

    @property
    def static(self) -> pd.DataFrame:
        """The static covariates: a frame indexed by series id, one column per covariate.

        Returns
        -------
        DataFrame of shape (series, n_static)
            NaN where a covariate is unknown; no columns when none are attached.
        """
        rows = [
            s.static if s.static is not None else np.full(self.n_static, np.nan)
            for s in self._series
        ]
        table = np.stack(rows) if rows else np.empty((0, self.n_static))
        index = pd.Index(self.ids, name="series", tupleize_cols=False)
        return pd.DataFrame(table.reshape(len(rows), self.n_static), index, self.static_names)

    def with_static(self, static) -> IrregularDataset:
        """The same series with static covariates attached (those already attached replaced).

        Static covariates are per-series quantities that do not change over the series (age,
        sex, admission type, device model). They travel with each series through indexing,
        :meth:`split_at` and the estimators, which standardise them with the training data and
        give them to the recognition network (and a classifier's head).

        Parameters
        ----------
        static : DataFrame or Series
            Indexed by series id (every id of this data set must appear; other rows are
            ignored), one column per covariate. Numeric and boolean columns are used as they
            are; a ``category`` column becomes one indicator column per category, named
            ``"column=category"`` (all the dtype's categories, so that data sets built from the
            same dtype get the same columns). NaN marks an unknown value.

        Returns
        -------
        IrregularDataset
            New series objects sharing the times and values arrays; ``static_names`` set.

        Raises
        ------
        TypeError
            If ``static`` is not a pandas frame or a column is neither numeric, boolean nor
            categorical.
        ValueError
            If series ids are missing from its index, the index repeats an id, or a value is
            infinite.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> from latentode.datasets import from_arrays
        >>> data = from_arrays([(np.array([0.0, 1.0]), np.array([[1.0], [2.0]]))], ids=["a"])
        >>> data.with_static(pd.DataFrame({"age": [61.0]}, index=["a"])).static_names
        ['age']
        """
        table = _static_table(static)
        missing = [i for i in self.ids if i not in table.index]
        if missing:
            raise ValueError(
                f"static: series {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                f"({len(missing)} of {len(self)}) are not in its index; index the frame by "
                "series id with a row for every series (NaN for unknown values)."
            )
        rows = table.reindex(pd.Index(self.ids, tupleize_cols=False)).to_numpy(np.float64)
        series = [dataclasses.replace(s, static=rows[i].copy()) for i, s in enumerate(self._series)]
        return IrregularDataset(
            series,
            self.feature_names,
            time_unit=self.time_unit,
            static_names=[str(c) for c in table.columns],
        )

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
                before.append(dataclasses.replace(s, times=s.times[early], values=s.values[early]))
                after.append(dataclasses.replace(s, times=s.times[~early], values=s.values[~early]))
        if not before:
            raise ValueError(
                f"split_at: no series has observations both before and from time={time} "
                f"(observed times span {self.t_min} to {self.t_max}); pick a time inside them."
            )
        return (
            self._like(before),
            self._like(after),
        )

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


def _static_table(static) -> pd.DataFrame:
    """``with_static``'s argument as a float frame: categories to indicators, checked."""
    if isinstance(static, pd.Series):
        static = static.to_frame(static.name if static.name is not None else "static")
    if not isinstance(static, pd.DataFrame):
        raise TypeError(
            f"static must be a pandas DataFrame indexed by series id; got {type(static).__name__}."
        )
    if static.index.has_duplicates:
        twice = static.index[static.index.duplicated()].unique().tolist()[:5]
        raise ValueError(f"static: series {twice} have more than one row; keep one per series.")
    parts = []
    for col in static.columns:
        column = static[col]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            for k, level in enumerate(column.cat.categories):
                hot = np.where(codes < 0, np.nan, (codes == k).astype(np.float64))
                parts.append(pd.Series(hot, index=static.index, name=f"{col}={level}"))
            continue
        if column.dtype == bool or pd.api.types.is_numeric_dtype(column.dtype):
            parts.append(column.astype(np.float64).rename(str(col)))
            continue
        raise TypeError(
            f"static: column {col!r} has dtype {column.dtype}; pass numbers, booleans, or a "
            "category column (df[col].astype('category')) to get one indicator per category."
        )
    table = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=static.index)
    values = table.to_numpy(np.float64)
    if np.isinf(values).any():
        row, col = np.argwhere(np.isinf(values))[0]
        raise ValueError(
            f"static: series {table.index[row]!r} has an infinite {table.columns[col]!r}; use "
            "NaN for an unknown value."
        )
    return table
