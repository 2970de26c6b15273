"""A lean Dormand–Prince 5(4) solver with dense output and checkpointed gradients.

The native backend of :class:`latentode.solvers.ODESolver`. The models here are small MLPs on
batches of series: a solve costs more in per-call overhead than in arithmetic, so the loop
keeps Python and tensor allocations to what one step needs. Output times do not stop the
integrator: outputs are read off each accepted step by the method's continuous extension.

Gradients, two ways:

- ``"backprop"``: autograd records the solve (step-size control detached), as torchdiffeq's
  ``odeint`` does;
- ``"checkpoint"``: the forward solve runs without recording; the accepted steps' start
  states are kept (one state per step, not the stages' activations), and the backward pass
  walks the steps in reverse, recomputing one step at a time under autograd and pulling the
  output gradients and the carried state gradient back through it. The gradient is that of
  the discrete forward solve (as with ``"backprop"``), the memory is one state per step, and
  the backward cost is one re-evaluation of each step — no backward solve restarting at every
  output time, unlike the continuous adjoint.

Also here: :func:`rk4`, the classic fixed-step fourth-order method for autonomous fields,
which the ODE-RNN networks step between observations.

Coefficients: J. R. Dormand and P. J. Prince, A family of embedded Runge–Kutta formulae,
J. Comp. Appl. Math. 6 (1980); the continuous extension of E. Hairer, S. P. Nørsett and
G. Wanner, Solving Ordinary Differential Equations I (2nd ed., 1993), section II.6.
"""

from __future__ import annotations

import math

import torch

_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# error estimate: 5th-order minus embedded 4th-order weights (stage 7 is the FSAL stage)
_E = (
    35 / 384 - 5179 / 57600,
    0.0,
    500 / 1113 - 7571 / 16695,
    125 / 192 - 393 / 640,
    -2187 / 6784 + 92097 / 339200,
    11 / 84 - 187 / 2100,
    -1 / 40,
)
# continuous extension (Hairer, Nørsett, Wanner; the "d" coefficients of DOPRI5's dense output)
_D = (
    -12715105075 / 11282082432,
    0.0,
    87487479700 / 32700410799,
    -10690763975 / 1880347072,
    701980252875 / 199316789632,
    -1453857185 / 822651844,
    69997945 / 29380423,
)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


class StepLimitError(RuntimeError):
    """The solve needed more than ``max_steps`` accepted or rejected steps."""


def _combine(y, h, coeffs, ks):
    """``y + h * sum(c * k)`` over the non-zero coefficients."""
    acc = None
    for c, k in zip(coeffs, ks, strict=False):
        if c != 0.0:
            acc = k * c if acc is None else acc.add(k, alpha=c)
    return y if acc is None else y.add(acc, alpha=h)


def _stages(func, t, y, h, k1):
    """The seven stages of one step from ``(t, y)`` with ``k1 = f(t, y)``; returns (y1, ks)."""
    ks = [k1]
    for i in range(1, 7):
        yi = _combine(y, h, _A[i], ks)
        ks.append(func(t + _C[i] * h, yi))
    return yi, ks  # the last stage sits at the 5th-order solution (first same as last)


def _dense(y0, y1, h, ks, thetas: list[float]):
    """The continuous extension at ``t0 + theta * h`` for every theta in ``thetas``.

    Returns a tensor of shape (len(thetas), *y0.shape); the step's coefficients are formed
    once, and all outputs of the step in one broadcast.
    """
    if thetas == [1.0]:
        return y1.unsqueeze(0)
    ydiff = y1 - y0
    bspl = ks[0] * h - ydiff
    r4 = ydiff - ks[6] * h - bspl
    r5 = _combine(torch.zeros_like(y0), h, _D, ks)
    th = torch.tensor(thetas, dtype=y0.dtype, device=y0.device).view(-1, *([1] * y0.ndim))
    one = 1 - th
    return y0 + (ydiff + (bspl + (r4 + r5 * one) * th) * one) * th


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def _initial_step(func, t0, y0, f0, rtol, atol) -> float:
    """Hairer's starting step size for order 5 (one extra evaluation)."""
    scale = atol + rtol * y0.abs()
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    if not (math.isfinite(d0) and math.isfinite(d1)):
        raise FloatingPointError("the initial state or its derivative is NaN or inf")
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    if not h0 > 0:  # underflow: a derivative beyond the state by more than float range
        raise FloatingPointError("the derivative is too large for the state (no step fits)")
    f1 = func(t0 + h0, y0 + h0 * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    if not math.isfinite(d2):
        raise FloatingPointError("the derivative became NaN or inf")
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1)


