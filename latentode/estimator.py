"""scikit-learn-style estimators over irregular series.

:class:`LatentODE` ties the data containers, the Pyro model, the solver and the SVI loop
together behind ``fit`` / ``predict`` / ``sample`` / ``score`` / ``save`` / ``load``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import math
import os
import re
import warnings

import numpy as np
import pandas as pd
import torch
import xarray as xr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._io import (
    content_digest,
    data_fingerprint,
    read_payload,
    remove_stale_temporaries,
    write_atomic,
)
from .datasets import IrregularDataset, as_dataset, collate
from .inference import (
    DataParallel,
    TrainingHistory,
    make_inference_data,
    per_series_elbo,
    posterior_predictive,
    train_svi,
)
from .models import ENCODERS, POSTERIORS, PRECISIONS, LatentODEModel
from .solvers import SOLVER_METHODS

__all__ = ["LatentODE", "LatentODEClassifier"]

FORMAT_NAME = "latentode"
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "latentode-checkpoint"
CHECKPOINT_VERSION = 1
# parameters that may change between an interrupted fit and its resumption
_RESUMABLE_CHANGES = frozenset({"max_epochs", "patience", "verbose", "device"})
_PREDICT_CHUNK = 512

#: Weightings of the observations in the training likelihood (see ``LatentODE``).
OBS_WEIGHTINGS = ("point", "series_feature")

logger = logging.getLogger(__name__)


def _to_cpu(obj):
    """Copy of a nested structure of dicts, lists and tensors with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, _to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


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


def _seed_from(random_state) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(
        f"random_state must be None or an int (for save/load and reproducibility); got "
        f"{type(random_state).__name__}."
    )


_DEFAULT_NAME = re.compile(r"^x\d+$")


def check_positive_int(name: str, value) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is an integer of at least 1."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")


