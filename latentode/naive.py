"""What users would do without a model: carry the last value forward, interpolate, the mean,
and for labels a logistic regression on per-series summaries.

Each rule is an estimator with the API of :class:`~latentode.LatentODE` — ``fit``,
``predict``, ``sample``, ``predict_quantiles``, ``predict_interval`` — so that every example,
benchmark and :func:`latentode.evaluation.evaluate` shows the margin of a model over them.
Their bands are empirical: in ``fit`` the rule predicts observed values of the training series
from other observed values, and the errors it makes, binned by the time from the value used
(the gap), give the quantiles and draws at any gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._base import IntervalMixin, IrregularSeriesEstimator, seed_from
from ._empirical import BinnedEmpirical
from ._validation import check_params, integer, real
from .datasets import IrregularDataset, as_dataset

__all__ = ["FeatureMean", "LastValue", "LinearInterpolation", "SummaryLogisticRegression"]

_N_SAMPLES = integer("n_samples", low=1)
_LEVEL = real("q", low=0, low_open=True, high=1, high_open=True)
#: Residuals kept per feature and kind (enough for stable tail quantiles).
_MAX_PAIRS = 20_000


def _observed(s, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Times and values of feature ``d`` where series ``s`` observed it."""
    ok = np.isfinite(s.values[:, d])
    return s.times[ok], s.values[ok, d]


def _carried(t_obs: np.ndarray, v_obs: np.ndarray, query: np.ndarray):
    """Last value at or before each query time (the first value before the first), and the
    gap from its time."""
    last = np.clip(np.searchsorted(t_obs, query, side="right") - 1, 0, None)
    return v_obs[last], np.abs(query - t_obs[last])


