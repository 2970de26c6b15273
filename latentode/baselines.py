"""Baselines for comparison with the Latent ODE."""

from __future__ import annotations

import time

import numpy as np
import torch
import xarray as xr
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._allocator import hold_freed_memory, release_freed_memory
from ._base import (
    IrregularSeriesEstimator,
    LabelledSeriesMixin,
    batch_labels,
    resolve_device,
    seed_from,
)
from ._validation import integer, real
from .datasets import as_dataset
from .inference import TrainingHistory
from .inference._adam import Adam
from .likelihoods import observation_window
from .nn import mlp
from .recurrent import ODERNN, GapRNN

__all__ = ["ODERNNBaseline", "ODERNNClassifier", "RNNBaseline"]

#: What the parameters of the recurrent baselines may be.
_TRAINING = (
    integer("hidden_dim", low=1),
    integer("max_epochs", low=1),
    integer("batch_size", low=1),
    real("lr", low=0, low_open=True),
    real("lr_decay", low=0, low_open=True, high=1),
    real("clip_norm", low=0, low_open=True, none=True),
)


def _train_minibatches(est, n_series: int, batch_loss, seed: int):
    """Adam over shuffled mini-batches of series, the loop the non-latent baselines share.

    Parameters
    ----------
    est : estimator
        Gives ``_build_module``, ``lr``, ``lr_decay``, ``clip_norm``, ``max_epochs``,
        ``batch_size``, ``device_`` and ``_seeded``.
    n_series : int
    batch_loss : callable
        ``batch_loss(net, idx) -> (loss, weight)`` for the series indices ``idx``; the epoch's
        recorded loss is the weighted mean.
    seed : int

    Returns
    -------
    net : nn.Module
        In eval mode.
    history : TrainingHistory
    """
    history = TrainingHistory()
    hold_freed_memory()  # as in train_svi: no page faults re-fetching each step's memory
    try:
        with est._seeded(seed, est.device_):
            net = est._build_module().to(est.device_)
            optim = Adam(net.parameters(), lr=est.lr, decay=est.lr_decay)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(est.max_epochs):
                start = time.perf_counter()
                perm = torch.randperm(n_series, generator=gen).tolist()
                total, count = 0.0, 0.0
                for i in range(0, n_series, est.batch_size):
                    loss, weight = batch_loss(net, perm[i : i + est.batch_size])
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    if est.clip_norm is not None:
                        torch.nn.utils.clip_grad_norm_(net.parameters(), est.clip_norm)
                    optim.step()
                    total += loss.item() * weight
                    count += weight
                optim.decay_step()
                history.loss.append(total / count)
                history.seconds.append(time.perf_counter() - start)
    finally:
        release_freed_memory()
    return net.eval(), history


