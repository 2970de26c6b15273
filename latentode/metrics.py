"""Accuracy and calibration of predictions for partly observed series.

Every function takes NumPy arrays or xarray DataArrays; NaN in ``y_true`` means "not
observed" and the entry is left out (an explicit ``mask`` may also be given), so the metrics
work directly on the NaN-padded arrays of irregular data. Sample-based metrics take the draws
along ``sample_axis`` (the leading ``sample`` dimension of :meth:`LatentODE.sample`).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import choice, real

__all__ = [
    "crps",
    "draw_quantiles",
    "interval_coverage",
    "interval_metrics",
    "interval_score",
    "mae",
    "masked_mse",
    "nlpd",
    "rmse",
    "series_feature_mse",
]


def _observed(y_true, mask, *, name: str = "y_true"):
    y = np.asarray(y_true, dtype=np.float64)
    observed = ~np.isnan(y)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != y.shape:
            raise ValueError(f"mask has shape {mask.shape} but {name} has shape {y.shape}.")
        observed &= mask
    if not observed.any():
        raise ValueError(f"{name} has no observed (non-NaN, unmasked) entry to score.")
    return y, observed


def _matching(name: str, array, shape) -> np.ndarray:
    a = np.asarray(array, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(
            f"{name} has shape {a.shape} but y_true has shape {shape}; they must match."
        )
    return a


def _samples(samples, shape, sample_axis: int) -> np.ndarray:
    s = np.moveaxis(np.asarray(samples, dtype=np.float64), sample_axis, 0)
    if s.shape[1:] != shape:
        raise ValueError(
            f"samples have shape {s.shape[1:]} apart from the sample axis but y_true has shape "
            f"{shape}; they must match."
        )
    return s


def masked_mse(y_true, y_pred, mask=None) -> float:
    """Mean squared error over the observed entries.

    Parameters
    ----------
    y_true : array of any shape, NaN = not observed
    y_pred : array of the same shape
    mask : bool array of the same shape, optional
        Further restricts the scored entries.

    Returns
    -------
    float
    """
    y, observed = _observed(y_true, mask)
    pred = _matching("y_pred", y_pred, y.shape)
    return float(np.mean((pred[observed] - y[observed]) ** 2))


def series_feature_mse(y_true, y_pred, mask=None, *, unobserved: str = "skip") -> float:
    """Mean squared error averaged per series and feature, then over them.

    Each (series, feature) pair gets the mean squared error over the times at which that
    feature of that series is observed; the pairs are then averaged, so a series or a feature
    with many measurements weighs no more than one with few (:func:`masked_mse` instead
    weighs every observed entry equally).

    Parameters
    ----------
    y_true : array of shape (series, time, feature), NaN = not observed
    y_pred : array of shape (series, time, feature) or (sample, series, time, feature)
        With a leading sample axis (e.g. the ``mean`` of :meth:`LatentODE.sample`), the
        error is computed for each draw and averaged over the draws.
    mask : bool array of shape (series, time, feature), optional
        Further restricts the scored entries.
    unobserved : {"skip", "zero"}, default "skip"
        Pairs never observed: left out of the average (``"skip"``), or counted as zero error
        (``"zero"``). The reference code of Rubanova et al. (2019) does the latter (its
        ``compute_masked_likelihood`` with ``mse``), and the PhysioNet MSEs published in that
        paper are on that scale; it equals ``"skip"`` times the share of pairs observed.

    Returns
    -------
    float
    """
    choice("unobserved", ("skip", "zero")).check(unobserved)
    y, observed = _observed(y_true, mask)
    if y.ndim != 3:
        raise ValueError(
            f"y_true must have shape (series, time, feature); got {y.ndim} dimensions."
        )
    pred = np.asarray(y_pred, dtype=np.float64)
    if pred.shape != y.shape and pred.shape[1:] != y.shape:
        raise ValueError(
            f"y_pred has shape {pred.shape} but y_true has shape {y.shape}; give (series, "
            "time, feature) or (sample, series, time, feature)."
        )
    if pred.shape == y.shape:
        pred = pred[None]
    err = np.where(observed, pred - np.where(observed, y, 0.0), 0.0) ** 2
    counts = observed.sum(1)  # (series, feature)
    per_pair = err.sum(2) / np.maximum(counts, 1)  # (sample, series, feature)
    if unobserved == "zero":
        return float(per_pair.mean())
    return float(per_pair[:, counts > 0].mean())


def rmse(y_true, y_pred, mask=None) -> float:
    """Root mean squared error over the observed entries (see :func:`masked_mse`)."""
    return math.sqrt(masked_mse(y_true, y_pred, mask))


def mae(y_true, y_pred, mask=None) -> float:
    """Mean absolute error over the observed entries (see :func:`masked_mse`)."""
    y, observed = _observed(y_true, mask)
    pred = _matching("y_pred", y_pred, y.shape)
    return float(np.mean(np.abs(pred[observed] - y[observed])))


def crps(y_true, samples, mask=None, *, sample_axis: int = 0) -> float:
    """Continuous ranked probability score of predictive draws, averaged (lower is better).

    For draws ``x_1..x_m`` of the predictive at one entry, ``CRPS = mean|x_i - y| - 1/2 *
    mean|x_i - x_j|``, computed exactly from the sorted draws in ``O(m log m)``. In the units of
    the data; it equals the absolute error for a point prediction.

    Parameters
    ----------
    y_true : array of shape S, NaN = not observed
    samples : array with one more axis than ``y_true``, of length m at ``sample_axis``
    mask : bool array of shape S, optional
    sample_axis : int, default 0

    Returns
    -------
    float
    """
    y, observed = _observed(y_true, mask)
    x = _samples(samples, y.shape, sample_axis)[:, observed]  # (m, n)
    y = y[observed]
    m = x.shape[0]
    spread_to_truth = np.abs(x - y).mean(0)
    x = np.sort(x, axis=0)
    weights = (2 * np.arange(1, m + 1) - m - 1)[:, None]
    mean_pair_distance = 2.0 * (weights * x).sum(0) / (m * m)
    return float(np.mean(spread_to_truth - 0.5 * mean_pair_distance))


def interval_coverage(y_true, samples, mask=None, *, coverage: float = 0.9, sample_axis=0):
    """Fraction of observed values inside the central ``coverage`` interval of the draws.

    A calibrated predictive gives about ``coverage``.

    Parameters
    ----------
    y_true : array of shape S, NaN = not observed
    samples : array with one more axis than ``y_true``
    mask : bool array of shape S, optional
    coverage : float in (0, 1), default 0.9
    sample_axis : int, default 0

    Returns
    -------
    float
    """
    scores = interval_metrics(y_true, samples, mask, levels=[coverage], sample_axis=sample_axis)
    return scores[coverage]["coverage"]


def interval_score(y_true, samples, mask=None, *, coverage: float = 0.9, sample_axis=0):
    """Interval score of the central ``coverage`` interval of the draws (lower is better).

    ``(u - l) + (2 / a) (l - y) [y < l] + (2 / a) (y - u) [y > u]`` with ``a = 1 - coverage``
    (Gneiting and Raftery 2007, section 6.2): the width of the interval plus a penalty for each
    value outside it, so that neither bands too narrow nor too wide score well. In the units of
    the data, averaged over observed entries.

    Parameters
    ----------
    y_true : array of shape S, NaN = not observed
    samples : array with one more axis than ``y_true``
    mask : bool array of shape S, optional
    coverage : float in (0, 1), default 0.9
    sample_axis : int, default 0

    Returns
    -------
    float
    """
    scores = interval_metrics(y_true, samples, mask, levels=[coverage], sample_axis=sample_axis)
    return scores[coverage]["interval_score"]


def interval_metrics(y_true, samples, mask=None, *, levels, sample_axis: int = 0) -> dict:
    """Coverage, width and interval score of central intervals at several levels at once.

    The draws are sorted once and each level's bounds read off them (between order
    statistics, at the plotting position ``q (n + 1)`` of ``numpy.quantile(...,
    method="weibull")``, so that a draw-sized band of a calibrated predictive covers its
    nominal share whatever the number of draws), so many levels cost little more than one.

    Parameters
    ----------
    y_true : array of shape S, NaN = not observed
    samples : array with one more axis than ``y_true``
    mask : bool array of shape S, optional
    levels : sequence of float in (0, 1)
    sample_axis : int, default 0

    Returns
    -------
    dict
        For each level, ``{"coverage", "width", "interval_score"}`` (see
        :func:`interval_coverage`, :func:`interval_score`), averaged over observed entries.
    """
    check = real("coverage", low=0, low_open=True, high=1, high_open=True)
    for level in levels:
        check.check(level)
    y, observed = _observed(y_true, mask)
    x = np.sort(_samples(samples, y.shape, sample_axis)[:, observed], axis=0)
    y = y[observed]
    out = {}
    for level in levels:
        low, high = _order_statistic(x, (1 - level) / 2), _order_statistic(x, (1 + level) / 2)
        outside = np.maximum(low - y, 0) + np.maximum(y - high, 0)
        out[level] = {
            "coverage": float(np.mean((y >= low) & (y <= high))),
            "width": float(np.mean(high - low)),
            "interval_score": float(np.mean(high - low + 2 / (1 - level) * outside)),
        }
    return out


def _order_statistic(sorted_draws: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile along axis 0 of draws already sorted along it, at the plotting
    position ``q (n + 1)`` (numpy's "weibull"): a new value exchangeable with the ``n`` draws
    falls inside the central interval so read with probability ``coverage`` exactly (given
    ``n + 1 >= 2 / (1 - coverage)``: fewer draws reach at most ``(n - 1) / (n + 1)``), where
    numpy's default ("linear") gives ``coverage (n - 1) / (n + 1)``."""
    n = sorted_draws.shape[0]
    position = min(max(q * (n + 1) - 1, 0.0), n - 1.0)
    below = int(np.floor(position))
    above = min(below + 1, sorted_draws.shape[0] - 1)
    weight = position - below
    return sorted_draws[below] + weight * (sorted_draws[above] - sorted_draws[below])


