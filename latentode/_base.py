"""Machinery shared by the estimators: validation, scaling, batching, seeding, persistence.

:class:`IrregularSeriesEstimator` is the base of every estimator of the package (the Latent
ODE, its classifier and the baselines); :class:`LabelledSeriesMixin` adds the two forms of
labels (one per series, one per observation time) that the classifiers share. Nothing here is
public API; the estimators are.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import threading
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._io import read_model, write_model
from ._query import quantiles_per_series, series_grids
from ._validation import check_params, real
from .datasets import IrregularDataset, as_dataset, collate
from .datasets.parquet import ParquetSeries
from .inference import TrainingHistory

__all__ = [
    "PREDICT_CHUNK",
    "IntervalMixin",
    "IrregularSeriesEstimator",
    "LabelledSeriesMixin",
    "batch_labels",
    "resolve_device",
    "seed_from",
    "with_parameter",
]

#: Series per chunk when predicting or scoring (bounds the memory of one solve).
PREDICT_CHUNK = 512
#: Query times further than this many training spans past the training data's end warn.
_FAR = 2.0
#: Ratio of the training span to a typical series' span beyond which fit warns.
_SPREAD = 100.0
_COVERAGE = real("coverage", low=0, low_open=True, high=1, high_open=True)


def resolve_device(device) -> torch.device:
    """Map ``"auto"``, ``"cpu"``, ``"cuda"`` (or a torch.device) to a torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a device; use 'auto', 'cpu' or 'cuda'."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was asked for but CUDA is not available; use device='auto' or 'cpu'."
        )
    return dev


def seed_from(random_state) -> int:
    """An int seed from ``random_state`` (None draws one from the operating system)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(
        f"random_state must be None or an int (for save/load and reproducibility); got "
        f"{type(random_state).__name__}."
    )


#: Pyro keeps its effect-handler stack and parameter store per process, not per thread, so
#: every call that runs a Pyro model holds this lock: threads may share fitted models (their
#: calls run one at a time and give the single-thread answers), and fits in two threads run
#: one after the other.
PYRO_LOCK = threading.RLock()


def serialised(method):
    """Run ``method`` holding :data:`PYRO_LOCK` (re-entrant: nested calls do not block)."""

    @functools.wraps(method)
    def locked(*args, **kwargs):
        with PYRO_LOCK:
            return method(*args, **kwargs)

    return locked


def _check_unit(fitted: str | None, given: str | None, name: str) -> None:
    """Refuse data whose timedeltas were counted in another unit than the training data's."""
    if fitted is None or given is None:
        return
    try:
        same = pd.Timedelta(1, unit=fitted) == pd.Timedelta(1, unit=given)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: time unit {given!r} is not a pandas time unit.") from None
    if not same:
        raise ValueError(
            f"{name} counts time in {given!r} but the model was fitted on times in {fitted!r}; "
            f"build {name} with time_unit={fitted!r}."
        )


def _log_shifts(log_features, values: np.ndarray, names: list) -> np.ndarray:
    """Per feature, the shift ``c`` of its transform ``log(x + c)``, or NaN for none.

    ``log_features`` is None, ``"auto"`` (every feature never negative in ``values``) or a
    list of names (each must be never negative). ``c`` is half the feature's smallest
    positive value: small next to its typical values, and it keeps a later 0 (a reading below
    the detection limit, a value never seen in training) finite on the log scale.
    """
    shift = np.full(len(names), np.nan)
    if log_features is None:
        return shift
    wanted = names if isinstance(log_features, str) else list(log_features)
    unknown = [f for f in wanted if f not in names]
    if unknown:
        raise ValueError(f"log_features: {unknown} are not features of X; features are {names}.")
    for f in wanted:
        d = names.index(f)
        column = values[:, d][~np.isnan(values[:, d])]
        low = column.min()
        if low < 0:
            if isinstance(log_features, str):  # "auto" leaves it alone
                continue
            raise ValueError(
                f"log_features: feature {f!r} has negative values (down to {low:g}); only "
                "features that are never negative can be log-transformed."
            )
        positive = column[column > 0]
        if positive.size == 0:
            continue  # all zero: nothing to gain
        shift[d] = positive.min() / 2
    return shift


