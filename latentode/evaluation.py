"""Held-out evaluation: hide part of each series, predict it, score accuracy and calibration.

:func:`hold_out` splits series into what a model may read (the context) and what it must
predict (the target): each series' last window (by time or by count), everything after a
common time, or a random share of the observed values. :func:`evaluate` scores any number of
fitted estimators — a Latent ODE beside :class:`~latentode.LastValue`,
:class:`~latentode.LinearInterpolation` and :class:`~latentode.FeatureMean` — on the same
targets and returns a tidy table (MSE, MAE, CRPS, coverage and width of central intervals at
several levels, per feature and overall); :func:`reliability` turns that table into empirical
against nominal coverage for a reliability plot (:func:`latentode.plotting.plot_reliability`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ._query import chunks
from ._validation import integer, real
from .datasets import IrregularDataset, IrregularSeries, as_dataset
from .metrics import crps, interval_metrics

__all__ = [
    "NothingHeldOut",
    "RELIABILITY_LEVELS",
    "evaluate",
    "gaps_to",
    "held_out_draws",
    "hold_out",
    "reliability",
]

_LEVEL = real("levels", low=0, low_open=True, high=1, high_open=True)
_N_SAMPLES = integer("n_samples", low=1)


class NothingHeldOut(ValueError):
    """:func:`hold_out` could split no series into a context and a target."""


def hold_out(
    X,
    *,
    last: float | None = None,
    after: float | None = None,
    n_last: int | None = None,
    fraction: float | None = None,
    random_state: int | None = None,
) -> tuple[IrregularDataset, IrregularDataset]:
    """Split every series into a context to read and a target to predict.

    Give exactly one of ``last``, ``after``, ``n_last`` and ``fraction``.

    Parameters
    ----------
    X : IrregularDataset, DataFrame indexed by (series id, time), or list of (times, values)
    last : float, optional
        Forecasting each series' own last window: the observations later than its last time
        minus ``last`` are the target.
    after : float, optional
        Forecasting from a common time: observations up to ``after`` are the context, later
        ones the target (e.g. the first 24 h of ICU stays, then the next 24 h).
    n_last : int, optional
        The last ``n_last`` observation times of each series are the target.
    fraction : float in (0, 1), optional
        Imputation: each observed value is hidden with this probability.
    random_state : int, optional
        Seeds ``fraction``'s choice.

    Returns
    -------
    context, target : IrregularDataset
        The same series, in the same order; ``target`` holds only the held-out values (NaN
        elsewhere), ``context`` the rest. Series left with an empty context or target are
        dropped from both, with a warning that counts them.

    Raises
    ------
    NothingHeldOut
        No series could be split (a ``ValueError``).

    Examples
    --------
    >>> from latentode.datasets import make_spirals
    >>> from latentode.evaluation import hold_out
    >>> data = make_spirals(n_series=20, n_obs=10, random_state=0).train
    >>> context, target = hold_out(data, n_last=2)
    >>> [s.n_obs for s in target][:3]
    [2, 2, 2]
    """
    chosen = {
        k: v
        for k, v in dict(last=last, after=after, n_last=n_last, fraction=fraction).items()
        if v is not None
    }
    if len(chosen) != 1:
        raise ValueError(
            "hold_out needs exactly one of last=, after=, n_last= and fraction=; got "
            f"{sorted(chosen) or 'none'}."
        )
    real("last", low=0, low_open=True, none=True).check(last)
    real("after", none=True).check(after)
    integer("n_last", low=1, none=True).check(n_last)
    real("fraction", low=0, low_open=True, high=1, high_open=True, none=True).check(fraction)
    data = as_dataset(X, name="X")
    rng = np.random.default_rng(random_state)
    contexts, targets, dropped = [], [], 0
    for s in data:
        observed = np.isfinite(s.values)
        if fraction is not None:
            hidden = observed & (rng.random(observed.shape) < fraction)
        else:
            if last is not None:
                late = s.times > s.times[-1] - last
            elif after is not None:
                late = s.times > after
            else:
                late = np.arange(s.n_obs) >= s.n_obs - n_last
            hidden = observed & late[:, None]
        context = _part(s, observed & ~hidden)
        target = _part(s, hidden)
        if context is None or target is None:
            dropped += 1
            continue
        contexts.append(context)
        targets.append(target)
    if dropped:
        warnings.warn(
            f"hold_out: {dropped} of {len(data)} series had nothing left to read or to predict "
            "and were left out.",
            UserWarning,
            stacklevel=2,
        )
    if not contexts:
        raise NothingHeldOut("hold_out left no series with both a context and a target.")
    return data._like(contexts), data._like(targets)


def _part(s: IrregularSeries, keep: np.ndarray) -> IrregularSeries | None:
    rows = keep.any(1)
    if not rows.any():
        return None
    values = np.where(keep, s.values, np.nan)[rows]
    return dataclasses.replace(s, times=s.times[rows], values=values)


def gaps_to(context_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Distance of each of ``times`` to the nearest of the sorted ``context_times``."""
    right = np.clip(np.searchsorted(context_times, times), 0, len(context_times) - 1)
    left = np.clip(right - 1, 0, None)
    return np.minimum(np.abs(times - context_times[left]), np.abs(times - context_times[right]))


