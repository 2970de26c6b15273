"""Plain ``torch.nn`` parts: ODE dynamics and their regularisers, decoders, intensities, and
the continuous-depth layer :class:`ODEBlock`.

Nothing here knows about Pyro. The recurrent networks over irregular series (recognition
networks, ODE-RNN forecasters) are in :mod:`latentode.recurrent`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .solvers import ODESolver, SolverSettings

__all__ = [
    "AugmentedDynamics",
    "Anchor",
    "Decoder",
    "IntensityNet",
    "ODEBlock",
    "ODEFunc",
    "RegularisedDynamics",
    "SameTimeReadout",
    "last_observed",
    "mlp",
    "next_observed",
    "own_neighbours",
]


def mlp(n_in: int, n_hidden: int, n_out: int, *, n_layers: int = 2, activation=nn.ELU):
    """A multilayer perceptron with ``n_layers`` linear layers.

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Input, hidden and output widths.
    n_layers : int, default 2
        Number of linear layers (at least 1).
    activation : type of nn.Module
        Activation between linear layers. ``nn.ELU`` and ``nn.ReLU`` act in place on the
        linear layer's output (nothing else reads it), so no new tensor is allocated; for
        ELU, autograd then keeps one tensor per hidden layer for the backward pass instead
        of two (its input beside its output, which the next layer keeps).

    Returns
    -------
    nn.Sequential
        Maps (..., n_in) to (..., n_out). The leading dimensions are flattened into one
        before the first layer and restored after the last, so that every layer works on a
        plain matrix (an in-place activation on a view of a larger tensor would make
        autograd copy the whole tensor back in the backward pass).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be at least 1; got {n_layers}.")
    widths = [n_in] + [n_hidden] * (n_layers - 1) + [n_out]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < n_layers - 1:
            in_place = activation in _IN_PLACE
            layers.append(activation(inplace=True) if in_place else activation())
    return _Flat(*layers)


class _Flat(nn.Sequential):
    """``nn.Sequential`` of layers on (rows, width) matrices, applied to (..., width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # the solver's and the recurrent loops' calls: nothing to flatten
            return super().forward(x)
        out = super().forward(x.reshape(-1, x.shape[-1]))
        return out.view(*x.shape[:-1], out.shape[-1])


#: activations that ``mlp`` applies in place: their backward reads their output only
_IN_PLACE = (nn.ELU, nn.ReLU)


class ODEFunc(nn.Module):
    """Autonomous latent dynamics ``dz/dt = f(z)``, an MLP.

    Parameters
    ----------
    latent_dim : int
        Size of the latent state.
    hidden_dim : int, default 20
        Width of the hidden layers.
    n_layers : int, default 3
        Number of linear layers.
    """

    def __init__(self, latent_dim: int, hidden_dim: int = 20, *, n_layers: int = 3):
        super().__init__()
        self.net = mlp(latent_dim, hidden_dim, latent_dim, n_layers=n_layers)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Vector field at state ``z`` of shape (..., latent); ``t`` is ignored."""
        return self.net(z)


class AugmentedDynamics(nn.Module):
    """Latent dynamics augmented with the integrated intensity ``dΛ/dt = λ(z)``.

    The state is ``[z, Λ]`` of shape (..., latent + features); one solve yields the latent
    trajectory and the cumulative intensity needed by the Poisson-process likelihood.

    Parameters
    ----------
    func : nn.Module
        The latent vector field, ``func(t, z)``.
    intensity : nn.Module
        Maps (..., latent) to non-negative intensities (..., features).
    latent_dim : int
        Size of ``z``.
    """

    def __init__(self, func: nn.Module, intensity: nn.Module, latent_dim: int):
        super().__init__()
        self.func = func
        self.intensity = intensity
        self.latent_dim = latent_dim

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = y[..., : self.latent_dim]
        return torch.cat([self.func(t, z), self.intensity(z)], dim=-1)