class IrregularSeriesEstimator(BaseEstimator):
    """Shared machinery: validation, scaling of values and time, batching, persistence.

    Subclasses define ``_build_module()`` and their own ``fit``; parameters live in
    ``__init__`` as in scikit-learn, and ``_parameter_constraints`` lists what each may be
    (checked by :meth:`_validate_params` at the start of ``fit``).
    """

    _parameter_constraints: tuple = ()
    #: Whether predictions depend on the time since the training data's origin (models that
    #: solve from it), so that data and query times before it are refused and far ones warn.
    _time_origin_matters = True
    #: Whether the model reads the series' static covariates (fitted with them, it needs them
    #: at prediction); others ignore them.
    _reads_static = False
    #: Parameters a file written by :meth:`save` before they existed lacks, with the value
    #: that behaves as that version did.
    _OLDER_FILES: dict = {}

    def __sklearn_tags__(self):
        """What scikit-learn may assume about the input: a collection of irregular series
        (not a 2-D array; NaN marks unobserved values), never a table to split by rows."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.allow_nan = True
        tags.non_deterministic = self.get_params(deep=False).get("random_state") is None
        return tags

    def _check_labels(self, y, data: IrregularDataset):
        """Labels as a LongTensor of shape (series,) for supervised subclasses; here None."""
        return None

    def _validate_params(self) -> None:
        """Check the parameters against ``_parameter_constraints`` (ValueError naming one)."""
        check_params(self.get_params(deep=False), self._parameter_constraints)

    # -- validation and scaling ------------------------------------------------------------
    def _fit_scaling(self, data) -> None:
        """Standardisation and time frame from ``data`` (IrregularDataset or ParquetSeries)."""
        log_features = getattr(self, "log_features", None)
        if isinstance(data, ParquetSeries):  # its summary was taken when it was opened
            if log_features is not None:
                raise ValueError(
                    "log_features: a fit streamed from a ParquetSeries standardises with the "
                    "summary taken when it was opened; store log values in the files instead."
                )
            self.value_shift_ = np.full(data.n_features, np.nan)
            mean, scale, largest = data.mean, data.std, np.nan
            t_min, t_max, typical = data.t_min, data.t_max, data.typical_span
        else:
            values = np.concatenate([s.values for s in data], axis=0)
            seen = (~np.isnan(values)).any(axis=0)
            never = [f for f, ok in zip(data.feature_names, seen, strict=True) if not ok]
            if never:
                raise ValueError(
                    f"X: feature(s) {never} are never observed in the training data; drop "
                    "those columns or add observations of them."
                )
            self.value_shift_ = _log_shifts(log_features, values, data.feature_names)
            largest = np.nanmax(np.abs(values))
            values = self._forward(values)
            with np.errstate(over="ignore", invalid="ignore"):
                mean = np.nanmean(values, axis=0)
                scale = np.nanstd(values, axis=0)
            t_min, t_max = data.t_min, data.t_max
            typical = float(np.median([s.times[-1] - s.times[0] for s in data]))
        huge = [
            f
            for f, m, v in zip(data.feature_names, mean, scale, strict=True)
            if not np.isfinite(m * v)
        ]
        if huge:
            raise ValueError(
                f"X: feature(s) {huge} hold values too large to standardise in float64 (largest "
                f"magnitude {largest:.3g}); divide them by a power of ten "
                "(change their unit) before fitting."
            )
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        self._fit_static_scaling(data)
        self.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        self.n_features_in_ = data.n_features
        self.value_mean_ = mean
        self.value_scale_ = scale
        self.time_origin_ = t_min
        self.time_unit_ = data.time_unit
        span = t_max - t_min
        self.time_scale_ = float(span) if span > 0 else 1.0
        if typical > 0 and span > _SPREAD * typical:
            warnings.warn(
                f"X: the training times span {span:g} but a typical series spans {typical:g}: "
                "the model's time scale follows the whole span, so each series' own dynamics "
                "are squeezed into a sliver of it. Measure every series from its own origin "
                "(e.g. time since admission) unless the calendar time matters.",
                UserWarning,
                stacklevel=4,
            )

    def _fit_static_scaling(self, data) -> None:
        """Names, means and SDs of the static covariates the model reads (none for models
        that do not read them, or data without them)."""
        names = list(getattr(data, "static_names", ())) if self._reads_static else []
        self.static_names_ = np.asarray(names, dtype=object)
        self.static_mean_ = np.zeros(len(names))
        self.static_scale_ = np.ones(len(names))
        if not names:
            return
        table = data.static.to_numpy(np.float64)
        known = ~np.isnan(table)
        never = [n for n, ok in zip(names, known.any(0), strict=True) if not ok]
        if never:
            raise ValueError(
                f"X: static covariate(s) {never} are unknown (NaN) for every training series; "
                "drop those columns from the static table."
            )
        with np.errstate(invalid="ignore"):
            mean, scale = np.nanmean(table, axis=0), np.nanstd(table, axis=0)
        self.static_mean_ = mean
        self.static_scale_ = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)

    def _check_static(self, data: IrregularDataset, name: str) -> None:
        """Refuse data without the static covariates the model was fitted with."""
        fitted = list(getattr(self, "static_names_", ()))
        given = data.static_names
        if not self._reads_static or given == fitted or not fitted:  # extra ones: unread
            return
        if not given:
            raise ValueError(
                f"{name} has no static covariates but the model was fitted with {fitted}; "
                "attach them with data.with_static(frame), frame indexed by series id."
            )
        unnamed = given == [f"static{i}" for i in range(len(given))]
        if not (unnamed and len(given) == len(fitted)):
            raise ValueError(
                f"{name} has static covariates {given} but the model was fitted with "
                f"{fitted}; pass the same columns in the same order."
            )

    def _scale_static(self, s: np.ndarray) -> np.ndarray:
        return (s - self.static_mean_) / self.static_scale_

    def _check_data(self, X, *, name: str = "X") -> IrregularDataset:
        data = as_dataset(X, name=name)
        self._check_static(data, name)
        if data.n_features != self.n_features_in_:
            raise ValueError(
                f"{name} has {data.n_features} features but the model was fitted with "
                f"{self.n_features_in_} ({list(self.feature_names_in_)}); pass the same features."
            )
        _check_unit(getattr(self, "time_unit_", None), data.time_unit, name)
        names = data.feature_names
        # unnamed input (lists of arrays) gets x0, x1, ... in order: either side unnamed is
        # taken in order; two namings must match
        default = [f"x{i}" for i in range(len(names))]
        fitted = list(self.feature_names_in_)
        renamed = fitted == default and not set(names) & set(default)  # fitted unnamed
        if names != default and not renamed and names != fitted:
            raise ValueError(
                f"{name} has features {names} but the model was fitted with "
                f"{list(self.feature_names_in_)}; select and order the columns the same way."
            )
        if self._time_origin_matters:
            first = min(s.times[0] for s in data)
            self._warn_if_far(first, max(s.times[-1] for s in data), f"{name}'s times")
        logged = self._logged()
        if logged is not None:
            for s in data:
                bad = np.flatnonzero((s.values[:, logged] < 0).any(0))
                if len(bad):
                    d = logged[bad[0]]
                    raise ValueError(
                        f"{name}: series {s.id!r} has feature {self.feature_names_in_[d]!r} at "
                        f"{np.nanmin(s.values[:, d]):g}, but the model was fitted on its log "
                        "(values never negative); fix the value or refit without log_features "
                        "for it."
                    )
        return data

    def _check_times(self, times, data: IrregularDataset, *, name: str = "times") -> np.ndarray:
        if times is None:
            return np.unique(np.concatenate([s.times for s in data]))
        if torch.is_tensor(times):
            times = times.detach().cpu().to(torch.float64).numpy()
        t = np.asarray(times)
        if np.issubdtype(t.dtype, np.timedelta64) or np.issubdtype(t.dtype, np.datetime64):
            raise TypeError(
                f"{name} are {t.dtype} values; pass numbers in the unit the training data was "
                "converted with (time_unit)."
            )
        if t.ndim == 0:
            t = t[None]
        if t.ndim != 1 or t.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array of times; got shape {t.shape}.")
        try:
            t = t.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numeric; got dtype {t.dtype}.") from None
        if not np.all(np.isfinite(t)):
            raise ValueError(f"{name} contains non-finite values; pass finite times.")
        if np.any(np.diff(t) <= 0):
            raise ValueError(f"{name} must be strictly increasing; sort it and drop duplicates.")
        if not self._time_origin_matters:
            return t
        self._warn_if_far(t[0], t[-1], name)
        return t

    def _grid_check(self, data: IrregularDataset):
        """A validator of one series' query times, ``check(times, name)``."""
        return lambda t, name: self._check_times(t, data, name=name)

    def _warn_if_far(self, lo: float, hi: float, what: str) -> None:
        """Warn when times reach far outside the span of the training data: earlier times are
        solved backwards from the state at the origin, later ones forwards, by dynamics never
        checked against data there."""
        start, end = self.time_origin_, self.time_origin_ + self.time_scale_
        reach = _FAR * self.time_scale_
        for beyond, edge, side, dist in (
            (lo < start - reach, start, "before its first", start - lo),
            (hi > end + reach, end, "past its last", hi - end),
        ):
            if beyond:
                warnings.warn(
                    f"{what} reach {lo if edge == start else hi:g}, "
                    f"{dist / self.time_scale_:.1f} times the span of the training data "
                    f"({self.time_scale_:g}) {side} time {edge:g}: predictions that far out "
                    "follow dynamics never checked against data there.",
                    UserWarning,
                    stacklevel=4,
                )

    def _scale_times(self, t):
        return (t - self.time_origin_) / self.time_scale_

    def _scale_values(self, v):
        return (self._forward(v) - self.value_mean_) / self.value_scale_

    def _unscale_values(self, v: torch.Tensor) -> np.ndarray:
        v = v.detach().cpu().double().numpy() if torch.is_tensor(v) else np.asarray(v)
        return self._inverse(v * self.value_scale_ + self.value_mean_)

    def _shifts(self) -> np.ndarray:
        """``value_shift_``, all NaN for estimators fitted without log features."""
        shift = getattr(self, "value_shift_", None)
        return np.full(self.n_features_in_, np.nan) if shift is None else np.asarray(shift)

    def _logged(self) -> np.ndarray | None:
        """Indices of the log-transformed features (None when there are none)."""
        shift = getattr(self, "value_shift_", None)
        if shift is None or np.isnan(shift).all():
            return None
        return np.flatnonzero(~np.isnan(shift))

    def _forward(self, v: np.ndarray, feature: np.ndarray | None = None) -> np.ndarray:
        """Values in data units to the model's (log where ``log_features`` chose it), before
        standardisation. ``v`` has the features last, or ``feature`` gives each value's."""
        logged = self._logged()
        if logged is None:
            return v
        v = np.array(v, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if feature is None:
                part = v[..., logged] + self.value_shift_[logged]
                v[..., logged] = np.log(np.maximum(part, np.finfo(np.float64).tiny))
            else:
                chosen = np.isin(feature, logged)
                part = v[..., chosen] + self.value_shift_[feature[chosen]]
                v[..., chosen] = np.log(np.maximum(part, np.finfo(np.float64).tiny))
        return v

    def _inverse(self, v: np.ndarray, feature: np.ndarray | None = None) -> np.ndarray:
        """Inverse of :meth:`_forward`: log features exponentiated, never below zero."""
        logged = self._logged()
        if logged is None:
            return v
        v = np.array(v, dtype=np.float64)
        with np.errstate(over="ignore"):
            if feature is None:
                v[..., logged] = np.maximum(np.exp(v[..., logged]) - self.value_shift_[logged], 0)
            else:
                chosen = np.isin(feature, logged)
                shift = self.value_shift_[feature[chosen]]
                v[..., chosen] = np.maximum(np.exp(v[..., chosen]) - shift, 0)
        return v

    def _log_jacobian(self, data) -> np.ndarray:
        """Per series, the log-Jacobian of the log transform at its observed values: minus
        the sum of ``log(x + shift)`` over observed log features (0 without them)."""
        logged = self._logged()
        if logged is None:
            return np.zeros(len(data))
        shift = self.value_shift_[logged]
        return np.array([-np.nansum(np.log(s.values[:, logged] + shift)) for s in data])

    def _batch(self, series, device):
        reads = len(getattr(self, "static_names_", ())) > 0
        return collate(
            series,
            device=device,
            times_transform=self._scale_times,
            values_transform=self._scale_values,
            static_transform=self._scale_static if reads else None,
            static=reads,
        )

    def _attrs(self, **extra) -> dict:
        """Attributes of xarray outputs: what made them, and the model's time frame."""
        from . import __version__

        return {
            "model": type(self).__name__,
            "latentode_version": __version__,
            "time_origin": float(self.time_origin_),
            "time_span_of_training_data": float(self.time_scale_),
            **({"time_unit": self.time_unit_} if getattr(self, "time_unit_", None) else {}),
            **extra,
        }

    def _coords(self, data: IrregularDataset, t: np.ndarray) -> dict:
        return {
            "series": np.asarray(data.ids, dtype=object),
            "time": t,
            "feature": [str(f) for f in self.feature_names_in_],
        }

    def _model_times(self, t: np.ndarray, device) -> torch.Tensor:
        return torch.as_tensor(self._scale_times(t), dtype=torch.float32, device=device)

    @contextlib.contextmanager
    def _seeded(self, seed: int, device: torch.device):
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    @contextlib.contextmanager
    def _keep_state_on_failure(self):
        """Restore every attribute if fitting fails, so a fitted model is never half-replaced."""
        snapshot = dict(self.__dict__)
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            raise

    def _generator(self, device: torch.device, offset: int = 0) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed_from(self.random_state) + offset)
        return gen

    # -- persistence -----------------------------------------------------------------------
    def _fitted_state(self) -> dict:
        history = getattr(self, "history_", None)
        return {
            "feature_names_in_": [str(f) for f in self.feature_names_in_],
            "value_mean_": self.value_mean_.tolist(),
            "value_scale_": self.value_scale_.tolist(),
            "value_shift_": [None if np.isnan(x) else float(x) for x in self._shifts()],
            "time_origin_": self.time_origin_,
            "time_scale_": self.time_scale_,
            "time_unit_": getattr(self, "time_unit_", None),
            "static_names_": [str(f) for f in getattr(self, "static_names_", ())],
            "static_mean_": np.asarray(getattr(self, "static_mean_", ())).tolist(),
            "static_scale_": np.asarray(getattr(self, "static_scale_", ())).tolist(),
            "history_": history.to_dict() if history is not None else None,
        }

    def _set_fitted_state(self, state: dict) -> None:
        self.feature_names_in_ = np.asarray(state["feature_names_in_"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.value_mean_ = np.asarray(state["value_mean_"], dtype=np.float64)
        self.value_scale_ = np.asarray(state["value_scale_"], dtype=np.float64)
        shift = state.get("value_shift_") or [None] * self.n_features_in_  # older files: none
        self.value_shift_ = np.array([np.nan if x is None else x for x in shift], dtype=np.float64)
        self.time_origin_ = float(state["time_origin_"])
        self.time_scale_ = float(state["time_scale_"])
        self.time_unit_ = state.get("time_unit_")
        # older files: no static covariates
        self.static_names_ = np.asarray(state.get("static_names_", []), dtype=object)
        self.static_mean_ = np.asarray(state.get("static_mean_", []), dtype=np.float64)
        self.static_scale_ = np.asarray(state.get("static_scale_", []), dtype=np.float64)
        if self.time_unit_ is not None:
            _check_unit(self.time_unit_, self.time_unit_, "the file")
        if state.get("history_") is not None:
            self.history_ = TrainingHistory(**state["history_"])

    def save(self, path) -> None:
        """Write the fitted estimator to ``path`` (weights and JSON configuration).

        The file holds only tensors, numbers and strings, and is read back with
        ``torch.load(..., weights_only=True)`` by :meth:`load`. It is written to a temporary
        file first and renamed, so an interrupted save leaves any earlier file intact.
        """
        check_is_fitted(self)
        bad = [k for k, w in self.model_.state_dict().items() if not torch.isfinite(w).all()]
        if bad:
            raise ValueError(
                f"cannot save: the weights {bad[:3]} hold NaN or infinite values (a diverged "
                "fit); refit with a smaller lr."
            )
        try:
            params = json.dumps(self.get_params(deep=False))
        except TypeError as err:
            raise TypeError(
                f"cannot save: a parameter is not JSON-serialisable ({err}); use plain numbers, "
                "strings, lists and dicts."
            ) from None
        write_model(
            path,
            cls_name=type(self).__name__,
            params=params,
            fitted=json.dumps(self._fitted_state()),
            state_dict=self.model_.state_dict(),
        )

    @classmethod
    def load(cls, path, *, device=None):
        """Read an estimator written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        device : str, optional
            Overrides the saved ``device`` parameter (e.g. ``"cpu"`` to load a GPU model on a
            machine without one).
        """
        payload = read_model(path, cls_name=cls.__name__)

        def refuse(what: str, err: BaseException):
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            return ValueError(f"{os.fspath(path)!r}: {what} ({detail}).")

        try:
            # parameters added since a file was written take the value that reproduces it
            est = cls(**{**cls._OLDER_FILES, **json.loads(payload["params"])})
        except (TypeError, ValueError, KeyError) as err:
            raise refuse("its parameters are not those of this latentode version", err) from None
        if device is not None:
            est.set_params(device=device)
        try:  # the constructor's gate: a file is input like any other
            est._validate_params()
        except (TypeError, ValueError) as err:
            raise refuse("it holds invalid parameters", err) from None
        try:
            est._set_fitted_state(json.loads(payload["fitted"]))
            est._check_fitted_state()
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise refuse("its fitted state is invalid", err) from None
        est.device_ = resolve_device(est.device)
        module = est._build_module()
        try:
            module.load_state_dict(payload["state_dict"])
        except (RuntimeError, TypeError, KeyError) as err:
            raise refuse("its weights do not fit the model its parameters describe", err) from None
        weights = payload["state_dict"].values()
        if not all(torch.is_floating_point(w) and torch.isfinite(w).all() for w in weights):
            raise ValueError(f"{os.fspath(path)!r}: its weights hold NaN or infinite values.")
        est.model_ = module.to(est.device_).eval()
        return est

    def _check_fitted_state(self) -> None:
        """Refuse fitted attributes no fit could have produced (from a forged file)."""
        n = len(self.feature_names_in_)
        if n < 1:
            raise ValueError("no features")
        for name in ("value_mean_", "value_scale_"):
            value = getattr(self, name)
            if value.shape != (n,) or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must be {n} finite numbers")
        if not np.all(self.value_scale_ > 0):
            raise ValueError("value_scale_ must be positive")
        shift = self._shifts()
        if shift.shape != (n,) or np.any(shift[~np.isnan(shift)] < 0):
            raise ValueError(f"value_shift_ must be {n} non-negative numbers or NaN")
        if not math.isfinite(self.time_origin_):
            raise ValueError("time_origin_ must be finite")
        if not (math.isfinite(self.time_scale_) and self.time_scale_ > 0):
            raise ValueError(f"time_scale_ must be positive and finite; got {self.time_scale_}")


class IntervalMixin:
    """Central predictive intervals from an estimator's ``predict_quantiles``, and its
    quantiles at each series' own times."""

    def _own_grids(self, X, times, horizon, n_points):
        """``(data, one grid per series)`` for a mapping of times or a horizon, or None when
        ``times`` is one grid for all."""
        if horizon is None and not isinstance(times, Mapping | pd.DataFrame):
            return None
        check_is_fitted(self)
        data = self._check_data(X)
        check = self._grid_check(data)
        grids = series_grids(data, times=times, horizon=horizon, n_points=n_points, check=check)
        return data, grids

    def _quantiles_per_series(self, X, times, horizon, n_points, draws, **kwargs):
        """``predict_quantiles`` at each series' own times (a mapping, or by default its
        observation times) or horizon, or None when ``times`` is one grid for all."""
        if times is None and horizon is None:  # each series at its own observation times
            check_is_fitted(self)
            times = {s.id: s.times for s in self._check_data(X)}
        own = self._own_grids(X, times, horizon, n_points)
        if own is None:
            return None
        sizing = self._own_chunks() if hasattr(self, "_own_chunks") else {}
        return quantiles_per_series(self.predict_quantiles, *own, draws, **sizing, **kwargs)

    def predict_interval(
        self, X, *, times=None, horizon=None, n_points=20, coverage=0.9, n_samples=None
    ) -> pd.DataFrame:
        """Central predictive intervals (observation noise included).

        Parameters
        ----------
        X, times, horizon, n_points, n_samples
            As in the estimator's ``predict_quantiles``.
        coverage : float or sequence of float in (0, 1), default 0.9

        Returns
        -------
        DataFrame
            Indexed by (series, time); columns a MultiIndex (feature, coverage, "lower" or
            "upper"), as sktime's ``predict_interval``.
        """
        levels = np.atleast_1d(np.asarray(coverage, dtype=np.float64))
        if levels.ndim != 1 or not all(map(_COVERAGE.ok, levels.tolist())):
            raise ValueError(_COVERAGE.message(coverage))
        bounds = np.concatenate([(1 - levels) / 2, (1 + levels) / 2])
        kwargs = {} if n_samples is None else {"n_samples": n_samples}
        quantiles = self.predict_quantiles(
            X, times=times, horizon=horizon, n_points=n_points, q=bounds, **kwargs
        )
        out = {}
        for feature in quantiles.columns.get_level_values(0).unique():
            for k, c in enumerate(levels):
                out[(feature, c, "lower")] = quantiles[(feature, bounds[k])]
                out[(feature, c, "upper")] = quantiles[(feature, bounds[len(levels) + k])]
        frame = pd.DataFrame(out)
        frame.columns.names = ["feature", "coverage", "bound"]
        return frame


def with_parameter(init, name: str, default):
    """The signature of ``init`` with one more keyword-only parameter (for scikit-learn)."""
    sig = inspect.signature(init)
    extra = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    return sig.replace(parameters=[*sig.parameters.values(), extra])


def batch_labels(labels, idx: list, series: list) -> torch.Tensor:
    """Labels of the chosen series: (batch,), or on the batch's union grid (batch, time).

    Parameters
    ----------
    labels : LongTensor of shape (series,), or list of LongTensor of shape (n_obs_i,)
    idx : list of int
        Indices of the chosen series.
    series : list of IrregularSeries
        The chosen series, in the order of ``idx``.
    """
    if not isinstance(labels, list):
        return labels[idx]
    grid = np.unique(np.concatenate([s.times for s in series]))  # the grid collate builds
    out = torch.full((len(idx), grid.size), -1, dtype=torch.long)
    for row, (i, s) in enumerate(zip(idx, series, strict=True)):
        out[row, np.searchsorted(grid, s.times)] = labels[i]
    return out


class LabelledSeriesMixin:
    """Labels for classifiers of irregular series: one per series, or one per observation time.

    Parses and validates ``y`` in either form, keeps ``classes_`` and ``label_per_time_``, and
    turns ``predict_proba`` into ``predict`` and an accuracy ``score``. Subclasses implement
    ``predict_proba``: an array (series, classes), or for per-time labels an
    :class:`xarray.DataArray` (series, time, class) covering each series' observation times.
    """

    @staticmethod
    def _is_per_time(y, data: IrregularDataset) -> bool:
        if isinstance(y, pd.Series):
            return isinstance(y.index, pd.MultiIndex) and y.index.nlevels == 2
        if isinstance(y, (list, tuple)) and len(y) == len(data) and len(y) > 0:
            return all(np.ndim(v) == 1 for v in y)
        return False

    def _per_time_labels(self, y, data: IrregularDataset) -> list:
        """Per-time labels as one object array per series, aligned with its times."""
        if isinstance(y, pd.Series):
            out = []
            for s in data:
                try:
                    out.append(y.loc[s.id].reindex(s.times).to_numpy(dtype=object))
                except KeyError:
                    raise ValueError(
                        f"y: series {s.id!r} has no labels; y is indexed by (series id, time)."
                    ) from None
            return out
        out = []
        for s, v in zip(data, y, strict=True):
            v = np.asarray(v, dtype=object)
            if v.shape != (s.n_obs,):
                raise ValueError(
                    f"y: series {s.id!r} has {s.n_obs} observation times but {v.shape[0]} "
                    "labels; give one label per observation time (None or NaN where unknown), "
                    "in the order of the series' sorted times."
                )
            out.append(v)
        return out

    def _check_labels(self, y, data: IrregularDataset, *, fit: bool = True):
        """Class indices of ``y``; ``fit`` sets ``classes_``, otherwise they are checked."""
        if y is None:
            raise ValueError(
                f"{type(self).__name__}.fit needs y: one label per series, or one array of "
                "labels per series (one per observation time)."
            )
        per_time = self._is_per_time(y, data)
        if not fit and per_time != self.label_per_time_:
            kind = "one per observation time" if self.label_per_time_ else "one per series"
            raise ValueError(f"y_val: labels must have the form of y ({kind}).")
        self.label_per_time_ = per_time
        if self.label_per_time_:
            per_series = self._per_time_labels(y, data)
            flat = np.concatenate(per_series)
            known = ~pd.isna(flat)
            if not known.any():
                raise ValueError("y holds no label at all; give at least one per class.")
            classes = self._classes_for(np.asarray(flat[known].tolist()), fit=fit)
            out = []
            for v in per_series:
                codes = np.full(v.shape, -1, dtype=np.int64)
                ok = ~pd.isna(v)
                if ok.any():
                    values = np.asarray(v[ok].tolist(), dtype=classes.dtype)
                    codes[ok] = np.searchsorted(classes, values)
                out.append(torch.as_tensor(codes))
            return out
        if isinstance(y, pd.Series) and set(y.index) == set(data.ids):
            y = y.loc[data.ids]  # aligned by series id
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != len(data):
            raise ValueError(
                f"y must hold one label per series: {len(data)} series but y has shape "
                f"{y.shape}; pass a 1-D array in the order of the series, or a pandas Series "
                "indexed by series id (per-time labels: one array per series)."
            )
        if pd.isna(y).any():
            first = data.ids[int(np.flatnonzero(pd.isna(y))[0])]
            raise ValueError(f"y: the label of series {first!r} is missing; drop the series.")
        classes = self._classes_for(y, fit=fit)
        return torch.as_tensor(np.searchsorted(classes, y), dtype=torch.long)

    def _classes_for(self, labels: np.ndarray, *, fit: bool) -> np.ndarray:
        classes = np.unique(labels)
        if not fit:
            unknown = [c for c in classes.tolist() if c not in self.classes_.tolist()]
            if unknown:
                raise ValueError(
                    f"y_val has classes {unknown} that y does not; validation labels must be "
                    f"among {self.classes_.tolist()}."
                )
            return self.classes_
        if len(classes) < 2:
            raise ValueError(f"y has a single class {classes.tolist()}; a classifier needs two.")
        self.classes_ = classes
        return classes

    def _fitted_state(self) -> dict:
        return {
            **super()._fitted_state(),
            "classes_": self.classes_.tolist(),
            "label_per_time_": bool(self.label_per_time_),
        }

    def _set_fitted_state(self, state: dict) -> None:
        super()._set_fitted_state(state)
        self.classes_ = np.asarray(state["classes_"])
        self.label_per_time_ = bool(state.get("label_per_time_", False))

    def predict(self, X, **kwargs):
        """Most probable class of each series, or of each observation time.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        **kwargs
            Passed to ``predict_proba`` (e.g. ``n_samples``).

        Returns
        -------
        ndarray of shape (series,)
            For one label per series.
        list of ndarray of shape (n_obs_i,)
            For per-time labels: for each series, the class at each of its observation times.
        """
        proba = self.predict_proba(X, **kwargs)
        if not self.label_per_time_:
            return self.classes_[proba.argmax(1)]
        data = self._check_data(X)
        best = proba.argmax("class")
        return [self.classes_[best.sel(series=s.id, time=s.times).values] for s in data]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against the labels ``y`` (higher is better).

        For per-time labels, the share of labelled observation times classified correctly.
        The evidence lower bound of the series is :meth:`score_samples`.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        y : labels in either form :meth:`fit` takes
        sample_weight : array-like of shape (series,), optional
            One label per series only.

        Returns
        -------
        float
        """
        if not self.label_per_time_:
            return ClassifierMixin.score(self, X, y, sample_weight=sample_weight)
        data = self._check_data(X)
        truth = np.concatenate(self._per_time_labels(y, data))
        pred = np.concatenate(self.predict(data))
        known = ~pd.isna(truth)
        return float(np.mean(pred[known].astype(str) == truth[known].astype(str)))
