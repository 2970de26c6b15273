"""Masked observation likelihoods and the Poisson-process likelihood of observation times."""

from __future__ import annotations

import pyro.distributions as dist
import torch

__all__ = [
    "masked_normal",
    "observation_window",
    "window_integral",
    "poisson_process_log_likelihood",
]


def masked_normal(loc: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor):
    """Gaussian likelihood of the observed entries only, as one event per series.

    Parameters
    ----------
    loc : Tensor of shape (..., batch, time, features)
    scale : Tensor broadcastable to ``loc``
    mask : BoolTensor of shape (batch, time, features)
        Entries that are False contribute nothing (no imputation).

    Returns
    -------
    pyro.distributions.Distribution
        ``batch_shape (..., batch)``, ``event_shape (time, features)``.
    """
    return dist.Normal(loc, scale).mask(mask).to_event(2)


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