class IrregularSeriesEstimator(BaseEstimator):
    """Shared machinery: validation, scaling of values and time, batching, persistence.

    Subclasses define ``_build_module()`` and their own ``fit``; parameters live in
    ``__init__`` as in scikit-learn.
    """

    # -- validation and scaling ------------------------------------------------------------
    def _fit_scaling(self, data: IrregularDataset) -> None:
        values = np.concatenate([s.values for s in data], axis=0)
        seen = (~np.isnan(values)).any(axis=0)
        never = [f for f, ok in zip(data.feature_names, seen, strict=True) if not ok]
        if never:
            raise ValueError(
                f"X: feature(s) {never} are never observed in the training data; drop those "
                "columns or add observations of them."
            )
        mean = np.nanmean(values, axis=0)
        scale = np.nanstd(values, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        self.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        self.n_features_in_ = data.n_features
        self.value_mean_ = mean
        self.value_scale_ = scale
        self.time_origin_ = data.t_min
        span = data.t_max - data.t_min
        self.time_scale_ = float(span) if span > 0 else 1.0

    def _check_data(self, X, *, name: str = "X") -> IrregularDataset:
        data = as_dataset(X, name=name)
        if data.n_features != self.n_features_in_:
            raise ValueError(
                f"{name} has {data.n_features} features but the model was fitted with "
                f"{self.n_features_in_} ({list(self.feature_names_in_)}); pass the same features."
            )
        names = data.feature_names
        if not all(_DEFAULT_NAME.match(n) for n in names) and names != list(self.feature_names_in_):
            raise ValueError(
                f"{name} has features {names} but the model was fitted with "
                f"{list(self.feature_names_in_)}; select and order the columns the same way."
            )
        early = [s.id for s in data if s.times[0] < self.time_origin_]
        if early:
            raise ValueError(
                f"{name}: series {early[0]!r} (and {len(early) - 1} more) has observations before "
                f"the time origin {self.time_origin_} of the training data; times must be "
                "measured from the same origin as in fit."
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
        if t[0] < self.time_origin_:
            raise ValueError(
                f"{name} starts at {t[0]}, before the time origin {self.time_origin_} of the "
                "training data; query times at or after it."
            )
        return t

    def _scale_times(self, t):
        return (t - self.time_origin_) / self.time_scale_

    def _scale_values(self, v):
        return (v - self.value_mean_) / self.value_scale_

    def _unscale_values(self, v: torch.Tensor) -> np.ndarray:
        v = v.detach().cpu().double().numpy()
        return v * self.value_scale_ + self.value_mean_

    def _batch(self, series, device):
        return collate(
            series,
            device=device,
            times_transform=self._scale_times,
            values_transform=self._scale_values,
        )

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
        gen.manual_seed(_seed_from(self.random_state) + offset)
        return gen

    # -- persistence -----------------------------------------------------------------------
    def _fitted_state(self) -> dict:
        history = getattr(self, "history_", None)
        return {
            "feature_names_in_": [str(f) for f in self.feature_names_in_],
            "value_mean_": self.value_mean_.tolist(),
            "value_scale_": self.value_scale_.tolist(),
            "time_origin_": self.time_origin_,
            "time_scale_": self.time_scale_,
            "history_": history.to_dict() if history is not None else None,
        }

    def _set_fitted_state(self, state: dict) -> None:
        self.feature_names_in_ = np.asarray(state["feature_names_in_"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.value_mean_ = np.asarray(state["value_mean_"], dtype=np.float64)
        self.value_scale_ = np.asarray(state["value_scale_"], dtype=np.float64)
        self.time_origin_ = float(state["time_origin_"])
        self.time_scale_ = float(state["time_scale_"])
        if state.get("history_") is not None:
            self.history_ = TrainingHistory(**state["history_"])

    def save(self, path) -> None:
        """Write the fitted estimator to ``path`` (weights and JSON configuration).

        The file holds only tensors, numbers and strings, and is read back with
        ``torch.load(..., weights_only=True)`` by :meth:`load`. It is written to a temporary
        file first and renamed, so an interrupted save leaves any earlier file intact.
        """
        check_is_fitted(self)
        try:
            params = json.dumps(self.get_params(deep=False))
        except TypeError as err:
            raise TypeError(
                f"cannot save: a parameter is not JSON-serialisable ({err}); use plain numbers, "
                "strings, lists and dicts."
            ) from None
        payload = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "class": type(self).__name__,
            "params": params,
            "fitted": json.dumps(self._fitted_state()),
            "state_dict": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
        }
        write_atomic(payload, path)

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
        payload = read_payload(
            path, fmt=FORMAT_NAME, version=FORMAT_VERSION, what="latentode model file"
        )
        if payload.get("class") != cls.__name__:
            raise ValueError(
                f"{path!s} holds a {payload.get('class')}, not a {cls.__name__}; load it with "
                f"{payload.get('class')}.load."
            )
        est = cls(**json.loads(payload["params"]))
        if device is not None:
            est.set_params(device=device)
        est._set_fitted_state(json.loads(payload["fitted"]))
        est.device_ = resolve_device(est.device)
        module = est._build_module()
        module.load_state_dict(payload["state_dict"])
        est.model_ = module.to(est.device_).eval()
        return est


class LatentODE(IrregularSeriesEstimator):
    """Latent ODE for irregularly sampled series, fitted by stochastic variational inference.

    The model of Chen et al. (2018) and Rubanova et al. (2019): a recognition network reads a
    series backwards in time and gives ``q(z0 | x)``; a latent ODE ``dz/dt = f(z)`` carries
    ``z0`` to every query time; a decoder maps ``z(t)`` to the observations. Optionally a
    Poisson process scores *when* observations were taken.

    Parameters
    ----------
    latent_dim : int, default 4
        Size of the latent state.
    ode_hidden_dim : int, default 50
        Width of the dynamics MLP.
    ode_layers : int, default 3
        Linear layers of the dynamics MLP.
    encoder : {"gru", "rnn", "odernn"}, default "gru"
        Recognition network run backwards in time: a GRU over (values, mask, time gaps); a
        plain ``tanh`` RNN over the same inputs, as in Chen et al. (2018) — about a fifth of
        the GRU's cost on the CPU, for series without long-range dependencies; or the ODE-RNN
        of Rubanova et al. (2019), whose state follows an ODE between observations and takes a
        mask-aware GRU update at each.
    guide : {"normal", "cnf"}, default "normal"
        Family of the variational posterior ``q(z0 | x)``: the encoder's diagonal Gaussian, or
        that Gaussian pushed through a continuous normalizing flow shared by all series
        (:class:`latentode.flows.CNF`), for posteriors that are skewed, curved or multimodal.
        The flow's solves make training several times slower.
    encoder_hidden_dim : int, default 50
        Width of the recognition network's state.
    decoder_hidden_dim : int, default 50
        Width of the decoder MLP.
    poisson : bool, default False
        Add the Poisson-process likelihood of the observation times.
    obs_std : float, list of float or None, default None
        Fixed observation standard deviation in the data's units: one number for every
        feature, or a list with one per feature (e.g. known measurement noise); None learns
        one per feature.
    method : str, default "dopri5"
        ODE solver (see :data:`latentode.solvers.SOLVER_METHODS`).
    rtol, atol : float, default 1e-3, 1e-4
        Solver tolerances (on the internally standardised scale).
    solver_options : dict, optional
        Passed to the solver, e.g. ``{"step_size": 0.05}`` (fixed-step methods) or
        ``{"max_num_steps": 1000}``.
    adjoint : {False, True, "checkpoint"}, default False
        How gradients go through the solves: False backpropagates through the solver; True
        uses the continuous adjoint (memory flat in the number of solver steps, slower);
        ``"checkpoint"`` recomputes one step at a time in the backward pass (memory of one
        state per step, backward cost about one forward). See
        :class:`~latentode.solvers.ODESolver`.
    kinetic_weight, jacobian_weight : float, default 0.0
        Regularise the dynamics in training by the integrated kinetic energy and Jacobian
        Frobenius norm of the latent paths (Finlay et al. 2020; computed along the same
        solve): straighter, smoother paths that the adaptive solver crosses in fewer steps.
        Typical weights 0.01–0.1; ``history_.nfe_forward`` shows the effect.
    solver_backend : {"auto", "native", "torchdiffeq"}, default "auto"
        ``"auto"`` uses this package's Dormand–Prince loop for ``method="dopri5"`` (faster
        for these small networks) and torchdiffeq otherwise; ``"torchdiffeq"`` forces the
        reference implementation.
    precision : {"32", "bf16-mixed"}, default "32"
        ``"bf16-mixed"``: the recognition network, decoder and classifier compute in bfloat16
        under ``torch.autocast`` (a speed-up on GPUs with bfloat16 units; none on most CPUs),
        while the ODE solves, likelihoods, parameters and gradients stay float32. See
        :class:`~latentode.models.LatentODEModel`.
    max_nfe : int or None, default 10000
        Cap on function evaluations of one ODE solve; a solve that needs more (stiff or
        exploding dynamics) fails with :class:`~latentode.SolverError` instead of running on.
    max_epochs : int, default 100
    batch_size : int, default 50
    lr : float, default 1e-2
        Adam learning rate.
    lr_decay : float, default 0.99
        Learning-rate factor per epoch.
    average_epochs : int, default 0
        Weight averaging: the fitted parameters are the mean of those at the end of each of
        the last ``average_epochs`` epochs (Izmailov et al. 2018), which evens out the noise
        of the last stochastic steps; 0 keeps the last epoch's. With validation data the
        average is kept only if it scores no worse than the best epoch. On PhysioNet
        extrapolation, averaging the last 20 of 60 epochs lowered the error by about 3% (see
        the benchmarks page).
    num_particles : int, default 1
        ``z0`` samples per series in each ELBO estimate.
    kl_anneal_epochs : int, default 0
        Epochs over which the weight of the KL term rises linearly to ``kl_weight``.
    kl_weight : float, default 1.0
        Weight of the KL term once annealing is over. 1 maximises the ELBO. Below 1 (a
        beta-VAE's weighting) the posterior ``q(z0 | x)`` may sit tighter than the prior
        allows, which sharpens reconstructions and forecasts at the cost of calibration: the
        credible bands of :meth:`predict` narrow, and the training loss is no longer a bound on
        the data's likelihood. Rubanova et al. (2019) trained their PhysioNet models so: a
        weight of 0 for 50 epochs, then ``1 - 0.993 ** (epoch - 50)``, at most 0.30 after
        100 epochs. Validation (best epoch, early stopping) always scores the full ELBO.
    obs_weighting : {"point", "series_feature"}, default "point"
        How the training likelihood weighs observations. ``"point"``: each observed value
        counts once (the ELBO). ``"series_feature"``: each observed (series, feature) pair
        counts the same in total, its observations sharing it equally, so a channel measured
        twice in a series weighs as much as one measured a hundred times — the weighting of
        the per-(series, feature) error of :func:`latentode.metrics.series_feature_mse` and
        of the training loss in the reference code of Rubanova et al. (2019). The pairs'
        common weight is the training data's mean number of observations per observed pair,
        so the likelihood keeps its overall weight against the KL term. A weighted objective,
        not the ELBO; validation (best epoch, early stopping) and :meth:`score` always use the
        unweighted ELBO. On PhysioNet extrapolation (three splits) it lowered the per-(stay,
        channel) error by 1.4–6.6% and raised the error per observed value by 3–7% (see the
        benchmarks page): choose the weighting of the metric that matters.
    clip_norm : float or None, default 10.0
        Gradient-norm clipping.
    subsample : float, default 1.0
        Fraction of each training series' observed time points kept in each mini-batch, drawn
        afresh every time (data augmentation as in Rubanova et al. 2019); 1 keeps all.
    encode_fraction : float, default 1.0
        Below 1, forecast training: in each mini-batch the encoder reads each series only up to
        a random fraction ``u ~ Uniform(encode_fraction, 1)`` of its observed span while the
        likelihood scores all of it, so that ``z0`` inferred from early observations must
        explain later ones. Helps long extrapolation; 1 encodes everything.
    patience : int or None, default None
        Early stopping on validation data given to :meth:`fit`.
    device : {"auto", "cpu", "cuda"}, default "auto"
    random_state : int or None, default None
        Seeds initialisation, shuffling and sampling; the same value gives the same results.
    verbose : bool or "force", default False
        Progress bar during fit (on a terminal, or always with "force").

    Attributes
    ----------
    model_ : LatentODEModel
        The fitted Pyro model and guide.
    history_ : TrainingHistory
    feature_names_in_ : ndarray of str, shape (features,)
    n_features_in_ : int
    value_mean_, value_scale_ : ndarray of shape (features,)
        Per-feature standardisation fitted on the training data.
    time_origin_, time_scale_ : float
        Model time is ``(t - time_origin_) / time_scale_``; ``z0`` is the state at the origin.
    device_ : torch.device

    Examples
    --------
    >>> from latentode import LatentODE
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> model = LatentODE(max_epochs=2, random_state=0).fit(data.train)
    >>> model.predict(data.test, times=data.test_extrapolation_times).dims
    ('series', 'time', 'feature')
    """

    def __init__(
        self,
        *,
        latent_dim: int = 4,
        ode_hidden_dim: int = 50,
        ode_layers: int = 3,
        encoder: str = "gru",
        guide: str = "normal",
        encoder_hidden_dim: int = 50,
        decoder_hidden_dim: int = 50,
        poisson: bool = False,
        obs_std: float | None = None,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        solver_options: dict | None = None,
        adjoint: bool | str = False,
        solver_backend: str = "auto",
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        precision: str = "32",
        max_nfe: int | None = 10_000,
        max_epochs: int = 100,
        batch_size: int = 50,
        lr: float = 1e-2,
        lr_decay: float = 0.99,
        average_epochs: int = 0,
        num_particles: int = 1,
        kl_anneal_epochs: int = 0,
        kl_weight: float = 1.0,
        obs_weighting: str = "point",
        clip_norm: float | None = 10.0,
        subsample: float = 1.0,
        encode_fraction: float = 1.0,
        patience: int | None = None,
        device: str = "auto",
        random_state: int | None = None,
        verbose: bool | str = False,
    ):
        self.latent_dim = latent_dim
        self.ode_hidden_dim = ode_hidden_dim
        self.ode_layers = ode_layers
        self.encoder = encoder
        self.guide = guide
        self.encoder_hidden_dim = encoder_hidden_dim
        self.decoder_hidden_dim = decoder_hidden_dim
        self.poisson = poisson
        self.obs_std = obs_std
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.solver_options = solver_options
        self.adjoint = adjoint
        self.solver_backend = solver_backend
        self.kinetic_weight = kinetic_weight
        self.jacobian_weight = jacobian_weight
        self.precision = precision
        self.max_nfe = max_nfe
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.average_epochs = average_epochs
        self.num_particles = num_particles
        self.kl_anneal_epochs = kl_anneal_epochs
        self.kl_weight = kl_weight
        self.obs_weighting = obs_weighting
        self.clip_norm = clip_norm
        self.subsample = subsample
        self.encode_fraction = encode_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- parameters --------------------------------------------------------------------------
    def _validate_params(self) -> None:
        for name in (
            "latent_dim",
            "ode_hidden_dim",
            "ode_layers",
            "encoder_hidden_dim",
            "decoder_hidden_dim",
            "max_epochs",
            "batch_size",
            "num_particles",
        ):
            check_positive_int(name, getattr(self, name))
        if self.encoder not in ENCODERS:
            raise ValueError(
                f"encoder={self.encoder!r} is not available; use one of {list(ENCODERS)}."
            )
        if self.method not in SOLVER_METHODS:
            raise ValueError(
                f"method={self.method!r} is not a known ODE solver; choose one of "
                f"{list(SOLVER_METHODS)}."
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision={self.precision!r} is not available; use one of {PRECISIONS}."
            )
        if self.guide not in POSTERIORS:
            raise ValueError(f"guide={self.guide!r} is not available; use one of {POSTERIORS}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number; got {self.lr!r}.")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1]; got {self.lr_decay!r}.")
        if self.obs_std is not None:
            try:
                std = np.asarray(self.obs_std, dtype=float)
            except (TypeError, ValueError):
                std = np.asarray([np.nan])
            if std.ndim > 1 or std.size == 0 or not np.all(np.isfinite(std) & (std > 0)):
                raise ValueError(
                    "obs_std must be None (learned), a positive number, or a list of positive "
                    f"numbers (one per feature); got {self.obs_std!r}."
                )
        if self.max_nfe is not None:
            check_positive_int("max_nfe", self.max_nfe)
        if not (
            isinstance(self.average_epochs, (int, np.integer))
            and not isinstance(self.average_epochs, bool)
            and 0 <= self.average_epochs <= self.max_epochs
        ):
            raise ValueError(
                f"average_epochs must be an integer from 0 to max_epochs={self.max_epochs}; "
                f"got {self.average_epochs!r}."
            )
        if self.obs_weighting not in OBS_WEIGHTINGS:
            raise ValueError(
                f"obs_weighting={self.obs_weighting!r} is not available; use one of "
                f"{list(OBS_WEIGHTINGS)}."
            )
        if not (isinstance(self.subsample, (int, float)) and 0 < self.subsample <= 1):
            raise ValueError(f"subsample must be in (0, 1]; got {self.subsample!r}.")
        if not (isinstance(self.encode_fraction, (int, float)) and 0 < self.encode_fraction <= 1):
            raise ValueError(
                f"encode_fraction must be in (0, 1]; got {self.encode_fraction!r}."
            )
        if self.kl_anneal_epochs < 0:
            raise ValueError(
                f"kl_anneal_epochs must be non-negative; got {self.kl_anneal_epochs!r}."
            )
        if not (
            isinstance(self.kl_weight, (int, float))
            and not isinstance(self.kl_weight, bool)
            and 0 < self.kl_weight < math.inf
        ):
            raise ValueError(
                f"kl_weight must be a positive number (1 for the ELBO); got {self.kl_weight!r}."
            )

    def _build_module(self) -> LatentODEModel:
        obs_std = None
        if self.obs_std is not None:
            std = np.asarray(self.obs_std, dtype=float)
            if std.ndim == 1 and std.size != self.n_features_in_:
                raise ValueError(
                    f"obs_std has {std.size} values but the data have {self.n_features_in_} "
                    f"features ({list(self.feature_names_in_)}); give one per feature or one "
                    "number for all."
                )
            obs_std = torch.as_tensor(std / self.value_scale_, dtype=torch.float32)
        return LatentODEModel(
            self.n_features_in_,
            latent_dim=self.latent_dim,
            ode_hidden_dim=self.ode_hidden_dim,
            ode_layers=self.ode_layers,
            encoder=self.encoder,
            encoder_hidden_dim=self.encoder_hidden_dim,
            decoder_hidden_dim=self.decoder_hidden_dim,
            poisson=self.poisson,
            obs_std=obs_std,
            posterior=self.guide,
            kinetic_weight=self.kinetic_weight,
            jacobian_weight=self.jacobian_weight,
            precision=self.precision,
            solver_kwargs=dict(
                method=self.method,
                rtol=self.rtol,
                atol=self.atol,
                options=self.solver_options,
                adjoint=self.adjoint,
                max_nfe=None if self.max_nfe is None else int(self.max_nfe),
                backend=self.solver_backend,
            ),
            **self._head_kwargs(),
        )

    def _head_kwargs(self) -> dict:
        """Extra arguments of the Pyro module (a classifier head in subclasses)."""
        return {}

    def _check_labels(self, y, data: IrregularDataset):
        """Labels as a LongTensor of shape (series,) for supervised subclasses; here None."""
        return None

    # -- fit ---------------------------------------------------------------------------------
    def fit(
        self,
        X,
        y=None,
        *,
        validation_data=None,
        checkpoint=None,
        checkpoint_every: int = 10,
        resume: bool = False,
    ):
        """Fit the model to irregular series.

        Parameters
        ----------
        X : IrregularDataset, DataFrame indexed by (series id, time), or list of (times, values)
            Training series; NaN marks unobserved values.
        y : None
            Ignored (unsupervised).
        validation_data : same types as ``X``, optional
            Held-out series; the parameters of the epoch with the best validation ELBO are
            kept, and ``patience`` stops training early.
        checkpoint : str or path-like, optional
            File to which the whole training state (parameters, optimiser, random streams,
            history) is written every ``checkpoint_every`` epochs, at the end and on
            ``KeyboardInterrupt``. Each write goes to a temporary file that is then renamed, so
            a killed process leaves the previous checkpoint intact.
        checkpoint_every : int, default 10
        resume : bool, default False
            Continue from ``checkpoint`` if it exists (else start afresh). The data and the
            parameters must be those of the interrupted fit, except ``max_epochs``,
            ``patience``, ``verbose`` and ``device``; a seeded resumed fit on the CPU ends with
            exactly the parameters of an uninterrupted one.

        Returns
        -------
        self

        Notes
        -----
        A step whose loss or gradients are not finite, or whose ODE solve fails, is rolled
        back to the start of its epoch and retried with half the learning rate (three times at
        most, with a ``RuntimeWarning``); then :class:`FloatingPointError` is raised and the
        estimator keeps what it held before ``fit``. ``KeyboardInterrupt`` (Ctrl-C) ends
        training at the last completed epoch with a warning: the estimator is fitted and
        usable, and ``history_.interrupted`` is True.
        """
        self._validate_params()
        check_positive_int("checkpoint_every", checkpoint_every)
        if resume and checkpoint is None:
            raise ValueError("resume=True needs checkpoint=<path of the checkpoint file>.")
        if checkpoint is not None:
            folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise ValueError(
                    f"checkpoint={os.fspath(checkpoint)!r}: the folder {folder!r} does not exist "
                    "or is not writable; create it first (checked now rather than after the "
                    "first epochs of training)."
                )
        data = as_dataset(X, name="X")
        with self._keep_state_on_failure():
            labels = self._check_labels(y, data)
            self._fit(data, validation_data, checkpoint, checkpoint_every, resume, labels=labels)
        if self.history_.interrupted:
            warnings.warn(
                f"fit was interrupted after {len(self.history_.loss)} epochs; the estimator "
                "holds the parameters of the last completed (or best validated) epoch"
                + (
                    " and can continue with fit(..., checkpoint=..., resume=True)."
                    if checkpoint is not None
                    else "."
                ),
                RuntimeWarning,
                stacklevel=2,
            )
        return self

    def _fit(
        self, data, validation_data, checkpoint, checkpoint_every, resume, *, labels=None
    ) -> None:
        """Fit on validated ``data``.

        ``labels`` is None, a LongTensor of shape (series,), or for per-time labels a list of
        LongTensors of shape (n_obs_i,) (``-1`` = no label).
        """
        seed = _seed_from(self.random_state)
        self.device_ = resolve_device(self.device)
        dev = self.device_
        if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
            # one GPU per process under torchrun
            self.device_ = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(self.device_)
        parallel = DataParallel.from_environment(self.device_)
        if parallel is not None:  # every process starts from rank 0's seed
            seed = parallel.broadcast_int(seed)
        self._fit_scaling(data)
        validation = None
        if validation_data is not None:
            val_x, val_y = validation_data, None
            if labels is not None and isinstance(validation_data, tuple):
                if len(validation_data) != 2:
                    raise ValueError(
                        "validation_data must be X_val or a pair (X_val, y_val); got a tuple of "
                        f"{len(validation_data)}."
                    )
                val_x, val_y = validation_data
            val = self._check_data(val_x, name="validation_data")
            val_labels = None if val_y is None else self._check_labels(val_y, val, fit=False)
            validation = []
            for i in range(0, len(val), _PREDICT_CHUNK):
                chunk = val[i : i + _PREDICT_CHUNK]
                batch = self._batch(chunk, self.device_)
                if val_labels is not None:
                    rows = list(range(i, i + len(chunk)))
                    chosen = _batch_labels(val_labels, rows, list(chunk))
                    batch = dataclasses.replace(batch, labels=chosen.to(self.device_))
                validation.append(batch)
        resume_from, write = None, None
        if checkpoint is not None:  # the data's fingerprint is needed only to checkpoint
            fingerprint = data_fingerprint(data)
            if labels is not None:
                fingerprint += ":" + content_digest(
                    torch.cat(labels) if isinstance(labels, list) else labels
                )
            resume_from = self._read_checkpoint(checkpoint, fingerprint) if resume else None
            write = functools.partial(
                self._write_checkpoint, os.fspath(checkpoint), fingerprint=fingerprint
            )
        if parallel is not None and not parallel.is_main:
            write = None  # only rank 0 writes checkpoints
        series = list(data)
        with self._seeded(seed, self.device_):
            module = self._build_module().to(self.device_)
            generator = torch.Generator().manual_seed(seed)  # shuffles: the same everywhere
            draws = generator
            if parallel is not None:  # each process draws its own noise for its own series
                draws = torch.Generator().manual_seed(seed + 1 + parallel.rank)
                torch.manual_seed(seed + 1 + parallel.rank)

            whole = []  # the whole data set, collated once, for full-batch training
            pair_weight = None
            if self.obs_weighting == "series_feature":  # observations per observed pair
                counts = np.concatenate([np.isfinite(s.values).sum(0) for s in series])
                pair_weight = float(counts.sum() / max(np.count_nonzero(counts), 1))

            def make_batch(idx):
                if len(idx) == len(series):  # same union grid: reorder the rows, no re-collation
                    if not whole:
                        whole.append(self._batch(series, self.device_))
                    batch = whole[0].rows(idx)
                else:
                    batch = self._batch([series[i] for i in idx.tolist()], self.device_)
                batch = batch.subsample(self.subsample, generator=draws)
                if pair_weight is not None:
                    batch = batch.weight_pairs(pair_weight)
                if labels is not None:
                    chosen = _batch_labels(labels, idx.tolist(), [series[i] for i in idx.tolist()])
                    batch = dataclasses.replace(batch, labels=chosen.to(self.device_))
                return batch.truncate_encoder(self.encode_fraction, generator=draws)

            self.history_ = train_svi(
                module,
                make_batch,
                len(series),
                max_epochs=self.max_epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                lr_decay=self.lr_decay,
                num_particles=self.num_particles,
                kl_anneal_epochs=self.kl_anneal_epochs,
                kl_final=float(self.kl_weight),
                clip_norm=self.clip_norm,
                validation=validation,
                patience=self.patience,
                generator=generator,
                verbose=self.verbose if parallel is None or parallel.is_main else False,
                checkpoint=write,
                checkpoint_every=checkpoint_every,
                resume_from=resume_from,
                parallel=parallel,
                average_epochs=self.average_epochs,
            )
        self.model_ = module

    # -- checkpoints -------------------------------------------------------------------------
    def _comparable_params(self) -> dict:
        params = json.loads(json.dumps(self.get_params(deep=False)))
        return {k: v for k, v in params.items() if k not in _RESUMABLE_CHANGES}

    def _write_checkpoint(self, path: str, state: dict, *, fingerprint: str) -> None:
        write_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                "format_version": CHECKPOINT_VERSION,
                "class": type(self).__name__,
                "params": json.dumps(self._comparable_params()),
                "data_fingerprint": fingerprint,
                "training": _to_cpu(state),
            },
            path,
        )

    def _read_checkpoint(self, path, fingerprint: str) -> dict | None:
        remove_stale_temporaries(path)
        if not os.path.exists(os.fspath(path)):
            logger.info("no checkpoint at %s; starting afresh", path)
            return None
        payload = read_payload(
            path, fmt=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="latentode checkpoint"
        )
        if payload.get("class") != type(self).__name__:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} belongs to a {payload.get('class')}, not a "
                f"{type(self).__name__}."
            )
        saved, current = json.loads(payload["params"]), self._comparable_params()
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} was written with other values of {changed}; "
                "resume with the same parameters (only max_epochs, patience, verbose and device "
                "may change) or pass resume=False to start afresh."
            )
        if payload["data_fingerprint"] != fingerprint:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} was written for different training data; "
                "resume with the same X or pass resume=False to start afresh."
            )
        # tensors are moved onto the model's device by load_state_dict
        return payload["training"]

    # -- prediction --------------------------------------------------------------------------
    def _draw(self, X, times, n_samples: int, *, sites):
        """Posterior predictive draws at query times, chunked over series.

        Returns
        -------
        data : IrregularDataset
        t : ndarray of shape (time,)
        draws : dict of str to Tensor
            As :func:`latentode.inference.posterior_predictive` returns them (model units),
            concatenated over series.
        """
        check_is_fitted(self)
        check_positive_int("n_samples", n_samples)
        data = self._check_data(X)
        t = self._check_times(times, data)
        query = self._model_times(t, self.device_)
        chunks = []
        with self._seeded(_seed_from(self.random_state), self.device_):
            for i in range(0, len(data), _PREDICT_CHUNK):
                batch = self._batch(data[i : i + _PREDICT_CHUNK], self.device_)
                chunks.append(
                    posterior_predictive(
                        self.model_,
                        batch.times,
                        batch.values,
                        batch.mask,
                        query,
                        n_samples=n_samples,
                        sites=sites,
                    )
                )
        return data, t, {s: torch.cat([c[s] for c in chunks], dim=1) for s in sites}

    def predict(self, X, *, times=None, n_samples: int = 32) -> xr.DataArray:
        """Posterior mean of the series at query times, given their observed points.

        Times inside a series' observed window interpolate it; later times extrapolate.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
            The series to condition on.
        times : array-like of shape (time,), optional
            Increasing query times in the data's units; default the union of the series'
            observation times. Any time at or after the training data's time origin is
            allowed, also before a series' own first observation (``z0`` is the state at the
            origin).
        n_samples : int, default 32
            Monte Carlo draws of ``z0`` averaged for the mean.

        Returns
        -------
        xarray.DataArray of shape (series, time, feature)
            In the data's units, with series ids, times and feature names as coordinates.
        """
        data, t, draws = self._draw(X, times, n_samples, sites=("mean",))
        values = self._unscale_values(draws["mean"].mean(0))
        return xr.DataArray(
            values,
            dims=("series", "time", "feature"),
            coords=self._coords(data, t),
            name="mean",
        )

    def sample(
        self, X, *, times=None, n_samples: int = 100, include_latent: bool = False
    ) -> xr.Dataset:
        """Draws from the posterior predictive distribution at query times.

        Runs the model's guide and its generative mode through
        :class:`pyro.infer.Predictive` (see :func:`latentode.inference.posterior_predictive`):
        ``z0 ~ q(z0 | x)``, solved to ``times``, decoded, and observation noise drawn. Draws are
        reproducible for a given ``random_state``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), optional
            Default the union of the series' observation times.
        n_samples : int, default 100
        include_latent : bool, default False
            Also return the latent trajectories ``z``.

        Returns
        -------
        xarray.Dataset
            ``obs (sample, series, time, feature)``: draws including observation noise;
            ``mean (sample, series, time, feature)``: the decoded trajectory of each draw;
            ``intensity (sample, series, time, feature)``: the expected number of observations
            per unit of time of each feature, for models fitted with ``poisson=True``;
            ``z0 (sample, series, latent)`` and ``z (sample, series, time, latent)`` when
            ``include_latent``. Values in the data's units, times in the data's time units.
        """
        sites = ["mean", "obs"]
        if self.poisson:
            sites.append("intensity")
        if include_latent:
            sites += ["z0", "z"]
        data, t, draws = self._draw(X, times, n_samples, sites=tuple(sites))
        coords = self._coords(data, t)
        coords["sample"] = np.arange(n_samples)
        dims = ("sample", "series", "time", "feature")
        variables = {
            "obs": (dims, self._unscale_values(draws["obs"])),
            "mean": (dims, self._unscale_values(draws["mean"])),
        }
        if self.poisson:
            # model intensities are per unit of rescaled time
            rate = draws["intensity"].cpu().double().numpy() / self.time_scale_
            variables["intensity"] = (dims, rate)
        if include_latent:
            coords["latent"] = np.arange(self.latent_dim)
            variables["z0"] = (("sample", "series", "latent"), draws["z0"].cpu().numpy())
            variables["z"] = (("sample", "series", "time", "latent"), draws["z"].cpu().numpy())
        return xr.Dataset(variables, coords=coords)

    def predict_quantiles(
        self, X, *, times=None, q=(0.05, 0.5, 0.95), n_samples: int = 200
    ) -> pd.DataFrame:
        """Quantiles of the posterior predictive (observation noise included).

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), optional
        q : float or sequence of float in (0, 1), default (0.05, 0.5, 0.95)
        n_samples : int, default 200
            Draws from which the quantiles are estimated.

        Returns
        -------
        DataFrame of shape (series * time, features * len(q))
            Indexed by (series, time); columns a MultiIndex (feature, quantile), as sktime's
            ``predict_quantiles`` for panel data. In the data's units.
        """
        levels = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if levels.ndim != 1 or not ((levels > 0) & (levels < 1)).all():
            raise ValueError(f"q must be quantile levels in (0, 1); got {q!r}.")
        obs = self.sample(X, times=times, n_samples=n_samples)["obs"]
        table = obs.quantile(levels, dim="sample").transpose("series", "time", "feature", ...)
        frame = table.to_series().unstack(["feature", "quantile"])
        columns = pd.MultiIndex.from_product(
            [list(obs.feature.values), list(levels)], names=["feature", "quantile"]
        )
        return frame.reindex(columns=columns)

    def predict_interval(
        self, X, *, times=None, coverage=0.9, n_samples: int = 200
    ) -> pd.DataFrame:
        """Central predictive intervals (observation noise included).

        Parameters
        ----------
        X, times, n_samples
            As in :meth:`predict_quantiles`.
        coverage : float or sequence of float in (0, 1), default 0.9

        Returns
        -------
        DataFrame
            Indexed by (series, time); columns a MultiIndex (feature, coverage, "lower" or
            "upper"), as sktime's ``predict_interval``.
        """
        levels = np.atleast_1d(np.asarray(coverage, dtype=np.float64))
        if levels.ndim != 1 or not ((levels > 0) & (levels < 1)).all():
            raise ValueError(f"coverage must be in (0, 1); got {coverage!r}.")
        bounds = np.concatenate([(1 - levels) / 2, (1 + levels) / 2])
        quantiles = self.predict_quantiles(X, times=times, q=bounds, n_samples=n_samples)
        out = {}
        for feature in quantiles.columns.get_level_values(0).unique():
            for k, c in enumerate(levels):
                out[(feature, c, "lower")] = quantiles[(feature, bounds[k])]
                out[(feature, c, "upper")] = quantiles[(feature, bounds[len(levels) + k])]
        frame = pd.DataFrame(out)
        frame.columns.names = ["feature", "coverage", "bound"]
        return frame

    def to_inference_data(self, X, *, n_samples: int = 100):
        """Posterior draws of the fitted model on ``X`` in ArviZ's container.

        Draws of ``z0`` come from the variational posterior ``q(z0 | x)`` (one chain).

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        n_samples : int, default 100

        Returns
        -------
        arviz.InferenceData (arviz < 1) or xarray.DataTree (arviz >= 1)
            Groups: ``posterior`` with ``z0 (chain, draw, series, latent)``;
            ``posterior_predictive`` with ``obs (chain, draw, series, time, feature)``;
            ``observed_data`` with ``obs (series, time, feature)``, NaN where not observed;
            ``log_likelihood`` with ``obs (chain, draw, series)``, each series' Gaussian
            log-likelihood of its observed values in the data's units, so that ``az.loo``
            and ``az.waic`` leave out one series at a time. Times are the union of the
            series' observation times.
        """
        data, t, draws = self._draw(X, None, n_samples, sites=("z0", "mean", "obs"))
        z0, noise = draws["z0"], self.model_.noise().detach()
        predictive = self._unscale_values(draws["obs"])[None]
        loc = self._unscale_values(draws["mean"])[None]
        sigma = noise.cpu().double().numpy() * self.value_scale_
        batch = collate(data, times_transform=None)
        observed = np.where(batch.mask.numpy(), batch.values.double().numpy(), np.nan)
        log_density = (
            -0.5 * ((observed - loc) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)
        )
        log_lik = np.nansum(log_density, axis=(-2, -1))
        coords = self._coords(data, t)
        coords.update(chain=[0], draw=np.arange(n_samples), latent=np.arange(self.latent_dim))
        draws = ("chain", "draw", "series")
        groups = {
            "posterior": xr.Dataset(
                {"z0": (draws + ("latent",), z0.cpu().double().numpy()[None])}, coords=coords
            ),
            "posterior_predictive": xr.Dataset(
                {"obs": (draws + ("time", "feature"), predictive)}, coords=coords
            ),
            "observed_data": xr.Dataset(
                {"obs": (("series", "time", "feature"), observed)}, coords=coords
            ),
            "log_likelihood": xr.Dataset({"obs": (draws, log_lik)}, coords=coords),
        }
        for name, group in groups.items():  # keep only the coordinates a variable uses
            used = {dim for var in group.data_vars.values() for dim in var.dims}
            groups[name] = group.drop_vars([c for c in group.coords if c not in used])
        return make_inference_data(groups)

    # -- evaluation --------------------------------------------------------------------------
    def score_samples(self, X, *, num_particles: int = 16) -> np.ndarray:
        """Evidence lower bound of each series, in the data's units (higher is better).

        The ELBO of the standardised data is corrected by the Jacobian of the standardisation
        (and of the time rescaling for the Poisson term), so it bounds the log-density of the
        series as given.

        Returns
        -------
        ndarray of shape (series,)
        """
        check_is_fitted(self)
        data = self._check_data(X)
        out = []
        log_scale = torch.as_tensor(np.log(self.value_scale_), dtype=torch.float32)
        with self._seeded(_seed_from(self.random_state), self.device_):
            for i in range(0, len(data), _PREDICT_CHUNK):
                batch = self._batch(data[i : i + _PREDICT_CHUNK], self.device_)
                elbo = per_series_elbo(self.model_, batch, num_particles=num_particles).cpu()
                counts = batch.mask.sum(1).float().cpu()  # (batch, features)
                elbo = elbo - (counts * log_scale).sum(-1)
                if self.poisson:
                    elbo = elbo - counts.sum(-1) * math.log(self.time_scale_)
                out.append(elbo.double().numpy())
        return np.concatenate(out)

    def score(self, X, y=None) -> float:
        """Mean per-series evidence lower bound (see :meth:`score_samples`); higher is better."""
        return float(np.mean(self.score_samples(X)))