class RegularisedDynamics(nn.Module):
    """Dynamics that also integrate the kinetic energy and the Jacobian's Frobenius norm.

    The state is ``[y, E, J]``: ``y`` the wrapped dynamics' state (its first ``latent_dim``
    entries the latent ``z``), ``dE/dt = |f(z)|²`` and ``dJ/dt = |εᵀ ∂f/∂z|²`` with a
    Gaussian probe ``ε`` fixed for the solve (Hutchinson's unbiased estimate of
    ``|∂f/∂z|_F²``). Penalising ``E`` and ``J`` at the end of the solve favours straight,
    smooth trajectories that adaptive solvers cross in fewer steps (Finlay et al., How to
    train your neural ODE, ICML 2020); both ride along the same solve.

    When :attr:`active` is False the module is the wrapped dynamics unchanged.

    Parameters
    ----------
    inner : nn.Module
        Dynamics ``inner(t, y)`` of a state ``y`` of shape (..., state).
    latent_dim : int
        The latent part of ``y``.
    jacobian : bool, default True
        Integrate ``J`` (one vector-Jacobian product per evaluation); otherwise ``J`` stays 0.
    """

    def __init__(self, inner: nn.Module, latent_dim: int, *, jacobian: bool = True):
        super().__init__()
        self.inner = inner
        self.latent_dim = latent_dim
        self.jacobian = jacobian
        self.active = False
        self.probe: torch.Tensor | None = None

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:  # e.g. ``intensity`` of the wrapped augmented dynamics
            return getattr(super().__getattr__("inner"), name)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return self.inner(t, y)
        state = y[..., :-2]
        if not self.jacobian:
            out = self.inner(t, state)
            kinetic = out[..., : self.latent_dim].pow(2).sum(-1, keepdim=True)
            return torch.cat([out, kinetic, torch.zeros_like(kinetic)], dim=-1)
        record = torch.is_grad_enabled()  # False in a checkpointed forward solve
        with torch.enable_grad():
            if not (record and state.requires_grad):  # a view made without grad is detached
                state = state.detach().requires_grad_(True)
            out = self.inner(t, state)
            dz = out[..., : self.latent_dim]
            probe = self.probe if self.probe is not None else torch.randn_like(dz)
            (vjp,) = torch.autograd.grad(dz, state, probe, create_graph=record)
        kinetic = dz.pow(2).sum(-1, keepdim=True)
        frobenius = vjp[..., : self.latent_dim].pow(2).sum(-1, keepdim=True)
        if not record:
            out, kinetic, frobenius = out.detach(), kinetic.detach(), frobenius.detach()
        return torch.cat([out, kinetic, frobenius], dim=-1)


