"""Stochastic variational inference over shuffled mini-batches of irregular series."""

from __future__ import annotations

import copy
import functools
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from tqdm.auto import tqdm

from .._allocator import hold_freed_memory, release_freed_memory
from ..datasets import Batch
from ..solvers import SolverError, raised_error
from ._adam import Adam
from .distributed import DataParallel

__all__ = [
    "TrainingConfig",
    "BatchStream",
    "TrainingHistory",
    "kl_weight",
    "per_series_elbo",
    "svi_loss",
    "train_svi",
]

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
    averaged_epochs : int
        Number of epochs whose parameters were averaged into the returned model (0: the
        parameters of one epoch were returned; see ``average_epochs`` of :func:`train_svi`).
    stopped_early : bool
        Validation did not improve for ``patience`` epochs.
    interrupted : bool
        Training was stopped by ``KeyboardInterrupt``; the last completed epoch was kept.
    out_of_time : bool
        Training stopped before ``max_epochs`` because the next epoch would have ended past
        ``max_time`` (see :class:`TrainingConfig`).
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    kl_weight: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    nfe_forward: list = field(default_factory=list)
    nfe_backward: list = field(default_factory=list)
    best_epoch: int | None = None
    averaged_epochs: int = 0
    stopped_early: bool = False
    interrupted: bool = False
    out_of_time: bool = False

    def to_dict(self) -> dict:
        """Plain-Python copy (JSON-serialisable)."""
        return {k: copy.copy(v) for k, v in self.__dict__.items()}


def kl_weight(epoch: int, anneal_epochs: int, final: float = 1.0) -> float:
    """Weight of the KL term at ``epoch``: linear annealing up to ``final``.

    From ``final / (anneal_epochs + 1)`` at epoch 0 up to ``final``, reached at epoch
    ``anneal_epochs`` (at once without annealing).

    Parameters
    ----------
    epoch, anneal_epochs : int
    final : float, default 1.0
        The weight after annealing (1: the ELBO; below 1, a beta-VAE's weighting).

    Returns
    -------
    float
    """
    if anneal_epochs <= 0:
        return float(final)
    return final * min(1.0, (epoch + 1) / (anneal_epochs + 1))


#: The ELBO estimators: the KL of ``z0`` in closed form where the guide has one (a Normal
#: guide; Monte Carlo otherwise), or always from the sampled ``z0``.
ELBOS = {"analytic_kl": TraceMeanField_ELBO, "sampled_kl": Trace_ELBO}


def svi_loss(
    model,
    batch: Batch,
    *,
    num_particles: int = 1,
    kl_scale: float = 1.0,
    elbo: str = "analytic_kl",
):
    """Negative ELBO per series for one batch (differentiable).

    Parameters
    ----------
    model : LatentODEModel
    batch : Batch
        In model units: ``times (time,)``, ``values, mask (batch, time, features)``. With
        ``batch.obs_weight`` the observations' log-densities are weighted by it (a weighted
        objective, no longer the ELBO).
    num_particles : int
    kl_scale : float
    elbo : {"analytic_kl", "sampled_kl"}, default "analytic_kl"
        The estimator of :data:`ELBOS`: both are unbiased for the same objective; the closed
        form KL removes the KL term's sampling noise.

    Returns
    -------
    Tensor of shape ()
    """
    if elbo not in ELBOS:
        raise ValueError(f"elbo must be one of {list(ELBOS)}; got {elbo!r}.")
    elbo = ELBOS[elbo](num_particles=num_particles)
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
            model.model,
            model.guide,
            batch.times,
            batch.values,
            batch.mask,
            kl_scale=kl_scale,
            encode_mask=batch.encode_mask,
            labels=batch.labels,
            obs_weight=batch.obs_weight,
            static=batch.context,
            own_times=True,  # each series scored at its own times, not the batch's union grid
        )
    return loss / batch.values.shape[0]