def draw_quantiles(draws, levels) -> np.ndarray:
    """Quantiles of draws along their first axis, at the plotting positions ``q (n + 1)``.

    What ``numpy.quantile(draws, levels, axis=0, method="weibull")`` returns (a column with
    a NaN draw gives NaN), from one sort of the draws: several times faster on the draw
    arrays of a prediction (numpy selects each level again, on a strided copy).

    Parameters
    ----------
    draws : array of shape (sample, ...)
    levels : sequence of float in [0, 1], shape (quantile,)

    Returns
    -------
    ndarray of shape (quantile, ...)
    """
    levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if levels.ndim != 1 or not ((levels >= 0) & (levels <= 1)).all():
        raise ValueError(f"levels must be quantile levels in [0, 1]; got {levels!r}.")
    x = np.asarray(draws)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("draws must have at least one draw along their first axis.")
    x = np.sort(x, axis=0)  # NaN sort last
    out = np.stack([_order_statistic(x, q) for q in levels])
    out[:, np.isnan(x[-1])] = np.nan  # numpy.quantile without skipping NaN
    return out


def nlpd(y_true, means, scale, mask=None, *, sample_axis: int = 0) -> float:
    """Negative log predictive density per observed entry (lower is better).

    The predictive at each entry is the equal-weight mixture over draws of
    ``Normal(means[k], scale)`` — for a Latent ODE, the decoded trajectory of each posterior
    draw of ``z0`` with the observation noise (``LatentODE.sample(...)["mean"]``).

    Parameters
    ----------
    y_true : array of shape S, NaN = not observed
    means : array with one more axis than ``y_true`` (the draws)
    scale : float or array broadcastable to S
        Observation standard deviation, positive.
    mask : bool array of shape S, optional
    sample_axis : int, default 0

    Returns
    -------
    float
        In nats, for the data in its own units.
    """
    y, observed = _observed(y_true, mask)
    mu = _samples(means, y.shape, sample_axis)
    sigma = np.broadcast_to(np.asarray(scale, dtype=np.float64), y.shape)
    if not (sigma[observed] > 0).all():
        raise ValueError("scale must be positive.")
    mu, sigma, y = mu[:, observed], sigma[observed], y[observed]
    log_density = -0.5 * ((y - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)
    top = log_density.max(0)
    mixture = top + np.log(np.mean(np.exp(log_density - top), axis=0))
    return float(-np.mean(mixture))
