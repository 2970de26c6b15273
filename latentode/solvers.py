"""The one place that solves ODEs: torchdiffeq, and the native Dormand–Prince loop.

:class:`ODESolver` wraps a vector field ``f(t, y)`` with the solver settings (method,
tolerances, options, gradient mode, backend), counts function evaluations in the forward and
the backward pass, and turns solver failures into :class:`SolverError` with advice.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from . import _rk
from ._validation import check_params, choice, integer, real

__all__ = [
    "BACKENDS",
    "FIXED_STEP_METHODS",
    "ODESolver",
    "SOLVER_METHODS",
    "SolverError",
    "SolverSettings",
]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP_METHODS = ("euler", "midpoint", "heun3", "rk4", "explicit_adams", "implicit_adams")
SOLVER_METHODS = ADAPTIVE_METHODS + FIXED_STEP_METHODS
#: Fixed steps below this need ``max_nfe`` (model time spans 1 over the training data).
_UNBOUNDED_STEP = 1e-4
BACKENDS = ("auto", "native", "torchdiffeq")
_GRADIENTS = (False, True, "checkpoint")
_NATIVE_METHODS = ("dopri5",)
_NATIVE_OPTIONS = frozenset({"max_num_steps"})


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite: a NaN or an infinity reaches its minimum or
    maximum, so two reductions tell (far cheaper than a boolean copy of ``t``)."""
    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


class SolverError(RuntimeError):
    """The ODE solver failed (step size underflow, too many steps, or non-finite state).

    Parameters
    ----------
    message : str
        What failed and what to change.
    reason : str, optional
        What failed only, without the advice, for callers that give their own (the attribute
        ``reason``; None when not known).
    """

    def __init__(self, *args, reason: str | None = None):
        super().__init__(*args)
        self.reason = reason


def raised_error(err: BaseException) -> BaseException:
    """The error as it was raised inside a Pyro model or guide.

    Pyro's tracing re-raises a ``ValueError`` or ``RuntimeError`` from inside a model as a new
    error of the same type whose message has the trace's shapes appended, chained to the
    original (once per enclosing trace). This follows that chain back, so that callers report
    the original message and keep its attributes (:attr:`SolverError.reason`).

    Parameters
    ----------
    err : BaseException
        A caught error.

    Returns
    -------
    BaseException
        The innermost error of the chain Pyro made, or ``err`` itself when Pyro did not
        re-raise it.
    """
    cause = err.__cause__
    while type(cause) is type(err) and str(err).startswith(str(cause) + "\n"):
        err, cause = cause, cause.__cause__
    return err


class _Counted(nn.Module):
    """Wraps a vector field and counts its evaluations by phase."""

    def __init__(self, func: nn.Module, max_nfe: int | None = None):
        super().__init__()
        self.func = func
        self.max_nfe = max_nfe
        self.describe = str
        self.phase = "backward"
        self.nfe = {"forward": 0, "backward": 0}
        self.solve_nfe = {"forward": 0, "backward": 0}

    def forward(self, t, y):
        self.nfe[self.phase] += 1
        self.solve_nfe[self.phase] += 1
        if self.max_nfe is not None and self.solve_nfe[self.phase] > self.max_nfe:
            what = (
                f"more than max_nfe={self.max_nfe} function evaluations in one {self.phase} solve"
            )
            raise _TooManyEvaluations(self.describe(what), reason=what)
        return self.func(t, y)


class _TooManyEvaluations(SolverError):
    """The evaluation cap was hit (raised from inside the solver, also in the backward pass)."""