class RNNBaseline(IrregularSeriesEstimator):
    """Recurrent network with time gaps as input, trained to predict the next observation.

    The RNN baseline of Chen et al. (2018), Table 2. It reads each series forwards, one
    observation at a time with the gap since the previous one; a head maps its state and the
    gap to the next observation to that observation. To extrapolate, its own predictions are
    fed back in. It predicts only after a series' last observation.

    Parameters
    ----------
    hidden_dim : int, default 25
    max_epochs : int, default 100
    batch_size : int, default 50
    lr : float, default 1e-2
    lr_decay : float, default 0.99
    clip_norm : float or None, default 10.0
    device : {"auto", "cpu", "cuda"}, default "auto"
    random_state : int or None, default None

    Attributes
    ----------
    model_ : GapRNN
    history_ : TrainingHistory
        ``loss`` is the mean squared one-step error on the standardised scale.
    gap_scale_ : float
        Median gap between consecutive observations in model time units.
    """

    def __init__(
        self,
        *,
        hidden_dim: int = 25,
        max_epochs: int = 100,
        batch_size: int = 50,
        lr: float = 1e-2,
        lr_decay: float = 0.99,
        clip_norm: float | None = 10.0,
        device: str = "auto",
        random_state: int | None = None,
    ):
        self.hidden_dim = hidden_dim
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.clip_norm = clip_norm
        self.device = device
        self.random_state = random_state

    _parameter_constraints = _TRAINING

    def _build_module(self) -> GapRNN:
        return GapRNN(self.n_features_in_, self.hidden_dim, gap_scale=self.gap_scale_)

    def _fitted_state(self) -> dict:
        return {**super()._fitted_state(), "gap_scale_": self.gap_scale_}

    def _set_fitted_state(self, state: dict) -> None:
        super()._set_fitted_state(state)
        self.gap_scale_ = float(state["gap_scale_"])

    def fit(self, X, y=None):
        """Fit on irregular series (see :meth:`LatentODE.fit` for the accepted types).

        Returns
        -------
        self
        """
        self._validate_params()
        data = as_dataset(X, name="X")
        short = [s.id for s in data if s.n_obs < 2]
        if short:
            raise ValueError(
                f"X: series {short[0]!r} (and {len(short) - 1} more) has fewer than two "
                "observation times; the RNN baseline learns from consecutive pairs."
            )
        with self._keep_state_on_failure():
            self._fit(data)
        return self

    def _fit(self, data) -> None:
        seed = seed_from(self.random_state)
        self.device_ = resolve_device(self.device)
        self._fit_scaling(data)
        gaps = np.concatenate([np.diff(s.times) for s in data]) / self.time_scale_
        self.gap_scale_ = float(np.median(gaps))
        series = list(data)

        def batch_loss(net, idx):
            batch = self._batch([series[j] for j in idx], self.device_)
            pred, target, m, _, _ = net(batch.values, batch.mask, batch.times)
            n = m.sum()
            return (((pred - target) ** 2) * m).sum() / n, n.item()

        self.model_, self.history_ = _train_minibatches(self, len(series), batch_loss, seed)

    def predict(self, X, *, times) -> xr.DataArray:
        """Extrapolate each series to ``times`` by feeding predictions back in.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,)
            Increasing times, all after every series' last observation.

        Returns
        -------
        xarray.DataArray of shape (series, time, feature)
        """
        check_is_fitted(self)
        data = self._check_data(X)
        t = self._check_times(times, data)
        late = [s.id for s in data if s.times[-1] >= t[0]]
        if late:
            raise ValueError(
                f"times start at {t[0]}, but series {late[0]!r} is observed until "
                f"{data[data.ids.index(late[0])].times[-1]}; RNNBaseline only extrapolates, so "
                "query times must follow every series' last observation."
            )
        batch = self._batch(list(data), self.device_)
        with torch.no_grad():
            _, _, _, h, t_last = self.model_(batch.values, batch.mask, batch.times)
            pred = self.model_.rollout(h, t_last, self._model_times(t, self.device_))
        return xr.DataArray(
            self._unscale_values(pred),
            dims=("series", "time", "feature"),
            coords=self._coords(data, t),
            name="mean",
        )


class ODERNNBaseline(RNNBaseline):
    """ODE-RNN forecaster (Rubanova et al. 2019): the hidden state follows an ODE between
    observations and takes a GRU update at each; trained on one-step-ahead prediction.

    Unlike :class:`RNNBaseline`, extrapolation needs no feedback of its own predictions: past
    the last observation the hidden state keeps following its ODE. Same parameters and
    interface as :class:`RNNBaseline`; it predicts only after every series' last observation.
    """

    def _build_module(self) -> ODERNN:
        return ODERNN(self.n_features_in_, self.hidden_dim)


class _ODERNNClassifierNet(nn.Module):
    """An ODE-RNN run forwards with a classification head on its hidden state."""

    def __init__(self, n_features: int, hidden_dim: int, n_classes: int):
        super().__init__()
        self.odernn = ODERNN(n_features, hidden_dim)
        self.classifier = mlp(hidden_dim, hidden_dim, n_classes, n_layers=2, activation=nn.ReLU)

    def forward(self, values, mask, times, *, per_time: bool):
        """Logits (batch, classes) after each series' last observation, or (batch, time, c)
        after the update at every time; and the one-step forecasts with their targets."""
        before, after, started = self.odernn.states(values, mask, times)
        if per_time:
            logits = self.classifier(after)
        else:
            _, last = observation_window(mask.any(-1))
            logits = self.classifier(after[torch.arange(after.shape[0]), last])
        pred = self.odernn.head(before)
        target_mask = (mask & started[..., None]).to(values.dtype)
        return logits, pred, target_mask


