"""Masked observation likelihoods and the Poisson-process likelihood of observation times."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch

__all__ = [
    "masked_normal",
    "masked_student_t",
    "observation_window",
    "window_integral",
    "poisson_process_log_likelihood",
]


_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class _SharedScaleNormal(dist.Normal):
    """A Normal whose log-density takes the logarithm of the scale before broadcasting it.

    The observation noise is one scale per feature broadcast over ``(batch, time)``; the
    parent class would take the log and square of the broadcast tensor, element by element.
    Same values, same gradients, a fraction of the work. Anything else (sampling, moments,
    expanding) is the parent's.
    """

    def __init__(self, loc, scale, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        self._unbroadcast_scale = scale

    def expand(self, batch_shape, _instance=None):
        if _instance is not None:
            return dist.Normal(self.loc, self.scale).expand(batch_shape, _instance)
        return _SharedScaleNormal(
            self.loc.expand(batch_shape), self._unbroadcast_scale, validate_args=False
        )

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        scale = self._unbroadcast_scale
        z = (value - self.loc) / scale
        return -0.5 * z * z - (scale.log() + _HALF_LOG_TWO_PI)


class _WeightedMasked(dist.MaskedDistribution):
    """A masked distribution whose log-density is multiplied entry by entry by a weight."""

    def __init__(self, base_dist, mask, weight):
        super().__init__(base_dist, mask)
        self._weight = weight

    def expand(self, batch_shape, _instance=None):
        base = self.base_dist.expand(batch_shape)
        mask = self._mask.expand(batch_shape)
        return _WeightedMasked(base, mask, self._weight.expand(batch_shape))

    def log_prob(self, value):
        return super().log_prob(value) * self._weight


def masked_normal(
    loc: torch.Tensor,
    scale: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
):
    """Gaussian likelihood of the observed entries only, as one event per series.

    Parameters
    ----------
    loc : Tensor of shape (..., batch, time, features)
    scale : Tensor broadcastable to ``loc``
    mask : BoolTensor of shape (batch, time, features)
        Entries that are False contribute nothing (no imputation).
    weight : Tensor broadcastable to (batch, time, features), optional
        Multiplies each entry's log-density, e.g. of shape (batch, 1, features) for one weight
        per (series, feature) pair (see :meth:`latentode.datasets.Batch.weight_pairs`); the
        result is then a weighted pseudo-likelihood, not a density.

    Returns
    -------
    pyro.distributions.Distribution
        ``batch_shape (..., batch)``, ``event_shape (time, features)``.
    """
    if isinstance(scale, torch.Tensor) and scale.dim() <= 1:  # one scale per feature
        base = _SharedScaleNormal(loc, scale)
    else:
        base = dist.Normal(loc, scale)
    return _masked(base, mask, weight)


def masked_student_t(
    loc: torch.Tensor,
    scale: torch.Tensor,
    df: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
):
    """Student-t likelihood of the observed entries only, as one event per series.

    Heavy tails let a few gross errors (a mistyped lab value) cost a bounded amount instead of
    pulling the fit toward them. Arguments as :func:`masked_normal`, and

    Parameters
    ----------
    df : Tensor broadcastable to ``loc``
        Degrees of freedom, e.g. one per feature of shape (features,).

    Returns
    -------
    pyro.distributions.Distribution
        ``batch_shape (..., batch)``, ``event_shape (time, features)``.
    """
    return _masked(dist.StudentT(df, loc, scale), mask, weight)


def _masked(base, mask, weight):
    if weight is None:
        return base.mask(mask).to_event(2)
    return _WeightedMasked(base, mask, weight.expand(base.batch_shape)).to_event(2)


def observation_window(observed: torch.Tensor):
    """Index of each series' first and last observed time step.

    Parameters
    ----------
    observed : BoolTensor of shape (batch, time)

    Returns
    -------
    first, last : LongTensor of shape (batch,)
    """
    n_time = observed.shape[-1]
    steps = torch.arange(n_time, device=observed.device)
    first = torch.where(observed, steps, n_time).min(-1).values
    last = torch.where(observed, steps, -1).max(-1).values
    return first, last


def window_integral(cumulative: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Integral of the intensity over each series' observation window.

    Parameters
    ----------
    cumulative : Tensor of shape (..., batch, time, features)
        ``Λ(t) = ∫_0^t λ(z(s)) ds`` on the batch grid.
    observed : BoolTensor of shape (batch, time)

    Returns
    -------
    Tensor of shape (..., batch, features)
        ``Λ(t_last) − Λ(t_first)`` for each series.
    """
    first, last = observation_window(observed)
    shape = cumulative.shape[:-2] + (1, cumulative.shape[-1])
    idx_first = first.view(-1, 1, 1).expand(shape)
    idx_last = last.view(-1, 1, 1).expand(shape)
    return (cumulative.gather(-2, idx_last) - cumulative.gather(-2, idx_first)).squeeze(-2)


def poisson_process_log_likelihood(
    intensity: torch.Tensor, mask: torch.Tensor, integral: torch.Tensor
) -> torch.Tensor:
    """Log-likelihood of observation times under inhomogeneous Poisson processes.

    One process per feature: ``Σ_i log λ_d(t_i) − ∫ λ_d(t) dt`` summed over features, where the
    ``t_i`` are the times at which feature ``d`` was observed.

    Parameters
    ----------
    intensity : Tensor of shape (..., batch, time, features)
        ``λ(z(t))`` on the grid, positive.
    mask : BoolTensor of shape (batch, time, features)
        Which feature was observed at which time.
    integral : Tensor of shape (..., batch, features)
        ``∫ λ_d(t) dt`` over each series' observation window.

    Returns
    -------
    Tensor of shape (..., batch)
    """
    log_lam = torch.where(mask, torch.log(intensity), torch.zeros_like(intensity))
    return log_lam.sum((-1, -2)) - integral.sum(-1)
