"""Masked observation likelihoods and the Poisson-process likelihood of observation times."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints

__all__ = [
    "MaskedLowRankNormal",
    "MaskedLowRankStudentT",
    "conditional_low_rank",
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


class MaskedLowRankNormal(dist.TorchDistribution):
    """Gaussian observations whose noise is correlated across the features of one time.

    At each time point the observed features ``O`` of a series are jointly Gaussian with
    covariance ``Σ_OO``, ``Σ = diag(scale²) + factor factorᵀ`` (independent noise per feature
    plus ``rank`` shared components); time points are independent given the means. The
    log-density of the observed entries uses the Woodbury identity, so it costs
    ``O(features · rank²)`` per time point whatever the pattern of missing values.

    Parameters
    ----------
    loc : Tensor of shape (..., batch, time, features)
    scale : Tensor of shape (features,)
        Standard deviation of each feature's own noise.
    factor : Tensor of shape (features, rank)
        Loadings of the shared components.
    mask : BoolTensor of shape (batch, time, features)
        Entries that are False are marginalised out (not imputed).

    Notes
    -----
    ``batch_shape (..., batch)``, ``event_shape (time, features)``, like
    :func:`masked_normal`. :meth:`sample` draws every entry (masked ones too) jointly.
    """

    arg_constraints = {}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, factor, mask, validate_args=None):
        self.loc, self.scale, self.factor, self.mask = loc, scale, factor, mask
        super().__init__(loc.shape[:-2], loc.shape[-2:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        loc = self.loc.expand(torch.Size(batch_shape) + self.event_shape)
        return MaskedLowRankNormal(loc, self.scale, self.factor, self.mask)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        eta = torch.randn(
            shape[:-1] + (self.factor.shape[-1],), dtype=self.loc.dtype, device=self.loc.device
        )
        return self.loc + self.scale * eps + eta @ self.factor.T

    def _terms(self, value):
        """Per time point: the Mahalanobis distance ``δ²`` of the observed entries, the log
        determinant of their ``Σ_OO`` and their number ``k``, each of shape (..., batch, time).
        """
        m = self.mask.to(self.loc.dtype)
        var = self.scale**2
        dinv = m / var  # (batch, time, features): the mask's part, shared by every draw
        eye = torch.eye(self.factor.shape[-1], dtype=self.loc.dtype, device=self.loc.device)
        chol = torch.linalg.cholesky(
            eye + torch.einsum("...f,fr,fs->...rs", dinv, self.factor, self.factor)
        )
        r = (value - self.loc) * m
        v = (dinv * r) @ self.factor  # (..., batch, time, rank)
        w = torch.cholesky_solve(v.unsqueeze(-1), chol).squeeze(-1)
        quad = (dinv * r * r).sum(-1) - (v * w).sum(-1)
        log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) + (m * var.log()).sum(-1)
        return quad, log_det, m.sum(-1)

    def log_prob(self, value):
        quad, log_det, k = self._terms(value)
        return (-0.5 * (quad + log_det) - k * _HALF_LOG_TWO_PI).sum(-1)


class MaskedLowRankStudentT(MaskedLowRankNormal):
    """Heavy-tailed observations whose noise is correlated across the features of one time.

    :class:`MaskedLowRankNormal` with a multivariate Student-t in place of the Gaussian: at
    each time point the observed features ``O`` of a series follow a multivariate t with
    ``df`` degrees of freedom, location ``loc`` and scale matrix ``Σ_OO``, ``Σ = diag(scale²)
    + factor factorᵀ`` (covariance ``df / (df − 2) Σ``). A gross error at one time (a
    mistyped value, a disconnected monitor reading 0) then costs the logarithm of its
    distance instead of its square, so it neither inflates the scales nor bends the shared
    components that tie the features together. Marginalising a feature out or conditioning
    on the others keeps the family (see :func:`conditional_low_rank`).

    Parameters
    ----------
    loc, scale, factor, mask
        As :class:`MaskedLowRankNormal`.
    df : Tensor of shape () or (1,)
        Degrees of freedom, one for the joint distribution of a time.
    """

    def __init__(self, loc, scale, factor, df, mask, validate_args=None):
        super().__init__(loc, scale, factor, mask, validate_args=validate_args)
        self.df = df

    def expand(self, batch_shape, _instance=None):
        loc = self.loc.expand(torch.Size(batch_shape) + self.event_shape)
        return MaskedLowRankStudentT(loc, self.scale, self.factor, self.df, self.mask)

    def rsample(self, sample_shape=()):
        # a Gaussian draw divided by one Gamma(df/2, df/2) scale per time point
        gauss = super().rsample(sample_shape) - self.loc
        half = (self.df / 2).reshape(()).expand(gauss.shape[:-1])
        precision = torch.distributions.Gamma(half, half).rsample()
        return self.loc + gauss * precision.rsqrt().unsqueeze(-1)

    def log_prob(self, value):
        quad, log_det, k = self._terms(value)
        df = self.df.reshape(())
        per_time = (
            torch.lgamma((df + k) / 2)
            - torch.lgamma(df / 2)
            - 0.5 * k * torch.log(df * math.pi)
            - 0.5 * log_det
            - 0.5 * (df + k) * torch.log1p(quad / df)
        )
        return per_time.sum(-1)


def conditional_low_rank(loc, scale, factor, values, seen, df=None, *, limit=None):
    """Each feature's distribution given the other features observed at the same time.

    For the noise of :class:`MaskedLowRankNormal` (or :class:`MaskedLowRankStudentT` with
    ``df``): a feature not observed at a time is conditioned on the features that are; an
    observed one on the other observed ones (never on itself), so predictions at observed
    times do not copy the value being predicted. Without shared components (or nothing
    observed at a time) this is ``loc`` and the marginal scale.

    Parameters
    ----------
    loc : Tensor of shape (..., batch, time, features)
        Means before conditioning.
    scale, factor : Tensor of shape (features,) and (features, rank)
    values : Tensor of shape (batch, time, features)
        Observations at the same times (anything where not ``seen``).
    seen : BoolTensor of shape (batch, time, features)
    df : Tensor of shape () or (1,), optional
        Degrees of freedom of a multivariate t noise. Conditioned on ``k`` values at Mahalanobis
        distance ``δ²``, a feature is t with ``df + k`` degrees of freedom, the same location
        as the Gaussian's and its scale multiplied by ``sqrt((df + δ²) / (df + k))``.
    limit : float, optional
        Winsorise the conditioning: a seen value whose residual ``values − loc`` exceeds
        ``limit`` of its feature's marginal noise scales ``sqrt(scale² + Σ_r factor²)`` counts
        as that many scales on its side. The conditional is exact for the model, but the
        model has no part for one feature's gross error (a pH entered as 94): without a limit
        its residual, hundreds of scales, is carried into every other feature of that time
        through the shared components. Values within the limit condition exactly. None
        conditions on the values as they are.

    Returns
    -------
    mean, sd : Tensor of shape (..., batch, time, features)
        Conditional location and scale (the standard deviation for Gaussian noise).
    df : Tensor of shape (..., batch, time, features)
        With ``df`` only: the conditional degrees of freedom.
    """
    m = seen.to(loc.dtype)
    var = scale**2
    dinv = m / var
    eye = torch.eye(factor.shape[-1], dtype=loc.dtype, device=loc.device)
    inv = torch.linalg.inv(eye + torch.einsum("...f,fr,fs->...rs", dinv, factor, factor))
    c = torch.einsum("fr,...rs,fs->...f", factor, inv, factor)  # U_d A⁻¹ U_dᵀ
    r = (values - loc) * m
    if limit is not None:
        bound = limit * (var + (factor**2).sum(-1)).sqrt()
        r = torch.minimum(torch.maximum(r, -bound), bound)
    proj = (dinv * r) @ factor  # (..., batch, time, rank)
    solved = torch.einsum("...rs,...s->...r", inv, proj)
    shift = solved @ factor.T
    keep = (1 - c / var).clamp(min=1e-6)  # > 0 where observed (a positive definite Σ_OO)
    # where seen, loc + r is the value (winsorised), and (r − shift) / keep its own part
    mean = torch.where(seen, loc + r - (r - shift) / keep, loc + shift)
    sd = torch.where(seen, var / keep, var + c).sqrt()
    if df is None:
        return mean, sd
    # δ² of all observed values at the time, and of all but the feature itself where it is
    # observed: Σ⁻¹r has entries (r − shift) / var and Σ⁻¹ the diagonal keep / var
    quad = (dinv * r * r).sum(-1) - (solved * proj).sum(-1)
    k = m.sum(-1, keepdim=True)
    quad = quad.unsqueeze(-1).expand(mean.shape)
    quad = torch.where(seen, quad - (r - shift) ** 2 / (var * keep), quad).clamp(min=0)
    k = torch.where(seen, k - 1, k)
    df = df.reshape(())
    sd = sd * ((df + quad) / (df + k)).sqrt()
    return mean, sd, df + k


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