def _solve(func, y0, times: list[float], rtol, atol, max_steps, record: bool, n_error=None):
    """Integrate forward in time; outputs at ``times`` (increasing, ``times[0]`` the start).

    Returns the outputs (a list of tensors of shape (m, *y0.shape), to be concatenated), per
    output its ``(step index, theta)`` (step -1: the initial state) and, with ``record``, the
    accepted steps as ``(t, h, y)``.
    """
    t, t_end = times[0], times[-1]
    y = y0
    f = func(t, y)
    with torch.no_grad():
        h = _initial_step(func, t, y.detach(), f.detach(), rtol, atol)
    outputs, where, steps = [y0.unsqueeze(0)], [(-1, 0.0)], []
    nxt = 1
    n_tries = 0
    while nxt < len(times):
        n_tries += 1
        if n_tries > max_steps:
            raise StepLimitError(f"more than max_num_steps={max_steps} steps")
        h = min(h, t_end - t)
        y1, ks = _stages(func, t, y, h, f)
        err_vec = _combine(torch.zeros_like(y), h, _E, ks).detach()[..., :n_error]
        scale = atol + rtol * torch.maximum(y.detach().abs(), y1.detach().abs())[..., :n_error]
        err = _rms(err_vec / scale)
        if not math.isfinite(err):
            raise FloatingPointError("the solution became NaN or inf")
        if err <= 1.0:
            t1 = t + h
            thetas = []
            while nxt < len(times) and times[nxt] <= t1 + 1e-12 * max(1.0, abs(t1)):
                thetas.append(1.0 if times[nxt] >= t1 else (times[nxt] - t) / h)
                where.append((len(steps), thetas[-1]))
                nxt += 1
            if thetas:
                outputs.append(_dense(y, y1, h, ks, thetas))
            if record:
                steps.append((t, h, y))
            t, y, f = t1, y1, ks[6]
        factor = _MAX_FACTOR if err == 0 else _SAFETY * err ** (-1 / 5)
        h = h * min(_MAX_FACTOR, max(_MIN_FACTOR, factor))
        if h < 1e-12 * max(1.0, abs(t)):
            raise StepLimitError(f"step size underflow at t={t:.6g}")
    return outputs, where, steps


class _Checkpointed(torch.autograd.Function):
    """Solve without recording; in backward, recompute and pull back one step at a time."""

    @staticmethod
    def forward(ctx, func, times, rtol, atol, max_steps, n_error, y0, *params):
        with torch.no_grad():
            outputs, where, steps = _solve(
                func, y0, times, rtol, atol, max_steps, record=True, n_error=n_error
            )
        ctx.func, ctx.where = func, where
        ctx.steps = [(t, h) for t, h, _ in steps]
        # the start state of every accepted step: all the memory this mode keeps
        starts = torch.stack([y for _, _, y in steps]) if steps else y0.new_zeros((0,) + y0.shape)
        ctx.save_for_backward(starts, *params)
        return torch.cat(outputs)

    @staticmethod
    def backward(ctx, grad_out):
        func, where, steps = ctx.func, ctx.where, ctx.steps
        starts, *params = ctx.saved_tensors
        by_step: dict[int, list[tuple[int, float]]] = {}
        for i, (k, theta) in enumerate(where):
            by_step.setdefault(k, []).append((i, theta))
        carried = torch.zeros_like(grad_out[0])  # dL/dy at the end of the current step
        param_grads = [torch.zeros_like(p) for p in params]
        for k in range(len(steps) - 1, -1, -1):
            (t, h), y = steps[k], starts[k]
            # the recomputation is float32 like the forward solve, whatever encloses backward
            with torch.enable_grad(), torch.autocast(y.device.type, enabled=False):
                y = y.detach().requires_grad_(True)
                y1, ks = _stages(func, t, y, h, func(t, y))
                outs, grads = [y1], [carried]
                here = by_step.get(k, [])
                if here:
                    outs.append(_dense(y, y1, h, ks, [theta for _, theta in here]))
                    grads.append(grad_out[[i for i, _ in here]])
                got = torch.autograd.grad(outs, (y, *params), grads, allow_unused=True)
            carried = got[0]
            for j, g in enumerate(got[1:]):
                if g is not None:
                    param_grads[j] += g
        for i, _ in by_step.get(-1, []):
            carried = carried + grad_out[i]
        return (None, None, None, None, None, None, carried, *param_grads)