def _carried_errors(data: IrregularDataset, d: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Gaps and errors of carrying feature ``d`` forward, over random pairs of observations
    (a later one predicted by an earlier one) of each training series."""
    gaps, errors = [], []
    budget = max(1, _MAX_PAIRS // max(1, len(data)))
    for s in data:
        t_obs, v_obs = _observed(s, d)
        if len(t_obs) < 2:
            continue
        n = min(budget, len(t_obs) * (len(t_obs) - 1) // 2)
        i = rng.integers(1, len(t_obs), size=n)
        # steps back log-uniform in 1..i: short gaps as well represented as long ones
        j = i - np.floor(np.exp(rng.random(n) * np.log(i + 1))).astype(np.int64).clip(1, i)
        gaps.append(t_obs[i] - t_obs[j])
        errors.append(v_obs[i] - v_obs[j])
    return _concat(gaps, errors)


class _Rule(IntervalMixin, IrregularSeriesEstimator):
    """Shared machinery: validation, the empirical error tables, predictions and draws.

    Subclasses give ``_point(times, values, query) -> (prediction, gap, kind)`` for one
    feature of one series (``kind`` 0 or 1 selects the error table) and
    ``_training_errors(series_list, feature, rng) -> list of (gaps, errors)`` per kind.
    """

    _kinds = 1
    _parameter_constraints = (integer("n_bins", low=1),)
    _time_origin_matters = False  # a rule reads only the series' own observations

    def __init__(self, *, n_bins: int = 8, random_state: int | None = None):
        self.n_bins = n_bins
        self.random_state = random_state

    def fit(self, X, y=None):
        """Learn the feature means and the rule's errors on ``X``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame indexed by (series id, time), or list of (times, values)
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        data = as_dataset(X, name="X")
        with self._keep_state_on_failure():
            self._fit_scaling(data)
            rng = np.random.default_rng(seed_from(self.random_state))
            tables = [([], []) for _ in range(self._kinds)]
            for d in range(data.n_features):
                per_kind = self._training_errors(data, d, rng)
                for k, (gaps, errors) in enumerate(per_kind):
                    tables[k][0].append(gaps)
                    tables[k][1].append(errors)
            self.errors_ = [BinnedEmpirical(g, e, n_bins=self.n_bins) for g, e in tables]
        return self

    # -- the rule on one feature of one series ---------------------------------------------
    def _point(self, t_obs, v_obs, query):
        """Prediction, gap and error table (kind) at each query time, for one feature."""
        raise NotImplementedError

    def _evaluate(self, data: IrregularDataset, t: np.ndarray):
        """Predictions, gaps and kinds: arrays of shape (series, time, feature)."""
        shape = (len(data), len(t), self.n_features_in_)
        pred, gap, kind = np.empty(shape), np.full(shape, np.inf), np.zeros(shape, dtype=int)
        for i, s in enumerate(data):
            for d in range(self.n_features_in_):
                t_obs, v_obs = _observed(s, d)
                if len(t_obs) == 0:  # never observed in this series: the training mean
                    pred[i, :, d] = self.value_mean_[d]
                    continue
                pred[i, :, d], gap[i, :, d], kind[i, :, d] = self._point(t_obs, v_obs, t)
        return pred, gap, kind

    def _tables(self, gap: np.ndarray, kind: np.ndarray):
        """Yield (error table, feature, cells (series, time) it covers, their gaps)."""
        for d in range(self.n_features_in_):
            for k in range(self._kinds):
                chosen = kind[..., d] == k
                if chosen.any():
                    yield self.errors_[k], d, chosen, gap[..., d][chosen]

    def _checked(self, X, times):
        check_is_fitted(self)
        data = self._check_data(X)
        return data, self._check_times(times, data)

    # -- public API ------------------------------------------------------------------------
    def _points(self, X, times, horizon, n_points):
        """``(data, coords, dims, (pred, gap, kind))`` at one grid for all series, or at each
        series' own (a mapping, a DataFrame or ``horizon``; NaN-padded, gap infinite where a
        series has fewer times), the latter as ``(series, step, feature)``."""
        own = self._own_grids(X, times, horizon, n_points)
        if own is None:
            data, t = self._checked(X, times)
            return (
                data,
                self._coords(data, t),
                ("series", "time", "feature"),
                self._evaluate(data, t),
            )
        data, grids = own
        longest = max(len(g) for g in grids)
        shape = (len(data), longest, self.n_features_in_)
        # padding gets no error table (kind -1) and stays NaN in every draw
        pred, gap, kind = np.full(shape, np.nan), np.full(shape, np.inf), np.full(shape, -1)
        stamps = np.full((len(data), longest), np.nan)
        for i, grid in enumerate(grids):
            one = self._evaluate(data[i : i + 1], grid)
            for out, value in zip((pred, gap, kind), one, strict=True):
                out[i, : len(grid)] = value[0]
            stamps[i, : len(grid)] = grid
        coords = self._coords(data, np.arange(longest))
        coords["step"] = coords.pop("time")
        coords["time"] = (("series", "step"), stamps)
        return data, coords, ("series", "step", "feature"), (pred, gap, kind)

    def predict(self, X, *, times=None, horizon=None, n_points: int = 20) -> xr.DataArray:
        """The rule's prediction of every feature of every series at query times.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
            The observed series the rule reads.
        times : array-like of shape (time,), mapping or DataFrame, optional
            Increasing query times, one grid for every series or each series' own (a mapping
            of series id to times, or a long DataFrame with ``series`` and ``time`` columns);
            default the union of the series' observation times.
        horizon : float, optional
            Instead of ``times``: ``n_points`` evenly spaced times after each series' own last
            observation, up to that time plus ``horizon``.
        n_points : int, default 20

        Returns
        -------
        xarray.DataArray of shape (series, time, feature)
            With per-series times (a mapping, a DataFrame or ``horizon``), of shape (series,
            step, feature) instead, ``time`` a coordinate of dims (series, step) with each
            series' own times (NaN-padded where a series has fewer), as
            :meth:`LatentODE.predict`.
        """
        _, coords, dims, (pred, _, _) = self._points(X, times, horizon, n_points)
        return xr.DataArray(
            pred,
            dims=dims,
            coords=coords,
            name="mean",
            attrs=self._attrs(quantity="prediction"),
        )

    def sample(
        self, X, *, times=None, horizon=None, n_points: int = 20, n_samples: int = 100
    ) -> xr.Dataset:
        """Draws of the prediction plus an error drawn from the training errors at its gap.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), mapping or DataFrame, optional
        horizon : float, optional
        n_points : int, default 20
            As in :meth:`predict`.
        n_samples : int, default 100

        Returns
        -------
        xarray.Dataset
            ``obs (sample, series, time, feature)`` and ``mean (series, time, feature)``, the
            rule's prediction (``step`` in place of ``time`` with per-series times, as in
            :meth:`predict`). Reproducible for a given ``random_state``.
        """
        _N_SAMPLES.check(n_samples)
        _, coords, dims, (pred, gap, kind) = self._points(X, times, horizon, n_points)
        rng = np.random.default_rng(seed_from(self.random_state) + 1)
        draws = np.repeat(pred[None], n_samples, axis=0)
        for table, d, chosen, gaps in self._tables(gap, kind):
            draws[:, chosen, d] += table.draw(d, gaps, n_samples, rng)
        coords["sample"] = np.arange(n_samples)
        variables = {"obs": (("sample", *dims), draws), "mean": (dims, pred)}
        return xr.Dataset(variables, coords=coords, attrs=self._attrs())

    def predict_quantiles(
        self, X, *, times=None, horizon=None, n_points: int = 20, q=(0.05, 0.5, 0.95)
    ) -> pd.DataFrame:
        """The prediction plus the quantiles of the training errors at its gap.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), mapping or DataFrame, optional
        horizon : float, optional
        n_points : int, default 20
            As in :meth:`LatentODE.predict_quantiles`.
        q : float or sequence of float in (0, 1)

        Returns
        -------
        DataFrame of shape (rows, features * len(q))
            Indexed by (series, time); columns a MultiIndex (feature, quantile), as
            :meth:`LatentODE.predict_quantiles`.
        """
        levels = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if levels.ndim != 1 or levels.size == 0 or not all(map(_LEVEL.ok, levels.tolist())):
            raise ValueError(f"q must be quantile levels in (0, 1); got {q!r}.")
        own = self._quantiles_per_series(X, times, horizon, n_points, 1, q=levels)
        if own is not None:
            return own
        data, t = self._checked(X, times)
        pred, gap, kind = self._evaluate(data, t)
        out = np.repeat(pred[..., None], len(levels), axis=-1)  # (series, time, feature, q)
        for table, d, chosen, gaps in self._tables(gap, kind):
            out[chosen, d] += table.quantiles(d, gaps, levels)
        index = pd.MultiIndex.from_product(
            [np.asarray(data.ids, dtype=object), t], names=["series", "time"]
        )
        columns = pd.MultiIndex.from_product(
            [[str(f) for f in self.feature_names_in_], list(levels)], names=["feature", "quantile"]
        )
        return pd.DataFrame(out.reshape(len(index), -1), index=index, columns=columns)

    def save(self, path) -> None:
        """Not supported: these rules refit in a fraction of a second on the same data."""
        raise NotImplementedError(
            f"{type(self).__name__} is not saved to a file; fit it again on the same data "
            "(it takes a fraction of a second)."
        )


class LastValue(_Rule):
    """Carry the last observation forward (LOCF), each feature on its own.

    At a query time, each feature's last observed value at or before it (its first value for
    times before its first observation; the training mean where the series never observed the
    feature). Bands: the errors of the same rule on the training series at the same gap (time
    from the value carried), in ``n_bins`` bins of equal counts.

    Parameters
    ----------
    n_bins : int, default 8
        Bins of the gap for the empirical errors.
    random_state : int or None, default None
        Seeds the choice of training pairs and the draws of :meth:`sample`.

    Attributes
    ----------
    feature_names_in_ : ndarray of str, shape (features,)
    value_mean_ : ndarray of shape (features,)
    errors_ : list
        The empirical error tables.

    Examples
    --------
    >>> from latentode import LastValue
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> locf = LastValue(random_state=0).fit(data.train)
    >>> locf.predict(data.test, times=data.test_extrapolation_times).dims
    ('series', 'time', 'feature')
    """

    def _point(self, t_obs, v_obs, query):
        value, gap = _carried(t_obs, v_obs, query)
        return value, gap, 0

    def _training_errors(self, data, d: int, rng):
        return [_carried_errors(data, d, rng)]


class LinearInterpolation(_Rule):
    """Interpolate each feature linearly between its observations; carry it beyond them.

    Between two observations of a feature, the straight line through them; before the first
    and after the last, the nearest observed value (as :class:`LastValue`). Bands: the errors
    of leaving an observation out and interpolating it from observations around it (by the
    distance to the nearer one), and of carrying values forward (by the gap), on the training
    series.

    Parameters
    ----------
    n_bins : int, default 8
    random_state : int or None, default None

    Examples
    --------
    >>> from latentode import LinearInterpolation
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> LinearInterpolation().fit(data.train).predict(data.test, times=[1.0, 2.0]).shape
    (8, 2, 2)
    """

    _kinds = 2  # 0: carried beyond the observations, 1: interpolated between them

    def _point(self, t_obs, v_obs, query):
        value, gap = _carried(t_obs, v_obs, query)
        inside = (query > t_obs[0]) & (query < t_obs[-1])
        if inside.any():
            q = query[inside]
            after = np.searchsorted(t_obs, q, side="left")
            before = after - 1
            w = (q - t_obs[before]) / (t_obs[after] - t_obs[before])
            value = value.copy()
            value[inside] = (1 - w) * v_obs[before] + w * v_obs[after]
            gap = gap.copy()
            gap[inside] = np.minimum(q - t_obs[before], t_obs[after] - q)
        return value, gap, inside.astype(int)

    def _training_errors(self, data, d: int, rng):
        gaps, errors = [], []
        budget = max(1, _MAX_PAIRS // max(1, len(data)))
        for s in data:
            t_obs, v_obs = _observed(s, d)
            if len(t_obs) < 3:
                continue
            n = min(budget, len(t_obs))
            # an interior observation left out, interpolated from observations around it:
            # mostly its neighbours, sometimes further ones (as when several values are missing)
            i = rng.integers(1, len(t_obs) - 1, size=n)
            j = np.maximum(i - rng.geometric(0.5, size=n), 0)
            k = np.minimum(i + rng.geometric(0.5, size=n), len(t_obs) - 1)
            w = (t_obs[i] - t_obs[j]) / (t_obs[k] - t_obs[j])
            pred = (1 - w) * v_obs[j] + w * v_obs[k]
            gaps.append(np.minimum(t_obs[i] - t_obs[j], t_obs[k] - t_obs[i]))
            errors.append(v_obs[i] - pred)
        return [_carried_errors(data, d, rng), _concat(gaps, errors)]


class FeatureMean(_Rule):
    """Each feature's training mean, whatever the series; bands from its spread.

    Parameters
    ----------
    n_bins : int, default 8
        Unused (the errors do not depend on a gap); kept for a common signature.
    random_state : int or None, default None

    Examples
    --------
    >>> from latentode import FeatureMean
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> FeatureMean().fit(data.train).predict(data.test, times=[1.0]).shape
    (8, 1, 2)
    """

    def _evaluate(self, data, t):
        shape = (len(data), len(t), self.n_features_in_)
        pred = np.broadcast_to(self.value_mean_, shape).copy()
        return pred, np.zeros(shape), np.zeros(shape, dtype=int)

    def _training_errors(self, data, d: int, rng):
        values = np.concatenate([s.values[:, d] for s in data])
        values = values[np.isfinite(values)]
        if len(values) > _MAX_PAIRS:
            values = rng.choice(values, _MAX_PAIRS, replace=False)
        return [(np.zeros(len(values)), values - self.value_mean_[d])]


def _concat(gaps: list, errors: list) -> tuple[np.ndarray, np.ndarray]:
    if not gaps:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(gaps), np.concatenate(errors)


class SummaryLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression on per-series summaries: the classifier users reach for first.

    Each series becomes, for every feature, its first, last, minimum, maximum and mean observed
    value and the log of its number of observations; a feature a series never observed is
    imputed with the training median and flagged. Static covariates the series carry
    (:meth:`~latentode.datasets.IrregularDataset.with_static`) join the summaries, imputed and
    flagged the same way. The summaries are standardised and fed to scikit-learn's
    :class:`~sklearn.linear_model.LogisticRegression`. One label per series.

    With a few features per series the summaries number in the hundreds, so the penalty
    matters: by default its strength is chosen by cross-validation on the training series,
    as a practitioner would (on PhysioNet's mortality task an untuned ``C=1`` scored an AUC
    0.03 below the chosen one; benchmarks page).

    Parameters
    ----------
    C : float or None, default None
        Inverse strength of the L2 penalty. None: chosen among ``Cs`` (9 from 1e-4 to 1) by
        stratified 5-fold cross-validation of the log loss on the training series (imputation
        and scaling refitted within each fold; fewer folds when a class has fewer than 5
        series, and 1.0 when one has a single series).
    max_iter : int, default 1000

    Attributes
    ----------
    C_ : float
        The penalty used: ``C``, or the one cross-validation chose.
    classes_ : ndarray of shape (classes,)
    feature_names_in_ : ndarray of str, shape (features,)
    static_names_ : ndarray of str, shape (n_static,)
        The static covariates of the training series (empty without).
    pipeline_ : sklearn.pipeline.Pipeline

    Examples
    --------
    >>> from latentode import SummaryLogisticRegression
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=60, n_obs=20, random_state=0)
    >>> clf = SummaryLogisticRegression().fit(data.train, data.clockwise_train)
    >>> clf.predict_proba(data.test).shape
    (12, 2)
    """

    _parameter_constraints = (
        real("C", low=0, low_open=True, none=True),
        integer("max_iter", low=1),
    )
    #: The penalties ``C=None`` chooses from.
    Cs = tuple(np.logspace(-4, 0, 9))

    def __init__(self, *, C: float | None = None, max_iter: int = 1000):
        self.C = C
        self.max_iter = max_iter

    @staticmethod
    def summaries(data: IrregularDataset) -> np.ndarray:
        """Summary features of each series: array of shape (series, 6 * features + n_static).

        Per feature: first, last, min, max, mean, log(1 + count); NaN where the series never
        observed the feature (count 0). Then the static covariates, NaN where unknown.
        """
        out = np.full((len(data), data.n_features, 6), np.nan)
        for i, s in enumerate(data):
            for d in range(data.n_features):
                v = s.values[np.isfinite(s.values[:, d]), d]
                out[i, d, 5] = np.log1p(v.size)
                if v.size:
                    out[i, d, :5] = v[0], v[-1], v.min(), v.max(), v.mean()
        out = out.reshape(len(data), -1)
        if data.n_static:
            out = np.concatenate([out, data.static.to_numpy(np.float64)], axis=1)
        return out

    def fit(self, X, y):
        """Fit on series ``X`` with one label per series ``y``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame indexed by (series id, time), or list of (times, values)
        y : array-like of shape (series,)

        Returns
        -------
        self
        """
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        check_params(self.get_params(deep=False), self._parameter_constraints)
        data = as_dataset(X, name="X")
        y = np.asarray(y)
        if y.shape != (len(data),):
            raise ValueError(
                f"y must hold one label per series: {len(data)} series but y has shape {y.shape}."
            )
        self.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        self.static_names_ = np.asarray(data.static_names, dtype=object)
        pipeline = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=1.0 if self.C is None else self.C, max_iter=self.max_iter),
        )
        summaries = self.summaries(data)
        _, counts = np.unique(y, return_counts=True)
        folds = min(5, int(counts.min()))
        if self.C is None and folds >= 2:  # imputer and scaler refitted within each fold
            search = GridSearchCV(
                pipeline,
                {"logisticregression__C": list(self.Cs)},
                cv=StratifiedKFold(folds),
                scoring="neg_log_loss",
            )
            pipeline = search.fit(summaries, y).best_estimator_
        else:
            pipeline.fit(summaries, y)
        self.pipeline_ = pipeline
        self.C_ = float(pipeline[-1].C)
        self.classes_ = self.pipeline_.classes_
        return self

    def _features(self, X) -> np.ndarray:
        check_is_fitted(self)
        data = as_dataset(X, name="X")
        if data.feature_names != list(self.feature_names_in_):
            raise ValueError(
                f"X has features {data.feature_names} but the model was fitted with "
                f"{list(self.feature_names_in_)}; select and order the columns the same way."
            )
        if data.static_names != list(self.static_names_):
            raise ValueError(
                f"X has static covariates {data.static_names} but the model was fitted with "
                f"{list(self.static_names_)}; attach the same ones (data.with_static(frame))."
            )
        return self.summaries(data)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities: array of shape (series, classes), columns as ``classes_``."""
        return self.pipeline_.predict_proba(self._features(X))

    def predict(self, X) -> np.ndarray:
        """Most probable class of each series: array of shape (series,)."""
        return self.pipeline_.predict(self._features(X))

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against one label per series ``y``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        y : array-like of shape (series,)
        sample_weight : array-like of shape (series,), optional

        Returns
        -------
        float
        """
        return ClassifierMixin.score(self, X, y, sample_weight=sample_weight)