def held_out_draws(
    model, context, target, n_samples: int, *, with_means: bool = False, **sample_options
):
    """Draws of ``model`` at every held-out value, series by series in bounded chunks.

    Parameters
    ----------
    with_means : bool, default False
        Also return the draws of the ``mean`` variable of ``model.sample`` (each draw's
        noise-free prediction, for models that give one).

    Returns
    -------
    truth, feature, gap : ndarray of shape (values,)
        Each held-out value, its feature's index, and the time from it to the nearest
        observation of its series' context.
    draws : ndarray of shape (n_samples, values)
        Values and draws in float32, to bound memory.
    means : ndarray of shape (n_samples, values)
        Only ``with_means``.
    """
    truths, features, gaps, draws, means = [], [], [], [], []
    grids = [s.times for s in target]
    by_entry = "entries" in inspect.signature(model.sample).parameters
    # one warning for all chunks where calibrated bands reach past the calibration's horizon
    one_warning = getattr(model, "_one_reach_warning", contextlib.nullcontext)
    with one_warning():
        for start, stop, grid in chunks(grids, n_samples, target.n_features):
            chunk, held = context[start:stop], target[start:stop]
            where = []
            for s in held:
                t_idx, f_idx = np.nonzero(np.isfinite(s.values))
                where.append((np.searchsorted(grid, s.times)[t_idx], t_idx, f_idx))
            options = dict(sample_options)
            if by_entry:  # the held-out entries only (a same-time readout reads only those)
                entries = np.zeros((len(held), len(grid), target.n_features), dtype=bool)
                for row, (cols, _, f_idx) in enumerate(where):
                    entries[row, cols, f_idx] = True
                options["entries"] = entries
            drawn = model.sample(chunk, times=grid, n_samples=n_samples, **options)
            obs = drawn["obs"].values
            for row, (c, s) in enumerate(zip(chunk, held, strict=True)):
                cols, t_idx, f_idx = where[row]
                truths.append(s.values[t_idx, f_idx].astype(np.float32))  # the draws' precision
                features.append(f_idx)
                gaps.append(gaps_to(c.times, s.times)[t_idx])
                draws.append(obs[:, row, cols, f_idx].astype(np.float32))
                if with_means:
                    at = drawn["mean"].values[:, row, cols, f_idx]
                    means.append(at.astype(np.float32))
    out = (
        np.concatenate(truths),
        np.concatenate(features),
        np.concatenate(gaps),
        np.concatenate(draws, axis=1),
    )
    return (*out, np.concatenate(means, axis=1)) if with_means else out


def _scores(y: np.ndarray, x: np.ndarray, levels: Sequence[float]) -> dict:
    y, point = y.astype(np.float64), x.mean(0, dtype=np.float64)
    row = {
        "n": int(y.size),
        "mse": float(np.mean((point - y) ** 2)),
        "mae": float(np.mean(np.abs(point - y))),
        "crps": crps(y, x),
    }
    for level, scores in interval_metrics(y, x, levels=list(levels)).items():
        for name, value in scores.items():
            row[f"{name}_{100 * level:g}"] = value
    return row


