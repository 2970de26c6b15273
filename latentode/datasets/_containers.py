"""Containers for irregularly sampled series.

A series is its own observation times and a ``(n_obs, n_features)`` array of values in which
NaN means "not observed". A data set is an ordered collection of such series that share
feature names. Mini-batches are in :mod:`latentode.datasets._batch`; building containers from
user data (the input gate) in :mod:`latentode.datasets._convert`.
"""

from __future__ import annotations

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
    time_unit : str, optional
        The unit timedelta times were counted in when the data were built (e.g. ``"h"``), so
        that a model fitted on them refuses data counted in another unit; None when unknown.

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
    ):
        self._series = list(series)
        self.feature_names = [str(f) for f in feature_names]
        self.time_unit = time_unit

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
        """Other series with this data set's feature names and time unit."""
        return IrregularDataset(series, self.feature_names, time_unit=self.time_unit)

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