def per_series_elbo(model, batch: Batch, *, num_particles: int = 1) -> torch.Tensor:
    """ELBO of each series in a batch (higher is better), averaged over particles.

    With ``batch.labels`` (classifiers), the labels' log-likelihood is included with the
    weight it has in training (``label_weight``).

    Returns
    -------
    Tensor of shape (batch,)
    """
    total = torch.zeros(batch.values.shape[0], device=batch.values.device)
    with pyro.settings.context(module_local_params=True), torch.no_grad():
        for _ in range(num_particles):
            guide_tr = pyro.poutine.trace(model.guide).get_trace(
                batch.times, batch.values, batch.mask, static=batch.context
            )
            model_tr = pyro.poutine.trace(
                pyro.poutine.replay(model.model, trace=guide_tr)
            ).get_trace(
                batch.times,
                batch.values,
                batch.mask,
                labels=batch.labels,
                static=batch.context,
                own_times=True,
            )
            for tr, sign in ((model_tr, 1.0), (guide_tr, -1.0)):
                tr.compute_log_prob()
                for site in tr.nodes.values():
                    if site["type"] == "sample":  # labels count with their training weight
                        total += sign * site["log_prob"] * site["scale"]
    return total / num_particles


def _progress(verbose, total):
    show = verbose and (verbose == "force" or sys.stderr.isatty())
    return tqdm(total=total, disable=not show, desc="fit", unit="epoch", leave=False)


class _BadStep(Exception):
    """A training step gave a non-finite loss or gradient, or the solver failed."""


def _snapshot(state):
    """Copy of a state dict: tensors cloned, containers rebuilt, other leaves kept.

    The same result as ``copy.deepcopy`` for state dicts (whose other leaves are numbers,
    strings, ``None`` or tuples of them) at a fraction of its cost, which matters when an
    epoch is a single small step.
    """
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        out = type(state)((k, _snapshot(v)) for k, v in state.items())
        if hasattr(state, "_metadata"):  # module versions, read by load_state_dict
            out._metadata = copy.deepcopy(state._metadata)
        return out
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # a named tuple
        return type(state)(*(_snapshot(v) for v in state))
    if isinstance(state, (list, tuple)):
        return type(state)(_snapshot(v) for v in state)
    return copy.deepcopy(state)


def _finite_grads(params) -> bool:
    return all(p.grad is None or torch.isfinite(p.grad).all() for p in params)