def _check(models, levels, n_samples):
    if not isinstance(models, Mapping) or not models:
        raise TypeError(
            "models must be a non-empty dict of name to fitted estimator, e.g. "
            "{'latent ODE': model, 'LOCF': LastValue().fit(context)}."
        )
    levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if levels.ndim != 1 or levels.size == 0 or not all(map(_LEVEL.ok, levels.tolist())):
        raise ValueError(_LEVEL.message(levels.tolist()))
    _N_SAMPLES.check(n_samples)
    return levels


def evaluate(
    models: Mapping,
    context,
    target,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    n_samples: int = 200,
) -> pd.DataFrame:
    """Score fitted estimators on held-out values, side by side.

    Each model reads ``context`` and draws ``n_samples`` predictions (``model.sample``) at
    the target's times; the point prediction is the mean of the draws.

    Parameters
    ----------
    models : dict of str to fitted estimator
        Anything with ``sample(X, *, times, n_samples)`` returning ``obs (sample, series,
        time, feature)``: :class:`~latentode.LatentODE`, :class:`~latentode.LastValue`,
        :class:`~latentode.LinearInterpolation`, :class:`~latentode.FeatureMean`.
    context, target : IrregularDataset
        As :func:`hold_out` returns them (same series, same order).
    levels : sequence of float in (0, 1), default (0.5, 0.9)
        Central intervals whose coverage and width are reported.
    n_samples : int, default 200

    Returns
    -------
    DataFrame
        One row per model and feature, and a row per model with feature ``"all"`` (every
        held-out value counted once): ``n``, ``mse``, ``mae``, ``crps``; ``mse_scaled``, the
        MSE over the variance of the feature's held-out values (1: no better than their mean;
        unit-free), whose ``"all"`` row averages the features' with equal weight, where the
        pooled ``mse`` is dominated by the features of the largest units; and for each level
        (in percent) ``coverage_90``, ``width_90``, ``interval_score_90`` (see
        :func:`latentode.metrics.interval_score`), ... In the data's units.
    """
    levels = _check(models, levels, n_samples)
    context, target = as_dataset(context, name="context"), as_dataset(target, name="target")
    if [str(i) for i in context.ids] != [str(i) for i in target.ids]:
        raise ValueError(
            "context and target must hold the same series in the same order; make them with "
            "latentode.evaluation.hold_out."
        )
    rows = []
    for name, model in models.items():
        y, f, _, x = held_out_draws(model, context, target, n_samples)
        scaled = []
        for d, feature in enumerate(target.feature_names):
            if (f == d).any():
                scores = _scores(y[f == d], x[:, f == d], levels)
                spread = float(np.var(y[f == d].astype(np.float64)))
                scores["mse_scaled"] = scores["mse"] / spread if spread > 0 else np.nan
                scaled.append(scores["mse_scaled"])
                rows.append({"model": name, "feature": feature, **scores})
        overall = _scores(y, x, levels)
        finite = [v for v in scaled if np.isfinite(v)]
        overall["mse_scaled"] = float(np.mean(finite)) if finite else np.nan
        rows.append({"model": name, "feature": "all", **overall})
    return pd.DataFrame(rows)


#: Nominal levels of a reliability diagram.
RELIABILITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def reliability(table: pd.DataFrame) -> pd.DataFrame:
    """Empirical against nominal coverage of central intervals, per model, from
    :func:`evaluate`'s table.

    Parameters
    ----------
    table : DataFrame
        As :func:`evaluate` returns it; every ``coverage_*`` column is used (evaluate with
        ``levels=RELIABILITY_LEVELS`` for a full diagram).

    Returns
    -------
    DataFrame
        Columns ``model``, ``nominal``, ``empirical`` (all held-out values pooled); a
        calibrated model lies on the diagonal. Plot it with
        :func:`latentode.plotting.plot_reliability`.
    """
    columns = [c for c in table.columns if c.startswith("coverage_")]
    if not columns or not {"model", "feature"} <= set(table.columns):
        raise ValueError("table must be what latentode.evaluation.evaluate returns.")
    rows = [
        {"model": row["model"], "nominal": float(c.split("_", 1)[1]) / 100, "empirical": row[c]}
        for row in table[table.feature == "all"].to_dict("records")
        for c in columns
    ]
    return pd.DataFrame(rows).sort_values(["model", "nominal"], kind="stable", ignore_index=True)