def _direction(func, t: torch.Tensor):
    """Solve in increasing time: for decreasing ``t``, integrate ``-f(-s, y)`` over ``-t``."""
    times = [float(x) for x in t.detach().cpu()]
    if len(times) < 2 or times[-1] >= times[0]:
        return func, times
    return (lambda s, y: -func(-s, y)), [-x for x in times]


def dopri5(
    func,
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    rtol: float,
    atol: float,
    gradient: str = "backprop",
    params=(),
    max_steps: int = 2**31 - 1,
    error_channels: int | None = None,
) -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)`` with Dormand–Prince 5(4) at the times ``t``.

    Parameters
    ----------
    func : callable
        ``func(t, y)`` with ``t`` a 0-dim tensor and ``y`` of shape (..., state).
    y0 : Tensor of shape (..., state)
    t : Tensor of shape (time,)
        Strictly monotonic output times; ``t[0]`` is the start.
    rtol, atol : float
        Error control on the RMS norm over the whole state (one step size for the batch).
    gradient : {"backprop", "checkpoint"}
        How gradients reach ``y0`` and ``params`` (see the module's description).
    params : sequence of Tensor
        Parameters of ``func`` that need gradients (``"checkpoint"`` only).
    max_steps : int
        Cap on attempted steps.
    error_channels : int, optional
        Only the first this many entries of the last dimension enter the error control
        (e.g. leave out integrated penalties that need no accuracy); all by default.

    Returns
    -------
    Tensor of shape (time, ..., state)
    """

    def call(s, y):
        return func(y.new_full((), s), y)

    f, times = _direction(call, t)
    if gradient == "backprop":
        outputs, _, _ = _solve(
            f, y0, times, rtol, atol, max_steps, record=False, n_error=error_channels
        )
        return torch.cat(outputs)
    if gradient == "checkpoint":
        return _Checkpointed.apply(f, times, rtol, atol, max_steps, error_channels, y0, *params)
    raise ValueError(f"gradient must be 'backprop' or 'checkpoint'; got {gradient!r}.")


def rk4(f, h: torch.Tensor, span, n_steps: int) -> torch.Tensor:
    """Integrate the autonomous ``dh/dt = f(h)`` over ``span`` (either sign) with RK4.

    Parameters
    ----------
    f : callable
        Maps (..., state) to (..., state).
    h : Tensor of shape (..., state)
    span : float or Tensor broadcastable to ``h``
        Signed length of the interval; a tensor such as (batch, 1) gives each row its own.
    n_steps : int
        Equal steps.

    Returns
    -------
    Tensor of shape (..., state)
    """
    dt = span / n_steps
    half, sixth = dt / 2, dt / 6
    for _ in range(n_steps):
        k1 = f(h)
        k2 = f(_axpy(h, half, k1))
        k3 = f(_axpy(h, half, k2))
        k4 = f(_axpy(h, dt, k3))
        h = _axpy(h, sixth, torch.add(k1, k2 + k3, alpha=2.0).add_(k4))
    return h


def euler(f, h: torch.Tensor, span, n_steps: int) -> torch.Tensor:
    """:func:`rk4`'s integration (same arguments, shapes and result) with Euler steps: one
    evaluation of ``f`` per step instead of four."""
    dt = span / n_steps
    for _ in range(n_steps):
        h = _axpy(h, dt, f(h))
    return h


def _axpy(h: torch.Tensor, a, k: torch.Tensor) -> torch.Tensor:
    """``h + a * k`` in one operation; ``a`` a number or a tensor broadcastable to ``k``."""
    return torch.addcmul(h, a, k) if isinstance(a, torch.Tensor) else torch.add(h, k, alpha=a)