def _rng_state(generator: torch.Generator | None, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if generator is not None:
        state["generator"] = generator.get_state()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator | None, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class BatchStream:
    """Mini-batches that a source other than an in-memory list supplies, epoch by epoch.

    Subclass it and give :func:`train_svi` an instance in place of ``make_batch``: the loop
    then asks the stream for each epoch's batches instead of shuffling series indices.
    :class:`latentode.datasets.ParquetSeries` data sets are streamed this way.
    """

    def epoch(self, epoch: int, start: int) -> Iterator[tuple[Batch, float, int]]:
        """The batches of ``epoch`` from step ``start`` on.

        Yields
        ------
        (Batch, float, int)
            The batch this process trains on (in model units, on the model's device), its
            share of the step's series over all processes (1.0 in one process), and the
            number of series in the step over all processes. Every process must yield the
            same number of steps.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of :func:`train_svi`: the optimiser, the objective, and the loop's rules.

    Attributes
    ----------
    max_epochs, batch_size : int
    max_time : float or None, default None
        Seconds of wall time this run may train: it stops before an epoch that, lasting as
        long as the last one, would end past them (the first epoch always runs). None: no
        limit.
    lr : float
        Adam learning rate.
    lr_decay : float, default 1.0
        Multiply the learning rate by this after each epoch.
    num_particles : int, default 1
        Samples of ``z0`` per series in each ELBO estimate.
    elbo : {"analytic_kl", "sampled_kl"}, default "analytic_kl"
        The ELBO estimator (see :func:`svi_loss`).
    kl_anneal_epochs : int, default 0
        Epochs over which the KL weight rises linearly to ``kl_final``.
    kl_final : float, default 1.0
        KL weight once annealing is over (see :func:`kl_weight`).
    clip_norm : float or None, default 10.0
        Clip the global gradient norm.
    patience : int or None, default None
        Stop after this many epochs without validation improvement.
    verbose : bool or "force", default False
        Progress bar on stderr (when it is a terminal, or always with "force").
    checkpoint_every : int, default 1
        Epochs between two calls of the ``checkpoint`` function.
    checkpoint_steps : int or None, default None
        Also capture the state every this many steps inside an epoch, and hand it to
        ``checkpoint``: a resumed run continues from that step (for long epochs, e.g. over
        streamed data). A failed step then rolls back to the last such state, not to the
        start of the epoch.
    max_retries : int, default 3
        Consecutive rolled-back attempts of an epoch before giving up.
    lr_backoff : float, default 0.5
        Factor applied to the learning rate at each roll-back.
    average_epochs : int, default 0
        Weight averaging (Izmailov et al. 2018, "Averaging weights leads to wider optima and
        better generalization"): the parameters returned are the mean of the parameters at
        the end of each of the last ``average_epochs`` epochs trained, which smooths out the
        noise of the last stochastic steps. The last epochs are those before whatever ends
        the run — ``max_epochs``, ``max_time``, early stopping or an interruption (fewer if
        fewer were trained) — so the loop keeps the parameters of that many epochs (that
        many copies of them, in checkpoints too). 0 returns the last (or best) epoch's. With
        validation the average is kept only if its validation loss is no higher than the
        best epoch's.
    average_from_best : bool, default False
        With validation: the parameters returned are the mean of those at the end of the
        best validated epoch and of every epoch trained after it (with ``patience=p`` and an
        early stop, the ``p + 1`` epochs up to the stop). The average is returned as it is,
        not compared with the best epoch's validation loss: it stands for the neighbourhood
        of the best epoch, whose single parameters carry the noise of its last steps. Not
        with ``average_epochs``.
    """

    max_epochs: int
    batch_size: int
    lr: float
    max_time: float | None = None
    lr_decay: float = 1.0
    num_particles: int = 1
    elbo: str = "analytic_kl"
    kl_anneal_epochs: int = 0
    kl_final: float = 1.0
    clip_norm: float | None = 10.0
    patience: int | None = None
    verbose: bool | str = False
    checkpoint_every: int = 1
    checkpoint_steps: int | None = None
    max_retries: int = 3
    lr_backoff: float = 0.5
    average_epochs: int = 0
    average_from_best: bool = False

    def beta(self, epoch: int) -> float:
        """The KL weight at ``epoch``."""
        return kl_weight(epoch, self.kl_anneal_epochs, self.kl_final)


@dataclass
class _LoopState:
    """What the SVI loop carries from epoch to epoch (the part a checkpoint restores)."""

    history: TrainingHistory = field(default_factory=TrainingHistory)
    best_state: dict | None = None
    best_val: float = math.inf
    since_best: int = 0
    average: dict = field(default_factory=dict)


class _Loop:
    """The model, optimiser (with its rate decay) and random streams of one run of
    :func:`train_svi`."""

    def __init__(self, model, config: TrainingConfig, generator, validation, parallel):
        self.model, self.config = model, config
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optim = Adam(self.params, lr=config.lr, decay=config.lr_decay)
        self.device = next(model.parameters()).device
        self.generator, self.validation, self.parallel = generator, validation, parallel
        if config.average_from_best and config.average_epochs:
            raise ValueError(
                "average_epochs and average_from_best are two windows of weight averaging; "
                "set one of them (average_epochs=0 or average_from_best=False)."
            )
        if config.average_from_best and not validation:
            raise ValueError(
                "average_from_best averages from the best validated epoch on and needs "
                "validation data; pass validation batches or set average_from_best=False."
            )
        self.state = _LoopState(average=self._empty_average())

    def _empty_average(self) -> dict:
        """No epoch averaged yet: the parameters of the last ``average_epochs`` epochs
        (``recent``), or a running mean from the best epoch on (``first``, set at each best
        epoch; until then no epoch is averaged)."""
        if self.config.average_epochs:
            return {"recent": []}
        return {"mean": None, "count": 0, "first": math.inf}

    def capture(self, next_epoch: int) -> dict:
        """The whole training state before ``next_epoch``, as a checkpoint holds it."""
        st = self.state
        return {
            "epoch": next_epoch,
            "model": _snapshot(self.model.state_dict()),
            "optimizer": _snapshot(self.optim.state_dict()),
            "scheduler": _snapshot(self.optim.scheduler_state_dict()),
            "history": st.history.to_dict(),
            "best_state": st.best_state,
            "best_val": st.best_val,
            "since_best": st.since_best,
            "rng": _rng_state(self.generator, self.device),
            "average": _snapshot(st.average),
        }

    def restore(self, saved: dict) -> None:
        """Go back to a state of :meth:`capture` (parameters, optimiser, random streams)."""
        self.model.load_state_dict(saved["model"])
        self.optim.load_state_dict(saved["optimizer"])
        self.optim.load_scheduler_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"], self.generator, self.device)
        average, empty = saved.get("average"), self._empty_average()
        if average is not None and average.keys() == empty.keys():
            average = _snapshot(average)  # tensors back on the parameters' devices
            if "recent" in average:  # at most the configured number of epochs
                average["recent"] = [
                    [m.to(p.device) for m, p in zip(kept, self.params, strict=True)]
                    for kept in average["recent"][-self.config.average_epochs :]
                ]
            elif average["mean"] is not None:
                pairs = zip(average["mean"], self.params, strict=True)
                average["mean"] = [m.to(p.device) for m, p in pairs]
        else:  # none saved, or saved by another kind of averaging: restart it here
            average = empty
        self.state = _LoopState(
            history=TrainingHistory(**copy.deepcopy(saved["history"])),
            best_state=saved["best_state"],
            best_val=saved["best_val"],
            since_best=saved["since_best"],
            average=average,
        )

    def validation_loss(self) -> float | None:
        """The validation loss after an epoch (None without validation data); a failed
        solve or a non-finite value fails the epoch like a bad training step."""
        if not self.validation:
            return None
        cfg = self.config
        try:
            val = _validation_loss(self.model, self.validation, cfg.num_particles, self.parallel)
        except SolverError as err:
            raise _BadStep(f"the validation loss failed: {raised_error(err)}") from None
        if not math.isfinite(val):
            raise _BadStep(f"the validation loss became {val}")
        return val

    def record(self, epoch: int, loss: float, nfe, bar, start: float, val=None) -> None:
        """Append the epoch to the history; track the best validation state once annealed."""
        st, beta = self.state, self.config.beta(epoch)
        history = st.history
        history.loss.append(loss)
        history.kl_weight.append(beta)
        history.nfe_forward.append(nfe[0])
        history.nfe_backward.append(nfe[1])
        message = f"epoch {epoch + 1} loss {loss:.4f}"
        if self.validation:
            annealed = epoch >= self.config.kl_anneal_epochs
            history.val_loss.append(val)
            message += f" val {val:.4f}"
            if val < st.best_val and annealed:
                st.best_val, st.since_best, history.best_epoch = val, 0, epoch
                st.best_state = copy.deepcopy(self.model.state_dict())
                if self.config.average_from_best:  # the window restarts here
                    st.average = {"mean": None, "count": 0, "first": epoch}
            elif annealed:
                st.since_best += 1
            patience = self.config.patience
            if patience is not None and st.since_best >= patience:
                history.stopped_early = True
        history.seconds.append(time.perf_counter() - start)
        if self.parallel is None or self.parallel.is_main:
            logger.info(message)
        bar.set_postfix_str(message.split(" ", 2)[-1])
        bar.update()
        if "recent" in st.average:  # the last average_epochs epochs
            recent = st.average["recent"]
            recent.append([p.detach().clone() for p in self.params])
            del recent[: -self.config.average_epochs]
        elif epoch >= st.average["first"]:  # from the best epoch on
            _accumulate(st.average, self.params)

    def _averaged_worse(self) -> bool:
        try:
            return self.validation_loss() > self.state.best_val
        except _BadStep:  # the averaged parameters fail where the best epoch did not
            return True

    def finish(self) -> TrainingHistory:
        """Load the averaged or best parameters; the model ends in eval mode."""
        st = self.state
        best_state = st.best_state
        means, count = _mean_of(st.average)
        if count:
            with torch.no_grad():
                for p, mean in zip(self.params, means, strict=True):
                    p.copy_(mean)
            # with validation, the average of the last epochs is kept unless the best epoch
            # validated better; the average from the best epoch on is kept as it is
            if self.config.average_from_best or not (self.validation and self._averaged_worse()):
                st.history.averaged_epochs = count
                best_state = None
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return st.history


def train_svi(
    model,
    make_batch: Callable[[torch.Tensor], Batch],
    n_series: int,
    config: TrainingConfig,
    *,
    validation: list[Batch] | None = None,
    generator: torch.Generator | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume_from: dict | None = None,
    parallel: DataParallel | None = None,
) -> TrainingHistory:
    """Fit ``model`` by maximising the ELBO with Adam over shuffled mini-batches.

    A step whose loss or gradient is not finite, or whose solve fails (:class:`SolverError`),
    never reaches the parameters: the epoch is rolled back to its start (parameters,
    optimiser, random streams), the learning rate is multiplied by ``config.lr_backoff`` and
    the epoch is retried, at most ``config.max_retries`` times in a row before
    :class:`FloatingPointError`. A ``KeyboardInterrupt`` ends training at the last completed
    epoch (recorded in ``history.interrupted``) instead of propagating.

    Parameters
    ----------
    model : LatentODEModel
        Trained in place.
    make_batch : callable or BatchStream
        Maps a LongTensor of series indices to a :class:`Batch` in model units; or a
        :class:`BatchStream` that supplies each epoch's batches itself.
    n_series : int
        Size of the training set (the number of series ``make_batch`` indexes; ignored with
        a stream).
    config : TrainingConfig
        Optimiser, objective and loop settings.
    validation : list of Batch, optional
        Held-out batches; the best epoch's parameters are kept.
    generator : torch.Generator, optional
        Drives the shuffling (and whatever ``make_batch`` draws with it).
    checkpoint : callable, optional
        Called with the training state (a dict of tensors, numbers and strings) every
        ``config.checkpoint_every`` epochs, at the end and on interruption.
    resume_from : dict, optional
        A state given earlier to ``checkpoint``: training continues from it exactly, random
        streams included (mid-epoch when it was taken inside one, see
        ``config.checkpoint_steps``).
    parallel : DataParallel, optional
        Data-parallel training over a ``torch.distributed`` group: rank 0's parameters are
        broadcast first, each global mini-batch of ``batch_size`` is split between the
        processes, gradients are summed before each step, and validation losses averaged, so
        that all processes take the same steps. ``generator`` must give the same shuffles on
        every process; ``make_batch`` may draw differently on each.

    Returns
    -------
    TrainingHistory
    """
    cfg = config
    loop = _Loop(model, cfg, generator, validation, parallel)
    first_epoch = 0
    if resume_from is not None:
        loop.restore(resume_from)
        first_epoch = resume_from["epoch"]
    if parallel is not None:
        parallel.broadcast_module(model)
    good = resume_from if resume_from is not None and "step" in resume_from else None
    good = good or loop.capture(first_epoch)
    bar = _progress(cfg.verbose, cfg.max_epochs)
    bar.update(first_epoch)
    retries, epoch = 0, first_epoch

    def on_step(step: int, order, total: float, count: int) -> None:
        nonlocal good
        if cfg.checkpoint_steps is None or step % cfg.checkpoint_steps:
            return
        good = loop.capture(epoch)
        good.update(step=step, order=order, partial=(total, count))
        if checkpoint is not None:
            checkpoint(good)

    hold_freed_memory()  # no page faults re-fetching each step's activations (glibc)
    model.train()
    began = time.perf_counter()
    try:
        while epoch < cfg.max_epochs and not loop.state.history.stopped_early:
            start = time.perf_counter()
            if _out_of_time(cfg.max_time, start - began, loop.state.history, epoch - first_epoch):
                loop.state.history.out_of_time = True
                logger.info("stopping before epoch %d: max_time would be exceeded", epoch + 1)
                break
            at = good if "step" in good else None
            try:
                loss, nfe = _train_epoch(
                    loop, make_batch, n_series, cfg.beta(epoch), epoch, at, on_step
                )
                val = loop.validation_loss()
            except _BadStep as bad:
                retries += 1
                loop.restore(good)
                if retries > cfg.max_retries:
                    raise FloatingPointError(
                        f"training failed at epoch {epoch} after {cfg.max_retries} retries with "
                        f"a smaller learning rate; the last failure: {str(bad).rstrip('.')}. "
                        "Nothing of the failed epoch was kept; lower lr, keep clip_norm, or "
                        "change the solver settings."
                    ) from None
                for group in loop.optim.param_groups:  # the restored rate, lowered per retry
                    group["lr"] *= cfg.lr_backoff**retries
                where = f"step {good['step']} of" if "step" in good else "the start of"
                warnings.warn(
                    f"epoch {epoch}: {bad}; rolled back to {where} the epoch and retrying "
                    f"with learning rate {loop.optim.param_groups[0]['lr']:.3g}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            retries = 0
            loop.optim.decay_step()
            loop.record(epoch, loss, nfe, bar, start, val)
            epoch += 1
            good = loop.capture(epoch)
            if checkpoint is not None and (
                epoch % cfg.checkpoint_every == 0
                or epoch == cfg.max_epochs
                or loop.state.history.stopped_early
            ):
                checkpoint(good)
    except KeyboardInterrupt:
        loop.restore(good)
        loop.state.history.interrupted = True
        if checkpoint is not None:
            checkpoint(good)
        logger.warning("training interrupted; keeping the parameters of epoch %d", epoch)
    finally:
        bar.close()
        release_freed_memory()
    return loop.finish()


def _out_of_time(max_time, elapsed: float, history: TrainingHistory, done: int) -> bool:
    """Whether an epoch as long as the last one, started after ``elapsed`` seconds of this
    run, would end past ``max_time`` (never before this run completed an epoch)."""
    if max_time is None or done == 0 or not history.seconds:
        return False
    return elapsed + history.seconds[-1] > max_time


def _mean_of(average: dict) -> tuple[list | None, int]:
    """The averaged parameters of ``average`` (None if no epoch was) and their epochs."""
    if "recent" in average:
        recent = average["recent"]
        if not recent:
            return None, 0
        return [torch.stack(kept).mean(0) for kept in zip(*recent, strict=True)], len(recent)
    return average["mean"], average["count"]


def _accumulate(average: dict, params) -> None:
    """Fold the current parameters into the running mean of ``average``."""
    average["count"] += 1
    if average["mean"] is None:
        average["mean"] = [p.detach().clone() for p in params]
        return
    with torch.no_grad():
        for mean, p in zip(average["mean"], params, strict=True):
            mean.add_(p.detach() - mean, alpha=1.0 / average["count"])


def _train_epoch(
    loop: _Loop, source, n_series: int, beta: float, epoch: int, at=None, on_step=None
):
    """One pass over shuffled mini-batches; returns (mean loss, (nfe forward, nfe backward)).

    ``source`` is ``make_batch`` (series indices to a Batch, shuffled here) or a
    :class:`BatchStream`. ``at`` is a mid-epoch state of :meth:`_Loop.capture` to continue
    from (its step, its shuffle and its running loss); ``on_step(step, order, total, count)``
    is called after each step. With ``loop.parallel``, each process takes its share of every
    batch; its loss is weighted by that share and the gradients summed over the processes,
    so the step is the whole batch's.
    """
    loop.model.solver.reset_nfe()
    first, (total, count) = (0, (0.0, 0)) if at is None else (at["step"], at["partial"])
    if isinstance(source, BatchStream):
        order, steps = None, source.epoch(epoch, first)
    else:
        order = at["order"] if at is not None else None
        if order is None:
            order = torch.randperm(n_series, generator=loop.generator)
        steps = _shuffled(loop, source, order, first)
    for step, (batch, share, size) in enumerate(steps, start=first):
        total += _step(loop, batch, share, beta) * size
        count += size
        if on_step is not None:
            on_step(step + 1, order, total, count)
    nfe = loop.model.solver.nfe
    return total / max(count, 1), (nfe["forward"], nfe["backward"])


def _shuffled(loop: _Loop, make_batch, order: torch.Tensor, first: int):
    """(batch maker, share, global size) of each in-memory mini-batch from step ``first``."""
    size, parallel = loop.config.batch_size, loop.parallel
    for step, i in enumerate(range(0, len(order), size)):
        if step < first:
            continue
        idx = order[i : i + size]
        local = idx if parallel is None else parallel.shard(idx)
        maker = functools.partial(make_batch, local) if len(local) else None
        yield maker, len(local) / len(idx), len(idx)


def _step(loop: _Loop, batch, share: float, beta: float) -> float:
    """One optimisation step on ``batch`` (a Batch, a function making it, or None: this
    process has no series in the step); returns the step's loss over all processes."""
    model, params, parallel, cfg = loop.model, loop.params, loop.parallel, loop.config
    loop.optim.zero_grad(set_to_none=True)
    loss, bad = torch.zeros(()), None
    try:
        if callable(batch):
            batch = batch()
        if batch is not None:
            loss = svi_loss(
                model, batch, num_particles=cfg.num_particles, kl_scale=beta, elbo=cfg.elbo
            )
            loss = loss * share
            if not torch.isfinite(loss):
                bad = f"the loss became {loss.item()}"
    except SolverError as err:
        # the solver's own message, without the trace shapes Pyro appends
        bad = str(raised_error(err))
    if parallel is not None and parallel.any(bad is not None) and bad is None:
        bad = "a step failed in another process"
    if bad is not None:
        raise _BadStep(bad)
    try:
        if loss.requires_grad:
            loss.backward()
    except SolverError as err:
        raise _BadStep(str(raised_error(err))) from None
    if parallel is not None:
        parallel.sum_gradients(params)
    if not _finite_grads(params):
        raise _BadStep("a gradient became NaN or inf")
    if cfg.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
    loop.optim.step()
    return loss.item() if parallel is None else parallel.sum(loss.item())


def _validation_loss(model, batches: list[Batch], num_particles: int, parallel=None) -> float:
    """Negative ELBO per series on ``batches``.

    With ``parallel``, the mean over the processes, so that decisions taken on it agree.
    """
    total = sum(-per_series_elbo(model, b, num_particles=num_particles).sum() for b in batches)
    val = float(total) / sum(b.values.shape[0] for b in batches)
    return val if parallel is None else parallel.sum(val) / parallel.world_size
