"""Continuous normalizing flows (Chen et al. 2018, section 4; Grathwohl et al. 2019).

A CNF moves samples along ``dz/dt = f(z, t)`` from ``t = 0`` to ``t = t1``; by the
instantaneous change of variables, ``d log p(z(t)) / dt = -tr(∂f/∂z)``, so the log-density of
the result follows from one ODE solve of the augmented state ``(z, ∫ tr)``. The trace is exact
(one vector-Jacobian product per dimension) or Hutchinson's estimate ``εᵀ (∂f/∂z) ε`` with a
probe ``ε`` drawn once per solve (FFJORD), which costs one product whatever the dimension.

:class:`CNF` is a Pyro ``TransformModule``: put it in a
``pyro.distributions.TransformedDistribution`` to get a flexible distribution with exact
sampling and log-density, e.g. as the variational posterior of a Latent ODE
(``LatentODE(guide="cnf")``).
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn

from ._validation import check_params, choice, real
from .solvers import ODESolver, SolverSettings

__all__ = [
    "CNF",
    "CNFDynamics",
    "DEFAULT_SOLVER",
    "TRACE_ESTIMATORS",
    "exact_trace",
    "hutchinson_trace",
]

#: Ways of computing tr(∂f/∂z).
TRACE_ESTIMATORS = ("exact", "hutchinson")

#: The solver settings of a :class:`CNF` unless it is given others: a flow's log-density is
#: only as good as its solve, so the tolerances are tighter than a latent trajectory's.
DEFAULT_SOLVER = SolverSettings(rtol=1e-5, atol=1e-5, max_nfe=10_000)

_PARAMETERS = (
    choice("trace", ("auto", *TRACE_ESTIMATORS)),
    choice("noise", ("rademacher", "gaussian")),
    real("t1", low=0, low_open=True),
)


class CNFDynamics(nn.Module):
    """A vector field ``f(z, t)`` for a CNF: an MLP with time as an input of every layer.

    Parameters
    ----------
    dim : int
        Dimension of ``z``.
    hidden_dim : int, default 64
    n_layers : int, default 3
        Linear layers.
    time_dependent : bool, default True
        Feed ``t`` to every layer (the concatenation form of FFJORD); False gives autonomous
        dynamics ``f(z)``.
    gated : bool, default False
        Multiply each hidden layer by a gate ``sigmoid(W t + b)`` computed from time (a small
        hypernetwork, in the spirit of the paper's time-dependent CNF).

    Notes
    -----
    The last layer starts at zero, so an untrained flow is the identity.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int = 64,
        n_layers: int = 3,
        *,
        time_dependent: bool = True,
        gated: bool = False,
    ):
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"n_layers must be at least 2; got {n_layers}.")
        extra = 1 if time_dependent else 0
        sizes = [dim] + [hidden_dim] * (n_layers - 1) + [dim]
        self.layers = nn.ModuleList(
            nn.Linear(a + extra, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.gates = (
            nn.ModuleList(nn.Linear(1, hidden_dim) for _ in range(n_layers - 1)) if gated else None
        )
        self.time_dependent = time_dependent
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Evaluate ``f``.

        Parameters
        ----------
        t : Tensor, scalar
        z : Tensor of shape (..., dim)

        Returns
        -------
        Tensor of shape (..., dim)
        """
        tt = t.to(z).expand(z.shape[:-1] + (1,))
        h = z
        for k, layer in enumerate(self.layers):
            h = layer(torch.cat([h, tt], -1) if self.time_dependent else h)
            if k < len(self.layers) - 1:
                h = nn.functional.softplus(h)
                if self.gates is not None:
                    h = h * torch.sigmoid(self.gates[k](tt))
        return h


class _Augmented(nn.Module):
    """``(z, a) ↦ (f(t, z), tr ∂f/∂z)``: the CNF's dynamics with its log-density rate."""

    def __init__(self, dynamics: nn.Module, dim: int):
        super().__init__()
        self.dynamics = dynamics
        self.dim = dim
        self.estimator = "exact"
        self.probe: torch.Tensor | None = None
        self.create_graph = True

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = state[..., : self.dim]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.dynamics(t, z)
            if self.estimator == "exact":
                trace = exact_trace(dz, z, create_graph=self.create_graph)
            else:
                trace = hutchinson_trace(dz, z, self.probe, create_graph=self.create_graph)
        if not self.create_graph:
            dz, trace = dz.detach(), trace.detach()
        return torch.cat([dz, trace.unsqueeze(-1)], -1)


def exact_trace(fz: torch.Tensor, z: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    """``tr(∂f/∂z)`` for each row, by one vector-Jacobian product per dimension.

    Parameters
    ----------
    fz : Tensor of shape (..., dim)
        ``f(z)``, computed from ``z`` with autograd recording.
    z : Tensor of shape (..., dim)
    create_graph : bool, default True
        Keep the graph (needed to train through the trace).

    Returns
    -------
    Tensor of shape (...)
    """
    total = torch.zeros(fz.shape[:-1], dtype=fz.dtype, device=fz.device)
    dim = fz.shape[-1]
    for i in range(dim):
        (g,) = torch.autograd.grad(
            fz[..., i].sum(), z, create_graph=create_graph, retain_graph=create_graph or i < dim - 1
        )
        total = total + g[..., i]
    return total


def hutchinson_trace(
    fz: torch.Tensor, z: torch.Tensor, probe: torch.Tensor, *, create_graph: bool = True
) -> torch.Tensor:
    """Hutchinson's unbiased estimate ``εᵀ (∂f/∂z) ε`` for each row.

    Parameters
    ----------
    fz, z : Tensor of shape (..., dim)
        As in :func:`exact_trace`.
    probe : Tensor of shape (..., dim)
        ``ε`` with ``E[ε εᵀ] = I`` (Rademacher or standard normal entries).
    create_graph : bool, default True

    Returns
    -------
    Tensor of shape (...)
    """
    (vjp,) = torch.autograd.grad(fz, z, probe, create_graph=create_graph)
    return (vjp * probe).sum(-1)


class CNF(TransformModule):
    """A continuous normalizing flow as a Pyro ``TransformModule`` on vectors.

    ``y = T(x)`` is the solution at ``t1`` of ``dz/dt = f(z, t)`` started at ``x``;
    ``log |det ∂y/∂x| = ∫_0^{t1} tr(∂f/∂z(t)) dt``, solved alongside. The inverse solves
    backwards from ``t1`` to 0.

    Parameters
    ----------
    dim : int
        Dimension of the vectors (the transform's event has shape ``(dim,)``).
    dynamics : nn.Module, optional
        ``f(t, z)``; default :class:`CNFDynamics` with ``hidden_dim=64``.
    t1 : float, default 1.0
    trace : {"auto", "exact", "hutchinson"}, default "auto"
        "auto" is exact up to 8 dimensions and Hutchinson's estimator above (exact is always
        used when gradients are not being recorded, e.g. to evaluate a trained flow).
    noise : {"rademacher", "gaussian"}, default "rademacher"
        Distribution of Hutchinson's probe, drawn once per solve.
    settings : SolverSettings, optional
        How the flow's ODE is solved; default :data:`DEFAULT_SOLVER` (dopri5 at rtol and atol
        1e-5, at most 10 000 evaluations a solve).
    **changes
        Fields of :class:`~latentode.solvers.SolverSettings` to change (``rtol=``,
        ``adjoint=``, ...).

    Attributes
    ----------
    nfe : dict
        Function evaluations, forward and backward (adjoint), since :meth:`reset_nfe`.

    Examples
    --------
    >>> import torch, pyro.distributions as dist
    >>> from latentode.flows import CNF
    >>> flow = CNF(2)
    >>> base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    >>> q = dist.TransformedDistribution(base, [flow])
    >>> x = q.rsample((5,))
    >>> q.log_prob(x).shape
    torch.Size([5])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(
        self,
        dim: int,
        dynamics: nn.Module | None = None,
        *,
        t1: float = 1.0,
        trace: str = "auto",
        noise: str = "rademacher",
        settings: SolverSettings | None = None,
        **changes,
    ):
        super().__init__(cache_size=1)
        check_params(dict(trace=trace, noise=noise, t1=t1), _PARAMETERS)
        self.dim = int(dim)
        self.trace = trace
        self.noise = noise
        self.t1 = float(t1)
        dynamics = CNFDynamics(dim) if dynamics is None else dynamics
        self.augmented = _Augmented(dynamics, self.dim)
        settings = DEFAULT_SOLVER if settings is None else settings
        self.solver = ODESolver(self.augmented, settings, **changes)
        self._last = None

    @property
    def dynamics(self) -> nn.Module:
        """The vector field ``f(t, z)``."""
        return self.augmented.dynamics

    @property
    def nfe(self) -> dict:
        return self.solver.nfe

    def reset_nfe(self) -> None:
        """Set both evaluation counters to zero."""
        self.solver.reset_nfe()

    def _estimator(self) -> str:
        if self.trace != "auto":
            return self.trace
        if not torch.is_grad_enabled():
            return "exact"
        return "exact" if self.dim <= 8 else "hutchinson"

    def flow(self, z: torch.Tensor, *, reverse: bool = False):
        """Solve the flow and the integral of the trace.

        Parameters
        ----------
        z : Tensor of shape (..., dim)
            The state at 0 (or at ``t1`` when ``reverse``).
        reverse : bool, default False

        Returns
        -------
        out : Tensor of shape (..., dim)
            The state at ``t1`` (or at 0).
        log_det : Tensor of shape (...)
            ``log |det ∂T/∂x|`` of the forward map ``T``, for either direction.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"the CNF acts on vectors of size {self.dim}; got shape {z.shape}.")
        aug = self.augmented
        aug.estimator = self._estimator()
        aug.create_graph = torch.is_grad_enabled()
        if aug.estimator == "hutchinson":
            if self.noise == "rademacher":
                aug.probe = torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1
            else:
                aug.probe = torch.randn_like(z)
        t = torch.tensor([0.0, self.t1], dtype=z.dtype, device=z.device)
        if reverse:
            t = t.flip(0)
        state = torch.cat([z, z.new_zeros(z.shape[:-1] + (1,))], -1)
        end = self.solver(state, t)[-1]
        out, integral = end[..., : self.dim], end[..., self.dim]
        return out, (-integral if reverse else integral)

    def _call(self, x):
        y, log_det = self.flow(x)
        self._last = (x, y, log_det)
        return y

    def _inverse(self, y):
        x, log_det = self.flow(y, reverse=True)
        self._last = (x, y, log_det)
        return x

    def log_abs_det_jacobian(self, x, y):
        """``log |det ∂y/∂x|``, shape ``x.shape[:-1]``; reuses the last solve when it matches."""
        last = self._last
        if last is not None and last[0] is x and last[1] is y:
            return last[2]
        _, log_det = self.flow(x)
        return log_det
