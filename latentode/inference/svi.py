"""Stochastic variational inference over shuffled mini-batches of irregular series."""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO
from tqdm.auto import tqdm

from ..datasets import Batch

__all__ = ["TrainingHistory", "kl_weight", "per_series_elbo", "svi_loss", "train_svi"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingHistory:
    """What happened during training, one entry per epoch.

    Attributes
    ----------
    loss : list of float
        Mean negative ELBO per series on the training batches (with the KL weight in force).
    val_loss : list of float
        Negative ELBO per series on the validation data (full KL), if any was given.
    kl_weight : list of float
    seconds : list of float
        Wall time of each epoch.
    nfe_forward, nfe_backward : list of int
        Function evaluations of the ODE solver in the epoch's training steps.
    best_epoch : int or None
        Epoch whose parameters were kept (lowest validation loss), when validating.
    stopped_early : bool
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    kl_weight: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    nfe_forward: list = field(default_factory=list)
    nfe_backward: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict:
        """Plain-Python copy (JSON-serialisable)."""
        return {k: copy.copy(v) for k, v in self.__dict__.items()}


def kl_weight(epoch: int, anneal_epochs: int) -> float:
    """Linear KL annealing: from ``1 / (anneal_epochs + 1)`` at epoch 0 up to 1."""
    if anneal_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / (anneal_epochs + 1))


def svi_loss(model, batch: Batch, *, num_particles: int = 1, kl_scale: float = 1.0):
    """Negative ELBO per series for one batch (differentiable).

    Parameters
    ----------
    model : LatentODEModel
    batch : Batch
        In model units: ``times (time,)``, ``values, mask (batch, time, features)``.
    num_particles : int
    kl_scale : float

    Returns
    -------
    Tensor of shape ()
    """
    elbo = TraceMeanField_ELBO(num_particles=num_particles)
    # inputs were validated at the estimator's gate; skipping Pyro's per-call argument checks
    # saves about 5% of a training step for these small models
    with (
        pyro.settings.context(module_local_params=True),
        pyro.validation_enabled(False),
        warnings.catch_warnings(),
    ):
        # a NaN loss is turned into a clear error by the training loop
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        loss = elbo.differentiable_loss(
            model.model, model.guide, batch.times, batch.values, batch.mask, kl_scale=kl_scale
        )
    return loss / batch.values.shape[0]


def per_series_elbo(model, batch: Batch, *, num_particles: int = 1) -> torch.Tensor:
    """ELBO of each series in a batch (higher is better), averaged over particles.

    Returns
    -------
    Tensor of shape (batch,)
    """
    total = torch.zeros(batch.values.shape[0], device=batch.values.device)
    with pyro.settings.context(module_local_params=True), torch.no_grad():
        for _ in range(num_particles):
            guide_tr = pyro.poutine.trace(model.guide).get_trace(
                batch.times, batch.values, batch.mask
            )
            model_tr = pyro.poutine.trace(
                pyro.poutine.replay(model.model, trace=guide_tr)
            ).get_trace(batch.times, batch.values, batch.mask)
            for tr, sign in ((model_tr, 1.0), (guide_tr, -1.0)):
                tr.compute_log_prob()
                for site in tr.nodes.values():
                    if site["type"] == "sample":
                        total += sign * site["log_prob"]
    return total / num_particles


def _progress(verbose, total):
    show = verbose and (verbose == "force" or sys.stderr.isatty())
    return tqdm(total=total, disable=not show, desc="fit", unit="epoch", leave=False)


def train_svi(
    model,
    make_batch: Callable[[torch.Tensor], Batch],
    n_series: int,
    *,
    max_epochs: int,
    batch_size: int,
    lr: float,
    num_particles: int = 1,
    kl_anneal_epochs: int = 0,
    clip_norm: float | None = 10.0,
    lr_decay: float = 1.0,
    validation: list[Batch] | None = None,
    patience: int | None = None,
    generator: torch.Generator | None = None,
    verbose: bool | str = False,
) -> TrainingHistory:
    """Fit ``model`` by maximising the ELBO with Adam over shuffled mini-batches.

    Parameters
    ----------
    model : LatentODEModel
        Trained in place.
    make_batch : callable
        Maps a LongTensor of series indices to a :class:`Batch` in model units.
    n_series : int
        Size of the training set.
    max_epochs, batch_size : int
    lr : float
        Adam learning rate.
    num_particles : int
        Samples of ``z0`` per series in each ELBO estimate.
    kl_anneal_epochs : int
        Epochs over which the KL weight rises linearly to 1.
    clip_norm : float or None
        Clip the global gradient norm.
    lr_decay : float
        Multiply the learning rate by this after each epoch.
    validation : list of Batch, optional
        Held-out batches; the best epoch's parameters are kept.
    patience : int, optional
        Stop after this many epochs without validation improvement.
    generator : torch.Generator, optional
        Drives the shuffling.
    verbose : bool or "force"
        Progress bar on stderr (when it is a terminal, or always with "force").

    Returns
    -------
    TrainingHistory
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=lr_decay)
    history = TrainingHistory()
    best_state, best_val, since_best = None, math.inf, 0
    bar = _progress(verbose, max_epochs)
    model.train()
    for epoch in range(max_epochs):
        start = time.perf_counter()
        beta = kl_weight(epoch, kl_anneal_epochs)
        model.solver.reset_nfe()
        perm = torch.randperm(n_series, generator=generator)
        total, count = 0.0, 0
        for i in range(0, n_series, batch_size):
            idx = perm[i : i + batch_size]
            batch = make_batch(idx)
            optim.zero_grad(set_to_none=True)
            loss = svi_loss(model, batch, num_particles=num_particles, kl_scale=beta)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss.item()} at epoch {epoch}; lower lr or "
                    "tighten the solver tolerances."
                )
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optim.step()
            total += loss.item() * len(idx)
            count += len(idx)
        sched.step()
        history.loss.append(total / count)
        history.kl_weight.append(beta)
        history.nfe_forward.append(model.solver.nfe["forward"])
        history.nfe_backward.append(model.solver.nfe["backward"])
        message = f"epoch {epoch + 1}/{max_epochs} loss {history.loss[-1]:.4f}"
        if validation:
            val = _validation_loss(model, validation, num_particles)
            history.val_loss.append(val)
            message += f" val {val:.4f}"
            if val < best_val and beta >= 1.0:
                best_val, since_best, history.best_epoch = val, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif beta >= 1.0:
                since_best += 1
        history.seconds.append(time.perf_counter() - start)
        logger.info(message)
        bar.set_postfix_str(message.split(" ", 2)[-1])
        bar.update()
        if patience is not None and validation and since_best >= patience:
            history.stopped_early = True
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _validation_loss(model, batches: list[Batch], num_particles: int) -> float:
    total = sum(-per_series_elbo(model, b, num_particles=num_particles).sum() for b in batches)
    return float(total) / sum(b.values.shape[0] for b in batches)