class Decoder(nn.Module):
    """Maps latent states (..., latent) to observation means (..., features)."""

    def __init__(self, latent_dim: int, n_features: int, hidden_dim: int = 20):
        super().__init__()
        self.net = mlp(latent_dim, hidden_dim, n_features, n_layers=2, activation=nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _last_position(mask):
    """The position of the last True at or before each position along dim -2 (-1 where there
    is none): LongTensor of ``mask``'s shape (..., time, features)."""
    n = mask.shape[-2]
    position = torch.arange(n, device=mask.device).view(n, 1)
    return torch.where(mask.bool(), position, -1).cummax(dim=-2).values


def last_observed(times, values, mask, query_times, *, with_index: bool = False):
    """Each feature's last observed value strictly before each query time, and its age.

    Parameters
    ----------
    times : Tensor of shape (time,)
        Increasing grid of ``values``.
    values, mask : Tensor of shape (batch, time, features)
    query_times : Tensor of shape (query,)
        Increasing, on the same scale as ``times``.
    with_index : bool, default False
        Also return where on ``times`` each value was observed.

    Returns
    -------
    last, gap : Tensor of shape (batch, query, features)
        The value and the time from it to the query time; where a feature has no observation
        before a query time, ``last`` is 0, ``gap`` 0 and ``seen`` False.
    seen : BoolTensor of shape (batch, query, features)
    index : LongTensor of shape (batch, query, features)
        With ``with_index``: the position of ``last`` on ``times`` (0 where not ``seen``).
    """
    filled = _last_position(mask)
    before = torch.searchsorted(times.contiguous(), query_times.contiguous()) - 1
    source = filled[:, before.clamp(min=0), :]
    source = torch.where((before >= 0).view(1, -1, 1), source, -1)
    seen = source >= 0
    source = source.clamp(min=0)
    last = torch.where(seen, values.gather(-2, source), 0.0)
    gap = torch.where(seen, query_times.view(1, -1, 1) - times[source], 0.0)
    if with_index:
        return last, gap, seen, source
    return last, gap, seen


def next_observed(times, values, mask, query_times, *, with_index: bool = False):
    """Each feature's next observed value strictly after each query time, and the time to it.

    The mirror image of :func:`last_observed`, with the same arguments and returns.
    """
    found = last_observed(
        -times.flip(0), values.flip(-2), mask.flip(-2), -query_times.flip(0), with_index=with_index
    )
    out = [x.flip(-2) for x in found]
    if with_index:  # positions on the flipped grid, back to ``times``
        out[3] = torch.where(out[2], times.numel() - 1 - out[3], 0)
    return tuple(out)


def own_neighbours(times, values, mask, *, with_index: bool = False):
    """Each feature's nearest observations before and after each of a series' own times.

    What :func:`last_observed` and :func:`next_observed` give at the grid's times, for series
    laid out on their own observation times instead (each series' times in order, padded at
    the end): the work is that of the observations, not of a batch's union grid.

    Parameters
    ----------
    times : Tensor of shape (batch, own)
        Each series' observation times, increasing over its observed positions; padding
        positions (after them) may hold any finite time.
    values, mask : Tensor of shape (batch, own, features)
        Padding positions unobserved.
    with_index : bool, default False
        Also return where on the series' own positions each neighbour was observed.

    Returns
    -------
    before, after : tuple
        ``(value, gap, seen)`` (and ``index`` with ``with_index``), each of shape (batch,
        own, features), as :func:`last_observed` and :func:`next_observed` return them: the
        feature's last observation strictly before each position and the time since it, and
        its next one strictly after and the time until it; 0 and ``seen`` False where there
        is none. Entries at padding positions are not meaningful.
    """
    n = values.shape[-2]
    none = torch.full_like(mask[..., :1, :], -1, dtype=torch.long)
    # the last observed position at or before each position, then strictly before it
    before = torch.cat([none, _last_position(mask)[..., :-1, :]], dim=-2)
    # the first observed at or after each (the last one on the reversed axis), then after it
    upto = _last_position(mask.flip(-2)).flip(-2)
    after = torch.cat([torch.where(upto >= 0, n - 1 - upto, -1)[..., 1:, :], none], dim=-2)
    at = times.unsqueeze(-1).expand(values.shape)
    out = []
    for source, sign in ((before, 1.0), (after, -1.0)):
        found = source >= 0
        source = source.clamp(min=0)
        value = torch.where(found, values.gather(-2, source), 0.0)
        gap = torch.where(found, sign * (at - at.gather(-2, source)), 0.0)
        out.append((value, gap, found, source) if with_index else (value, gap, found))
    return tuple(out)


class Anchor(nn.Module):
    """Blends decoded means with each feature's nearest observations before and after.

    ``mean = softmax(0, a_d − r_d Δ⁻, b_d − s_d Δ⁺) · (decoded, x⁻, x⁺)``: ``x⁻`` is
    feature ``d``'s last observation before the time, ``Δ⁻`` the time since it, ``x⁺`` and
    ``Δ⁺`` the next one after; ``a, b`` and the rates ``r, s > 0`` are learned per feature,
    and an observation that does not exist has weight 0. An observation counts less the
    further away it is — the decay of GRU-D (Che et al. 2018) toward the last observation,
    applied to the output and on both sides — so slowly varying features (labs) keep their
    level and gaps between observations are bridged, while the latent path carries the
    change; where no observation is near (far forecasts) the decoder speaks alone. The rates
    are learned on a log scale (start 1 per unit of model time), so decays over a small share
    of the span are reached as quickly as slow ones.

    With ``follow_path`` each neighbour is first carried along the decoded path: ``x⁻`` is
    replaced by ``x⁻ + β⁻_d (decoded(t) − decoded(t⁻))`` (and ``x⁺`` likewise), with
    ``β_d`` in (0, 1) learned per feature and side (start 0.5). At ``β = 1`` the blend is
    the decoded path shifted by the nearby observations' residuals, so a neighbour keeps its
    offset from the path instead of pulling a trend back to its level; at ``β → 0`` it is
    the level blend above.

    Parameters
    ----------
    n_features : int
    follow_path : bool, default False
    """

    def __init__(self, n_features: int, *, follow_path: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, n_features))  # before, after
        # rates on a log scale: a step of the optimiser changes them by a factor, so a decay
        # over a small share of the span is as reachable as one over all of it
        self.log_rate = nn.Parameter(torch.zeros(2, n_features))
        self.follow_path = follow_path
        if follow_path:
            self.path_logit = nn.Parameter(torch.zeros(2, n_features))  # β = sigmoid

    def forward(self, loc, before, after, path=None):
        """Blend ``loc (..., batch, query, features)`` with the outputs ``(last, gap, seen)``
        of :func:`last_observed` and :func:`next_observed` (each of shape (batch, query,
        features)); returns the shape of ``loc``. With ``follow_path`` the outputs carry
        their ``index`` too (``with_index=True``) and ``path (..., batch, time, features)``
        is the decoded mean on the observation grid they index."""
        rate = self.log_rate.exp()
        logits, values = [torch.zeros_like(loc)], [loc]
        for k, side in enumerate((before, after)):
            x, gap, seen = side[:3]
            logit = self.weight[k] - rate[k] * gap
            logits.append(torch.where(seen, logit, -torch.inf).expand_as(loc))
            if self.follow_path:
                index = side[3].expand(path.shape[:-2] + side[3].shape[-2:])
                moved = loc - path.gather(-2, index)  # the path's change since (until) x
                x = x + torch.sigmoid(self.path_logit[k]) * torch.where(seen, moved, 0.0)
            values.append(x.expand_as(loc))
        weights = torch.softmax(torch.stack(logits, -1), dim=-1)
        return (weights * torch.stack(values, -1)).sum(-1)


