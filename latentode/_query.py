"""Query times per series: each series' own times, or a horizon after its own last observation.

Estimators draw on one time grid per call; for series that each need their own times,
:func:`chunks` groups consecutive series so that the union of their grids, times the draws,
stays within a bound, and :func:`quantiles_per_series` keeps each series' own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ._validation import integer, real

__all__ = [
    "CELLS",
    "chunks",
    "long_times",
    "quantiles_per_series",
    "series_grids",
]

#: Values (draws × series × times × features) one call of a chunked draw may hold.
CELLS = 20_000_000

_HORIZON = real("horizon", low=0, low_open=True)
_N_POINTS = integer("n_points", low=1)


def _clean(t: np.ndarray) -> np.ndarray:
    """Times rid of float noise from adding steps (98.0 + 3 * 0.4 gives 99.2, not 99.200..01)."""
    return np.asarray([float(f"{x:.12g}") for x in t])


def series_grids(
    data, *, times, horizon, n_points: int, check: Callable[[np.ndarray, str], np.ndarray]
) -> list[np.ndarray] | None:
    """Each series' own query times, or None when ``times`` is one grid for all.

    Parameters
    ----------
    data : IrregularDataset
    times : array-like, mapping of series id to array-like, DataFrame, or None
        A DataFrame is a long table of (series, time) rows: columns ``series`` and ``time``
        (or exactly two columns, id first), or those two as its index.
    horizon : float or None
        Times after each series' last observation: ``n_points`` evenly spaced up to
        ``last + horizon``.
    n_points : int
    check : callable
        Validates one grid, ``check(times, name)``, returning it as an array.

    Returns
    -------
    list of ndarray, one per series of ``data`` (in order), or None
    """
    if horizon is not None:
        if times is not None:
            raise ValueError("pass either times or horizon, not both.")
        _HORIZON.check(horizon)
        _N_POINTS.check(n_points)
        steps = np.arange(1, n_points + 1) * (float(horizon) / n_points)
        return [check(_clean(s.times[-1] + steps), f"the horizon of series {s.id!r}") for s in data]
    if isinstance(times, pd.DataFrame):
        times = long_times(times)
    if not isinstance(times, Mapping):
        return None
    by_str = {str(k): v for k, v in times.items()}
    missing = [s.id for s in data if s.id not in times and str(s.id) not in by_str]
    if missing:
        raise ValueError(
            f"times has no entry for series {missing[:5]!r}"
            f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}; give every series "
            "its times (or one array for all)."
        )
    return [
        check(times[s.id] if s.id in times else by_str[str(s.id)], f"times[{s.id!r}]") for s in data
    ]


def long_times(frame: pd.DataFrame) -> dict:
    """A long (series, time) table as a mapping of series id to its sorted unique times."""
    if isinstance(frame.index, pd.MultiIndex) or frame.index.name is not None:
        frame = frame.reset_index()
    if {"series", "time"} <= set(frame.columns):
        id_col, time_col = "series", "time"
    elif frame.shape[1] == 2:
        id_col, time_col = frame.columns
    else:
        raise ValueError(
            f"times is a DataFrame with columns {list(frame.columns)[:6]!r}; give a long table "
            "of query times with columns 'series' and 'time' (or exactly two columns: id, time)."
        )
    if frame[id_col].isna().any():
        raise ValueError(f"times: column {id_col!r} has missing series ids; drop those rows.")
    try:
        stamps = pd.to_numeric(frame[time_col], errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"times: column {time_col!r} must hold numbers in the data's time unit; convert "
            "datetimes to elapsed time first."
        ) from None
    out: dict = {}
    for sid, rows in frame.groupby(id_col, sort=False).indices.items():
        out[sid] = np.unique(stamps[rows])
    return out


def chunks(
    grids: Sequence[np.ndarray], n_samples: int, n_features: int, cells: int | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Consecutive ranges of series whose union grid keeps one draw within ``cells`` values
    (default :data:`CELLS`).

    Yields
    ------
    start, stop : int
        The series ``start:stop``.
    grid : ndarray
        The union of their grids.
    """
    cells = CELLS if cells is None else cells
    start = 0
    while start < len(grids):
        stop, grid = start, np.zeros(0)
        while stop < len(grids):
            wider = np.union1d(grid, grids[stop])
            if stop > start and (stop - start + 1) * wider.size * n_samples * n_features > cells:
                break
            grid, stop = wider, stop + 1
        yield start, stop, grid
        start = stop


def quantiles_per_series(
    predict_quantiles: Callable[..., pd.DataFrame],
    data,
    grids: Sequence[np.ndarray],
    draws: int,
    *,
    width: int | None = None,
    cells: int | None = None,
    **kwargs,
) -> pd.DataFrame:
    """``predict_quantiles(..., **kwargs)`` with each series at its own times, in chunks
    bounded for ``draws`` draws per value.

    Returns
    -------
    DataFrame
        As ``predict_quantiles`` returns it, with the rows of each series' own times only.

    ``width`` (default the number of features) and ``cells`` (default :data:`CELLS`) size the
    chunks: their union grid times ``draws`` times ``width`` stays within ``cells``.
    """
    frames = []
    for start, stop, grid in chunks(grids, draws, width or data.n_features, cells):
        frame = predict_quantiles(data[start:stop], times=grid, **kwargs)
        wanted = {
            (str(s.id), float(t))
            for s, g in zip(data[start:stop], grids[start:stop], strict=True)
            for t in g
        }
        series = frame.index.get_level_values(0).astype(str)
        times = frame.index.get_level_values(1).astype(float)
        frames.append(frame[[(s, t) in wanted for s, t in zip(series, times, strict=True)]])
    return pd.concat(frames)