class ODERNNClassifier(LabelledSeriesMixin, ClassifierMixin, IrregularSeriesEstimator):
    """ODE-RNN classifier (Rubanova et al. 2019), non-latent: one label per series or per time.

    The ODE-RNN reads each series forwards — its hidden state follows ``dh/dt = g(h)`` between
    observations and takes a mask-aware GRU update at each — and a head classifies the state
    after the series' last observation (one label per series, e.g. in-hospital mortality), or
    the state after every observation time (per-time labels, e.g. activities). Trained with
    cross-entropy, plus ``forecast_weight`` times the one-step-ahead squared error of the
    ODE-RNN's forecasts (a regulariser that makes the state summarise the series).

    Parameters
    ----------
    hidden_dim : int, default 50
    forecast_weight : float, default 0.0
    max_epochs : int, default 100
    batch_size : int, default 50
    lr : float, default 1e-2
    lr_decay : float, default 0.99
    clip_norm : float or None, default 10.0
    device : {"auto", "cpu", "cuda"}, default "auto"
    random_state : int or None, default None

    Attributes
    ----------
    classes_ : ndarray of shape (classes,)
    label_per_time_ : bool
    model_ : nn.Module
    history_ : TrainingHistory
        ``loss`` is the mean training loss per epoch.

    Examples
    --------
    >>> from latentode import ODERNNClassifier
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> clf = ODERNNClassifier(max_epochs=2, random_state=0)
    >>> clf.fit(data.train, data.clockwise_train).predict_proba(data.test).shape
    (8, 2)
    """

    def __init__(
        self,
        *,
        hidden_dim: int = 50,
        forecast_weight: float = 0.0,
        max_epochs: int = 100,
        batch_size: int = 50,
        lr: float = 1e-2,
        lr_decay: float = 0.99,
        clip_norm: float | None = 10.0,
        device: str = "auto",
        random_state: int | None = None,
    ):
        self.hidden_dim = hidden_dim
        self.forecast_weight = forecast_weight
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.clip_norm = clip_norm
        self.device = device
        self.random_state = random_state

    _parameter_constraints = (*_TRAINING, real("forecast_weight", low=0))

    def _build_module(self) -> _ODERNNClassifierNet:
        return _ODERNNClassifierNet(self.n_features_in_, self.hidden_dim, len(self.classes_))

    def fit(self, X, y):
        """Fit on series ``X`` with labels ``y`` (either form of
        :meth:`LatentODEClassifier.fit`).

        Returns
        -------
        self
        """
        self._validate_params()
        data = as_dataset(X, name="X")
        with self._keep_state_on_failure():
            labels = self._check_labels(y, data)
            self._fit(data, labels)
        return self

    def _fit(self, data, labels) -> None:
        seed = seed_from(self.random_state)
        self.device_ = resolve_device(self.device)
        self._fit_scaling(data)
        series = list(data)
        per_time = self.label_per_time_

        def batch_loss(net, idx):
            chosen = [series[j] for j in idx]
            batch = self._batch(chosen, self.device_)
            target = batch_labels(labels, idx, chosen).to(self.device_)
            logits, pred, m = net(batch.values, batch.mask, batch.times, per_time=per_time)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-1
            )
            if self.forecast_weight > 0 and m.sum() > 0:
                mse = (((pred - batch.values) ** 2) * m).sum() / m.sum()
                loss = loss + self.forecast_weight * mse
            return loss, len(idx)

        self.model_, self.history_ = _train_minibatches(self, len(series), batch_loss, seed)

    def predict_proba(self, X):
        """Class probabilities.

        Returns
        -------
        ndarray of shape (series, classes)
            For one label per series; columns in the order of ``classes_``.
        xarray.DataArray of shape (series, time, class)
            For per-time labels, at the union of the series' observation times (a series'
            entries before its first observation are those of an empty state).
        """
        check_is_fitted(self)
        data = self._check_data(X)
        batch = self._batch(list(data), self.device_)
        with torch.no_grad():
            logits, _, _ = self.model_(
                batch.values, batch.mask, batch.times, per_time=self.label_per_time_
            )
        proba = torch.softmax(logits, -1).cpu().double().numpy()
        if not self.label_per_time_:
            return proba
        t = np.unique(np.concatenate([s.times for s in data]))
        coords = self._coords(data, t)
        del coords["feature"]
        coords["class"] = self.classes_
        return xr.DataArray(
            proba, dims=("series", "time", "class"), coords=coords, name="probability"
        )