class SameTimeReadout(nn.Module):
    """Reads each feature at a time from the other features observed at that time.

    For feature ``d`` at a time where other features are seen, a network of their values
    and standardised residuals ``u_j = (x_j − μ_j) / σ_j`` (``j ≠ d`` seen; winsorised at
    ``±limit``, the values with them), of which features were seen, and of the decoded
    means ``μ`` of the time gives a shift and a scale: ``x_d ≈ μ_d + σ_d · shift_d`` with
    spread ``σ_d · spread_d``. The relations it can learn are those of the data, linear or
    not (a derived channel computed from others, a monitor's channels failing together),
    where a shared-noise conditional is linear and floored by each feature's own noise. The
    value of ``d`` itself never enters its own readout, so predictions at observed times do
    not copy the value being predicted.

    One hidden layer of ``hidden_dim`` units is shared by all targets: its input is the seen
    values, residuals and mask, the decoded means and the target's code, computed for every
    target at once by taking the target's own terms off a shared sum. Each target weighs the
    shared units by its own gain (``gate``, features × hidden, starting at one), so that one
    target can use a combination of the others that another target ignores (a derived
    channel is an exact function of two others, which the shared layer alone finds only
    approximately). The output layer starts at zero: before training the readout is the
    decoded mean with the marginal scale.

    Parameters
    ----------
    n_features : int
    hidden_dim : int
        Width of the hidden layers.
    """

    def __init__(self, n_features: int, hidden_dim: int):
        super().__init__()
        self.residual = nn.Linear(n_features, hidden_dim, bias=False)
        self.value = nn.Linear(n_features, hidden_dim, bias=False)
        self.seen = nn.Linear(n_features, hidden_dim, bias=False)
        self.mean = nn.Linear(n_features, hidden_dim)
        self.target = nn.Parameter(0.1 * torch.randn(n_features, hidden_dim))
        self.gate = nn.Parameter(torch.ones(n_features, hidden_dim))
        self.head = mlp(hidden_dim, hidden_dim, 2, n_layers=2, activation=nn.ELU)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, loc, marginal, values, seen, *, limit=None, at=None):
        """Shift and spread of every feature given the others seen at the same time.

        Parameters
        ----------
        loc : Tensor of shape (..., batch, time, features)
            Decoded means.
        marginal : Tensor broadcastable to ``loc``
            Each feature's marginal noise scale ``σ``.
        values : Tensor of shape (batch, time, features)
            Observations at the same times (anything where not ``seen``).
        seen : BoolTensor of shape (batch, time, features)
        limit : float, optional
            Winsorise the standardised residuals at ``±limit``.
        at : tuple of LongTensor, optional
            Read only these entries of ``loc``'s shape, given as ``mask.nonzero(as_tuple=True)``
            gives them (training reads the scored values only): ``mean`` and ``scale`` are
            then of shape (entries,), in that order, and the shared layer is computed on the
            rows (leading indices and time) that hold an entry only.

        Returns
        -------
        mean, scale : Tensor of shape (..., batch, time, features)
            ``μ + σ · shift`` and ``σ · spread``.
        others : BoolTensor of shape (batch, time, features)
            Where any other feature is seen: elsewhere ``mean, scale`` are ``μ, σ``'s readout
            from nothing, and callers keep their own prediction.
        """
        others = self.others(seen)
        marginal = marginal.expand(loc.shape)
        m = seen.to(loc.dtype)
        rows_loc, rows_marginal = loc, marginal
        if at is not None:
            # the inputs of only the rows (times of a draw and series) that hold an entry read
            rows = at[:-1]
            mark = torch.zeros(loc.shape[:-1], dtype=torch.bool, device=loc.device)
            mark[rows] = True
            kept = mark.nonzero(as_tuple=True)
            slot = torch.zeros(loc.shape[:-1], dtype=torch.long, device=loc.device)
            slot[kept] = torch.arange(kept[0].numel(), device=loc.device)
            rows_loc, rows_marginal = loc[kept], marginal[kept]
            values, m = values.expand(loc.shape)[kept], m.expand(loc.shape)[kept]
        u = (values - rows_loc) / rows_marginal * m
        if limit is not None:
            u = u.clamp(-limit, limit)
        x = (rows_loc + rows_marginal * u) * m  # the seen values, winsorised as their residuals
        # the shared sum over all seen features, less each target's own term
        shared = self.residual(u) + self.value(x) + self.seen(m) + self.mean(rows_loc)
        if at is None:
            w_u, w_x, w_m = self.residual.weight.T, self.value.weight.T, self.seen.weight.T
            own = u.unsqueeze(-1) * w_u + x.unsqueeze(-1) * w_x + m.unsqueeze(-1) * w_m
            # (..., time, features, hidden)
            hidden = (shared.unsqueeze(-2) - own) * self.gate + self.target
            back = slice(None)
        else:
            hidden, back = self._hidden_by_target(shared, u, x, m, slot[rows], at[-1])
            loc, marginal = loc[at], marginal[at]
        out = self.head(F.elu(hidden))[back]
        shift, spread = out[..., 0], F.softplus(out[..., 1] + _SOFTPLUS_ONE) + 1e-3
        return loc + marginal * shift, marginal * spread, others

    def _hidden_by_target(self, shared, u, x, m, r, d):
        """The hidden layer of the entries at rows ``r`` and targets ``d`` (LongTensors of
        shape (entries,)) of ``shared`` (rows, hidden) and ``u, x, m`` (rows, features),
        computed a target at a time: (entries, hidden) in the order of their targets, and
        the permutation (entries,) that puts rows of that order back in the entries' order.

        ``(shared − u w_u − x w_x − m w_m) · gate + target`` of each target is one product
        of its entries' own ``(u, x, m)`` with its gated weights and one multiply-add of
        their shared rows, instead of gathering five weight rows per entry."""
        order = torch.argsort(d, stable=True)
        r, d = r[order], d[order]
        counts = torch.bincount(d, minlength=self.gate.shape[0]).tolist()
        own = torch.stack([u[r, d], x[r, d], m[r, d]], -1)  # (entries, 3)
        weights = torch.stack(
            [self.residual.weight.T, self.value.weight.T, self.seen.weight.T], 1
        ) * self.gate.unsqueeze(1)  # (features, 3, hidden)
        parts, start = [], 0
        for target, n in enumerate(counts):
            if n:
                rows = slice(start, start + n)
                part = torch.addmm(self.target[target], own[rows], weights[target], alpha=-1)
                parts.append(part.addcmul_(shared[r[rows]], self.gate[target]))
                start += n
        back = torch.empty_like(order)
        back[order] = torch.arange(order.numel(), device=order.device)
        hidden = torch.cat(parts) if parts else shared.new_zeros((0, shared.shape[-1]))
        return hidden, back

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a readout saved before the per-target gain had none: a gain of one is that readout
        key = prefix + "gate"
        if prefix + "target" in state_dict and key not in state_dict:
            state_dict[key] = torch.ones_like(self.gate)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def others(seen: torch.Tensor) -> torch.Tensor:
        """Where any other feature is seen at the same time: BoolTensor of ``seen``'s shape
        (..., features)."""
        m = seen.to(torch.int32)
        return (m.sum(-1, keepdim=True) - m) > 0