def _with_parameter(init, name: str, default):
    """The signature of ``init`` with one more keyword-only parameter (for scikit-learn)."""
    sig = inspect.signature(init)
    extra = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    return sig.replace(parameters=[*sig.parameters.values(), extra])


def _batch_labels(labels, idx: list, series: list) -> torch.Tensor:
    """Labels of the chosen series: (batch,), or on the batch's union grid (batch, time)."""
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


class LatentODEClassifier(LabelledSeriesMixin, ClassifierMixin, LatentODE):
    """Latent ODE with a classifier, trained jointly with the ELBO.

    With one label per series the generative model gains a site
    ``label ~ Categorical(logits=head(z0))`` (Rubanova et al. 2019: in-hospital mortality on
    PhysioNet); with one label per observation time (``fit(X, y)`` with an array of labels per
    series) the head reads the latent state at each time, ``label_t ~ Categorical(logits=
    head(z(t)))`` (human activity). The labels' log-likelihood, multiplied by
    ``label_weight``, joins the ELBO, so the recognition network learns a ``z0`` that both
    explains the series and predicts its labels. Takes every parameter of :class:`LatentODE`,
    plus:

    Parameters
    ----------
    label_weight : float, default 100.0
        Weight of the label's log-likelihood against the series' (a series has many
        observations and one label).

    Attributes
    ----------
    classes_ : ndarray of shape (classes,)
        The labels seen in ``fit``, sorted.
    label_per_time_ : bool
        Whether ``fit`` was given one label per observation time.

    Examples
    --------
    >>> from latentode import LatentODEClassifier
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> clf = LatentODEClassifier(max_epochs=2, random_state=0)
    >>> clf.fit(data.train, data.clockwise_train).predict_proba(data.test).shape
    (8, 2)
    """

    def __init__(self, *, label_weight: float = 100.0, **params):
        super().__init__(**params)
        self.label_weight = label_weight

    # scikit-learn reads parameters from the signature: show LatentODE's and label_weight
    __init__.__signature__ = _with_parameter(LatentODE.__init__, "label_weight", 100.0)

    def _validate_params(self) -> None:
        super()._validate_params()
        if not (isinstance(self.label_weight, (int, float)) and self.label_weight > 0):
            raise ValueError(f"label_weight must be a positive number; got {self.label_weight!r}.")

    def _head_kwargs(self) -> dict:
        return {
            "n_classes": len(self.classes_),
            "label_weight": float(self.label_weight),
            "label_per_time": bool(self.label_per_time_),
        }

    def fit(self, X, y, **kwargs):
        """Fit on series ``X`` with labels ``y``; see :meth:`LatentODE.fit`.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        y : labels, one of
            - one label per series: array-like of shape (series,), or a pandas Series indexed
              by series id;
            - one label per observation time (``label_per_time_`` becomes True): a list with,
              for each series, an array of shape (n_obs_i,) in the order of its sorted times
              (None or NaN where a time has no label), or a pandas Series indexed by
              (series id, time).
        **kwargs
            ``validation_data`` (``X_val``, or ``(X_val, y_val)`` so that the validation loss
            includes the labels with their training weight), ``checkpoint``,
            ``checkpoint_every``, ``resume``.

        Returns
        -------
        self
        """
        return super().fit(X, y, **kwargs)

    def _probabilities(self, data, t, n_samples: int) -> torch.Tensor:
        """Class probabilities averaged over draws of z0: (series, classes) or (series, t, c)."""
        module, gen, out = self.model_, self._generator(self.device_), []
        query = None if t is None else self._model_times(t, self.device_)
        with torch.no_grad():
            for i in range(0, len(data), _PREDICT_CHUNK):
                batch = self._batch(data[i : i + _PREDICT_CHUNK], self.device_)
                z0 = module.posterior_z0(
                    batch.times, batch.values, batch.mask, n_samples=n_samples, generator=gen
                )
                h = z0 if query is None else module.solve(z0, query)[0]
                out.append(torch.softmax(module.classifier(h), dim=-1).mean(0).cpu())
        return torch.cat(out).double()

    def predict_proba(self, X, *, times=None, n_samples: int = 32):
        """Class probabilities, averaged over posterior draws of ``z0``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), optional
            Per-time classifiers only: where to classify (default the union of the series'
            observation times; later times classify the extrapolated state).
        n_samples : int, default 32

        Returns
        -------
        ndarray of shape (series, classes)
            For one label per series; columns in the order of ``classes_``.
        xarray.DataArray of shape (series, time, class)
            For per-time labels, with series ids, times and ``classes_`` as coordinates.
        """
        check_is_fitted(self)
        check_positive_int("n_samples", n_samples)
        data = self._check_data(X)
        if not self.label_per_time_:
            if times is not None:
                raise ValueError(
                    "times= is for per-time classifiers; this one was fitted with one label per "
                    "series."
                )
            return self._probabilities(data, None, n_samples).numpy()
        t = self._check_times(times, data)
        coords = self._coords(data, t)
        del coords["feature"]
        coords["class"] = self.classes_
        return xr.DataArray(
            self._probabilities(data, t, n_samples).numpy(),
            dims=("series", "time", "class"),
            coords=coords,
            name="probability",
        )

    def predict_series(self, X, *, times=None, n_samples: int = 32) -> xr.DataArray:
        """Posterior mean of the series (what :meth:`LatentODE.predict` returns)."""
        return LatentODE.predict(self, X, times=times, n_samples=n_samples)
