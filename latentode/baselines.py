"""Baselines for comparison with the Latent ODE."""

from __future__ import annotations

import time

import numpy as np
import torch
import xarray as xr
from sklearn.utils.validation import check_is_fitted

from .datasets import as_dataset
from .estimator import (
    IrregularSeriesEstimator,
    _seed_from,
    check_positive_int,
    resolve_device,
)
from .inference import TrainingHistory
from .nn import ODERNN, GapRNN

__all__ = ["ODERNNBaseline", "RNNBaseline"]


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
        for name in ("hidden_dim", "max_epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
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
        seed = _seed_from(self.random_state)
        self.device_ = resolve_device(self.device)
        self._fit_scaling(data)
        gaps = np.concatenate([np.diff(s.times) for s in data]) / self.time_scale_
        self.gap_scale_ = float(np.median(gaps))
        series = list(data)
        history = TrainingHistory()
        with self._seeded(seed, self.device_):
            net = self._build_module().to(self.device_)
            optim = torch.optim.Adam(net.parameters(), lr=self.lr)
            sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=self.lr_decay)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(self.max_epochs):
                start = time.perf_counter()
                perm = torch.randperm(len(series), generator=gen).tolist()
                total, count = 0.0, 0.0
                for i in range(0, len(series), self.batch_size):
                    batch = self._batch(
                        [series[j] for j in perm[i : i + self.batch_size]], self.device_
                    )
                    pred, target, m, _, _ = net(batch.values, batch.mask, batch.times)
                    n = m.sum()
                    loss = (((pred - target) ** 2) * m).sum() / n
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.clip_norm is not None:
                        torch.nn.utils.clip_grad_norm_(net.parameters(), self.clip_norm)
                    optim.step()
                    total += loss.item() * n.item()
                    count += n.item()
                sched.step()
                history.loss.append(total / count)
                history.seconds.append(time.perf_counter() - start)
        self.model_ = net.eval()
        self.history_ = history

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