#: softplus(_SOFTPLUS_ONE) = 1: an untrained readout keeps the marginal scale
_SOFTPLUS_ONE = 0.5413248546129181


class IntensityNet(nn.Module):
    """Per-feature observation intensity ``λ(z) > 0``, maps (..., latent) to (..., features)."""

    def __init__(self, latent_dim: int, n_features: int, hidden_dim: int = 20):
        super().__init__()
        self.net = mlp(latent_dim, hidden_dim, n_features, n_layers=2, activation=nn.Tanh)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.net(z)) + 1e-6


class ODEBlock(nn.Module):
    """A continuous-depth layer: the state of ``dh/dt = func(t, h)`` at the end of ``t``.

    The ODE-Net block of Chen et al. (2018), section 3: where a residual network applies
    ``h + f(h)`` a fixed number of times, this layer solves the ODE from ``t[0]`` to ``t[1]``
    with an adaptive (or fixed-step) solver, and can backpropagate with the adjoint method so
    that training memory does not grow with the number of solver steps.

    Parameters
    ----------
    func : nn.Module
        Vector field called as ``func(t, h)`` with ``t`` a scalar tensor and ``h`` of the
        input's shape; returns the same shape.
    t : (float, float), default (0, 1)
        Integration interval.
    settings : SolverSettings, optional
        How the ODE is solved (:class:`~latentode.solvers.SolverSettings`; default dopri5 at
        rtol 1e-3, atol 1e-4); with a fixed-step method give ``options={"step_size": ...}``,
        for gradients by the adjoint method (memory flat in the number of steps)
        ``adjoint=True``.
    **changes
        Fields of :class:`~latentode.solvers.SolverSettings` to change (``method=``,
        ``rtol=``, ``adjoint=``, ``options=``, ``max_nfe=``, ...).

    Attributes
    ----------
    nfe : dict
        ``{"forward": int, "backward": int}``: evaluations of ``func`` since the last
        :meth:`reset_nfe` — in forward solves, and in the adjoint's backward solves.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from latentode.nn import ODEBlock
    >>> class F(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.net = nn.Linear(3, 3)
    ...     def forward(self, t, h):
    ...         return torch.tanh(self.net(h))
    >>> block = ODEBlock(F())
    >>> block(torch.randn(5, 3)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self,
        func: nn.Module,
        t=(0.0, 1.0),
        *,
        settings: SolverSettings | None = None,
        **changes,
    ):
        super().__init__()
        t = torch.as_tensor(t, dtype=torch.float32)
        if t.shape != (2,) or not bool(t[1] > t[0]):
            raise ValueError(f"t must be an increasing pair (t0, t1); got {t.tolist()}.")
        self.register_buffer("t", t)
        self.solver = ODESolver(func, settings, **changes)

    @property
    def func(self) -> nn.Module:
        """The vector field."""
        return self.solver.func

    @property
    def nfe(self) -> dict:
        return self.solver.nfe

    def reset_nfe(self) -> None:
        """Set both evaluation counters to zero."""
        self.solver.reset_nfe()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Solve from ``h`` at ``t[0]``.

        Parameters
        ----------
        h : Tensor of any shape (batch, ...)

        Returns
        -------
        Tensor of the same shape
            The state at ``t[1]``.
        """
        return self.solver(h, self.t.to(h.dtype))[-1]