@dataclass(frozen=True)
class SolverSettings:
    """How ODEs are solved: method, tolerances, options, gradient mode, backend, NFE cap.

    Frozen and validated once, at construction; :class:`ODESolver`,
    :class:`~latentode.nn.ODEBlock`, :class:`~latentode.flows.CNF` and
    :class:`~latentode.models.LatentODEModel` take one and pass it on. :meth:`replace` gives
    a validated copy with some fields changed.

    Parameters
    ----------
    method : str, default "dopri5"
        A torchdiffeq method; see :data:`SOLVER_METHODS`.
    rtol, atol : float, default 1e-3, 1e-4
        Relative and absolute tolerances of adaptive methods.
    options : dict, optional
        Passed to torchdiffeq (a copy is kept, read-only), e.g. ``{"step_size": 0.05}`` for
        fixed-step methods or ``{"max_num_steps": 1000}`` to cap adaptive steps.
    adjoint : {False, True, "checkpoint"}, default False
        How gradients are computed. False: backpropagation through the solver's operations
        (memory grows with the number of steps). True: the continuous adjoint, torchdiffeq's
        ``odeint_adjoint`` with the parameters of the vector field as ``adjoint_params``
        (memory constant in the number of steps; the backward solve restarts at every output
        time, so it pays for long horizons with few outputs). ``"checkpoint"``: the discrete
        adjoint of the native solver — the forward solve keeps one state per accepted step,
        the backward pass recomputes and differentiates one step at a time (the exact
        gradient of the solve, memory of one state per step, backward cost about one
        re-evaluation of each step whatever the number of output times).
    max_nfe : int or None, default None
        Cap on function evaluations of one solve (the forward solve and its backward pass
        counted separately); exceeding it raises :class:`SolverError`. Unlike
        ``options={"max_num_steps": ...}`` it also bounds fixed-step methods and the backward
        pass. A fixed ``step_size`` below 1e-4 needs it.
    backend : {"auto", "native", "torchdiffeq"}, default "auto"
        ``"native"``: this package's Dormand–Prince loop (``method="dopri5"`` only, options
        ``max_num_steps`` only; lower per-step overhead, outputs from its continuous
        extension); ``"torchdiffeq"``: the reference implementation; ``"auto"``: native where
        it applies (``dopri5``, ``adjoint`` False or ``"checkpoint"``, supported options),
        torchdiffeq otherwise.

    Examples
    --------
    >>> from latentode.solvers import SolverSettings
    >>> fixed = SolverSettings(method="rk4", options={"step_size": 0.1})
    >>> fixed.resolved_backend
    'torchdiffeq'
    >>> SolverSettings().replace(adjoint="checkpoint").resolved_backend
    'native'
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    options: Mapping = field(default_factory=dict)
    adjoint: bool | str = False
    max_nfe: int | None = None
    backend: str = "auto"

    def __post_init__(self):
        if self.options is not None and not isinstance(self.options, Mapping):
            raise TypeError(f"options must be a dict; got {type(self.options).__name__}.")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        check_params(values, _SETTINGS_CONSTRAINTS)
        options = copy.deepcopy(dict(self.options or {}))
        object.__setattr__(self, "options", MappingProxyType(options))
        object.__setattr__(self, "rtol", float(self.rtol))
        object.__setattr__(self, "atol", float(self.atol))
        if self.max_nfe is not None:
            object.__setattr__(self, "max_nfe", int(self.max_nfe))
        adjoint = self.adjoint if self.adjoint == "checkpoint" else bool(self.adjoint)
        object.__setattr__(self, "adjoint", adjoint)
        self._check_step_size(options)
        native_ok = self._native_ok
        if self.backend == "native" and not native_ok:
            raise ValueError(
                f"backend='native' supports method='dopri5' with adjoint False or "
                f"'checkpoint' and options {sorted(_NATIVE_OPTIONS)}; got method={self.method!r}, "
                f"adjoint={adjoint!r}, options={options}. Use backend='torchdiffeq'."
            )
        if adjoint == "checkpoint" and (not native_ok or self.backend == "torchdiffeq"):
            raise ValueError(
                "adjoint='checkpoint' needs the native solver: method='dopri5', options "
                f"{sorted(_NATIVE_OPTIONS)} at most; got method={self.method!r}, "
                f"options={options}."
            )

    def _check_step_size(self, options: dict) -> None:
        if "step_size" not in options:
            return
        step = options["step_size"]
        ok = isinstance(step, (int, float)) and not isinstance(step, bool)
        if not ok or not math.isfinite(step) or step <= 0:
            raise ValueError(f"options['step_size'] must be a positive number; got {step!r}.")
        if self.method in FIXED_STEP_METHODS and self.max_nfe is None and step < _UNBOUNDED_STEP:
            raise ValueError(
                f"options['step_size']={step:g} takes {1 / step:.0f} steps per unit of model "
                f"time with no bound on the work (max_nfe=None); set max_nfe, or use a step of "
                f"at least {_UNBOUNDED_STEP:g}."
            )

    @property
    def _native_ok(self) -> bool:
        return (
            self.method in _NATIVE_METHODS
            and self.adjoint is not True
            and set(self.options or {}) <= _NATIVE_OPTIONS
        )

    @property
    def resolved_backend(self) -> str:
        """``"native"`` or ``"torchdiffeq"``: the backend that ``backend="auto"`` stands for."""
        if self.backend != "auto":
            return self.backend
        return "native" if self._native_ok else "torchdiffeq"

    def __reduce__(self):  # the read-only options mapping does not pickle; a dict does
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return (_settings_from, (values | {"options": dict(self.options)},))

    def replace(self, **changes) -> SolverSettings:
        """A validated copy with ``changes`` applied (field names as keywords)."""
        return dataclasses.replace(self, **changes)


def _settings_from(values: dict) -> SolverSettings:
    return SolverSettings(**values)


_SETTINGS_CONSTRAINTS = (
    choice("method", SOLVER_METHODS),
    real("rtol", low=0, low_open=True),
    real("atol", low=0, low_open=True),
    choice("adjoint", _GRADIENTS),
    integer("max_nfe", low=1, none=True),
    choice("backend", BACKENDS),
)


class ODESolver(nn.Module):
    """Solve ``dy/dt = func(t, y)`` at given times, with function-evaluation counts.

    Parameters
    ----------
    func : nn.Module
        Vector field called as ``func(t, y)`` with ``t`` a scalar tensor and ``y`` of shape
        (..., state) returning the same shape.
    settings : SolverSettings, optional
        Method, tolerances, options, gradient mode, NFE cap and backend; default
        ``SolverSettings()``.
    **changes
        Fields of :class:`SolverSettings` to change (``method=``, ``rtol=``, ...), a
        shorthand for ``settings.replace(**changes)``.

    Attributes
    ----------
    settings : SolverSettings
    backend : {"native", "torchdiffeq"}
        The backend in use.
    nfe : dict
        ``{"forward": int, "backward": int}`` evaluations since the last :meth:`reset_nfe`.

    Notes
    -----
    Solves ignore an enclosing ``torch.autocast``: the state is cast to float32 and the
    dynamics, the Runge–Kutta combinations and the error control run in float32, since
    half-precision rounding (bfloat16 keeps about 3 significant digits) is far above the
    usual tolerances and would drive adaptive steps to zero.
    """

    def __init__(self, func: nn.Module, settings: SolverSettings | None = None, **changes):
        super().__init__()
        settings = SolverSettings() if settings is None else settings
        if not isinstance(settings, SolverSettings):
            raise TypeError(f"settings must be a SolverSettings; got {type(settings).__name__}.")
        self.settings = settings.replace(**changes) if changes else settings
        self.counted = _Counted(func, self.settings.max_nfe)
        self.counted.describe = self._advice

    @property
    def backend(self) -> str:
        """``"native"`` or ``"torchdiffeq"``: the backend in use."""
        return self.settings.resolved_backend

    @property
    def method(self) -> str:
        return self.settings.method

    @property
    def rtol(self) -> float:
        return self.settings.rtol

    @property
    def atol(self) -> float:
        return self.settings.atol

    @property
    def options(self) -> Mapping:
        return self.settings.options

    @property
    def adjoint(self) -> bool | str:
        return self.settings.adjoint

    @property
    def func(self) -> nn.Module:
        """The wrapped vector field."""
        return self.counted.func

    @property
    def nfe(self) -> dict:
        return self.counted.nfe

    def reset_nfe(self) -> None:
        """Set both evaluation counters to zero."""
        self.counted.nfe = {"forward": 0, "backward": 0}

    def forward(
        self, y0: torch.Tensor, t: torch.Tensor, *, error_channels: int | None = None
    ) -> torch.Tensor:
        """Solve from ``t[0]`` and return the state at every time in ``t``.

        Parameters
        ----------
        y0 : Tensor of shape (..., state)
            Initial state at ``t[0]``.
        t : Tensor of shape (time,)
            Strictly increasing output times.
        error_channels : int, optional
            Native backend: only the first this many entries of the state's last dimension
            enter the step-size control (e.g. leave out integrated penalties that need no
            accuracy); all by default.

        Returns
        -------
        Tensor of shape (time, ..., state)
        """
        if torch.is_autocast_enabled(y0.device.type):  # solves stay float32 (see Notes)
            with torch.autocast(y0.device.type, enabled=False):
                return self.forward(y0.float(), t, error_channels=error_channels)
        kwargs = dict(
            rtol=self.rtol, atol=self.atol, method=self.method, options=dict(self.options)
        )
        self.counted.phase = "forward"
        self.counted.solve_nfe = {"forward": 0, "backward": 0}
        try:
            if self.backend == "native":
                ys = _rk.dopri5(
                    self.counted,
                    y0,
                    t,
                    rtol=self.rtol,
                    atol=self.atol,
                    gradient="checkpoint" if self.adjoint == "checkpoint" else "backprop",
                    params=[p for p in self.func.parameters() if p.requires_grad],
                    max_steps=int(self.options.get("max_num_steps", 2**31 - 1)),
                    error_channels=error_channels,
                )
            elif self.adjoint:
                adjoint_params = tuple(p for p in self.func.parameters() if p.requires_grad)
                ys = odeint_adjoint(self.counted, y0, t, adjoint_params=adjoint_params, **kwargs)
            else:
                ys = odeint(self.counted, y0, t, **kwargs)
        except _TooManyEvaluations:
            raise
        except (AssertionError, _rk.StepLimitError, FloatingPointError) as err:
            raise SolverError(self._advice(str(err)), reason=str(err)) from err
        finally:
            self.counted.phase = "backward"
        if not _all_finite(ys):
            what = "the solution contains NaN or inf (the dynamics diverged)"
            raise SolverError(self._advice(what), reason=what)
        return ys

    def _advice(self, what: str) -> str:
        return (
            f"ODE solver {self.method!r} failed: {what}. The dynamics may be stiff or "
            "exploding: try looser tolerances (rtol, atol), a cap such as "
            "options={'max_num_steps': 1000}, a fixed-step method such as method='rk4' with "
            "options={'step_size': ...}, or a smaller learning rate."
        )

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, "
            f"options={dict(self.options)}, adjoint={self.adjoint!r}, "
            f"max_nfe={self.settings.max_nfe}, "
            f"backend={self.backend!r}"
        )
