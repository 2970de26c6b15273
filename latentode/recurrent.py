"""Recurrent networks over irregular series: recognition networks and ODE-RNN forecasters.

The recognition networks (:class:`GRUEncoder`, :class:`RNNEncoder`, :class:`ODERNNEncoder`)
read a batch backwards in time and give ``q(z0 | x)``; the forecasters (:class:`GapRNN`,
:class:`ODERNN`) read it forwards and are the networks of the non-latent baselines. All take
the batch layout of :class:`latentode.datasets.Batch`: ``values (batch, time, features)`` with
a boolean ``mask`` of the same shape on a shared, increasing time grid ``times (time,)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._rk import euler, rk4
from .nn import mlp

__all__ = [
    "GRUEncoder",
    "GapRNN",
    "ODERNN",
    "ODERNNEncoder",
    "RNNEncoder",
    "observed_sequences",
]


def observed_sequences(
    values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, *, reverse: bool
):
    """Gather each series' observed time steps into a left-aligned padded sequence.

    Parameters
    ----------
    values, mask : Tensor of shape (batch, time, features)
    times : Tensor of shape (time,)
    reverse : bool
        If True, each sequence runs from the series' last observation back to its first.

    Returns
    -------
    x : Tensor of shape (batch, steps, features)
        Values at the gathered steps, 0 where a feature is not observed (whatever ``values``
        holds there).
    m : Tensor of shape (batch, steps, features)
        Mask at the gathered steps, as float.
    t : Tensor of shape (batch, steps)
        Times of the gathered steps.
    lengths : LongTensor of shape (batch,)
        Number of observed steps per series (the rest is padding).
    """
    observed = mask.any(-1)
    n_time = observed.shape[1]
    steps = torch.arange(n_time, device=values.device)
    rank = -steps if reverse else steps
    key = torch.where(observed, rank, rank.new_full((), 2 * n_time) + steps)
    lengths = observed.sum(1)
    order = torch.argsort(key, dim=1)[:, : int(lengths.max())]
    idx = order.unsqueeze(-1).expand(-1, -1, values.shape[-1])
    m = mask.gather(1, idx)
    x = torch.where(m, values.gather(1, idx), values.new_zeros(()))
    return x, m.to(values.dtype), times[order], lengths


def _with_context(parts: list, context) -> torch.Tensor:
    """The head's input: ``parts`` and, when given, the per-series ``context``."""
    return torch.cat(parts if context is None else [*parts, context], dim=-1)


class _BackwardRecurrentEncoder(nn.Module):
    """Shared body of the recurrent encoders: a recurrent layer run backwards in time.

    Subclasses set ``self.out`` and implement ``_run(inputs, lengths) -> h``: the state after
    each series' last step, from a batch-first ``(batch, steps, 2 * features + 1)`` input whose
    series ``b`` has ``lengths[b]`` steps followed by padding.
    """

    def _run(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, context=None):
        """Encode a batch.

        Parameters
        ----------
        values, mask : Tensor of shape (batch, time, features)
        times : Tensor of shape (time,)
            Grid in the model's time units; the time origin is 0.
        context : Tensor of shape (batch, n_context), optional
            Per-series inputs the head reads beside the final state (static covariates);
            required when the encoder was built with ``n_context > 0``.

        Returns
        -------
        loc, scale : Tensor of shape (batch, latent)
        """
        x, m, t, lengths = observed_sequences(values, mask, times, reverse=True)
        gaps = torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1] - t[:, 1:]], dim=1)
        inputs = torch.cat([x, m, gaps.unsqueeze(-1)], dim=-1)
        h = self._run(inputs, lengths)
        t_first = t.gather(1, (lengths - 1).unsqueeze(1))
        loc, raw = self.out(_with_context([h, t_first], context)).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4


class GRUEncoder(_BackwardRecurrentEncoder):
    """Recognition network: a GRU run backwards in time over the observed points.

    Each step reads ``(values, mask, time gap)``; the final state, with the gap from the first
    observation back to the time origin, gives ``q(z0 | x) = Normal(loc, scale)``.

    Parameters
    ----------
    n_features : int
        Number of observed features.
    latent_dim : int
        Size of ``z0``.
    hidden_dim : int, default 25
        GRU width.
    n_context : int, default 0
        Width of the per-series ``context`` the head reads beside the final state.
    """

    def __init__(self, n_features: int, latent_dim: int, hidden_dim: int = 25, *, n_context=0):
        super().__init__()
        self.gru = nn.GRU(2 * n_features + 1, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim + 1 + n_context, 2 * latent_dim)

    def _run(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # the padded run (sequences are left-aligned, so padding comes after each series' last
        # step) read at each series' length equals the packed run's final state, and its
        # backward is several times faster on the CPU than the packed one
        out = self.gru(inputs)[0]
        return out[torch.arange(out.shape[0], device=out.device), lengths - 1]


class RNNEncoder(_BackwardRecurrentEncoder):
    """Recognition network: a plain ``tanh`` RNN run backwards in time over the observed points.

    The recognition network of Chen et al. (2018, section 5.1), ``h <- tanh(W x + U h + b)``,
    fed like :class:`GRUEncoder` with ``(values, mask, time gap)`` at each observed step; the
    final state, with the gap back to the time origin, gives ``q(z0 | x) = Normal(loc, scale)``.
    A third of the GRU's parameters at the same width and a fraction of its cost on the CPU
    (measured on the documentation's benchmarks page), for series whose dependencies are short
    enough not to need gating. The loop is written out step by step (two fused multiply-adds
    and a sigmoid, ``tanh`` rewritten through it) and keeps only the running state, which on
    the CPU beats ``nn.RNN``, whose stacked per-step outputs and input projection over all
    steps at once dominate at these sizes.

    Parameters
    ----------
    n_features : int
        Number of observed features.
    latent_dim : int
        Size of ``z0``.
    hidden_dim : int, default 25
        RNN width.
    n_context : int, default 0
        Width of the per-series ``context`` the head reads beside the final state.
    """

    def __init__(self, n_features: int, latent_dim: int, hidden_dim: int = 25, *, n_context=0):
        super().__init__()
        self.input = nn.Linear(2 * n_features + 1, hidden_dim)
        self.recurrent = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.out = nn.Linear(hidden_dim + 1 + n_context, 2 * latent_dim)

    def _run(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # h = tanh(a) = 2 sigmoid(2a) - 1, and the CPU's sigmoid is several times cheaper than
        # its tanh; so the loop carries s = (h + 1) / 2 with the weights rewritten to match:
        # 2a = 2b + x (2 W) + (2s - 1)(2 U) = [2b - 2 sum_rows(U)] + x (2 W) + s (4 U)
        w_in, w_rec = 2 * self.input.weight.t(), 2 * self.recurrent.weight.t()
        bias = 2 * self.input.bias - w_rec.sum(0)
        w_rec = 2 * w_rec
        s = inputs.new_full((inputs.shape[0], w_rec.shape[0]), 0.5)  # h = 0
        # a series' state stops at its last step; with equal lengths nothing needs holding
        ragged = bool((lengths != lengths[0]).any())
        for i in range(inputs.shape[1]):
            step = torch.sigmoid(torch.addmm(torch.addmm(bias, inputs[:, i], w_in), s, w_rec))
            s = torch.where((i < lengths)[:, None], step, s) if ragged else step
        return 2 * s - 1


def _n_steps(span: float, max_step: float) -> int:
    # a span that is a whole number of steps up to float32 rounding takes that number
    return max(1, math.ceil(span / max_step * (1 - 1e-6)))


class ODERNNEncoder(nn.Module):
    """Recognition network of Rubanova et al. (2019): an ODE-RNN run backwards in time.

    Going from a series' last observation back to the time origin, its hidden state follows
    ``dh/dt = g(h)`` between its own observation times (fixed-step RK4, steps no longer than
    ``max_step``) and, at each observation time, takes a GRU update from ``(values, mask)``
    of that time — per feature, so partly observed times are fine. Each series walks only its
    own observation times (gathered by :func:`observed_sequences`) in the steps its own spans
    need (:meth:`schedule`), so the cost grows with the busiest series of the batch, not with
    the union of the batch's times, and a series encodes the same in any batch; the loop is
    vectorised over the batch on one clock. The GRU's input gates for all reads are computed
    in one product before the loop, so each step of the loop costs the state's own products
    only.

    Parameters
    ----------
    n_features : int
    latent_dim : int
        Size of ``z0``.
    hidden_dim : int, default 25
        Width of the hidden state.
    ode_hidden_dim : int, optional
        Width of the hidden-state dynamics MLP (default ``hidden_dim``).
    method : {"rk4", "euler"}, default "rk4"
        Fixed-step scheme between observations: classical Runge–Kutta (four evaluations of
        ``g`` per step), or Euler (one), as in Rubanova et al.'s code — the encoder's ODE is
        a learned part of the network, not a quantity to integrate accurately, and Euler
        costs about two thirds as much per epoch at an equal fit (benchmarks page).
    max_step : float, optional
        Longest step, in model time units (the estimators scale time to [0, 1]); default
        0.05 with RK4 and 0.02 — a fiftieth of the time span, Rubanova et al.'s step — with
        Euler.
    n_context : int, default 0
        Width of the per-series ``context`` the head reads beside the final state.
    """

    #: Default longest step per method (model time units).
    MAX_STEP = {"rk4": 0.05, "euler": 0.02}

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        hidden_dim: int = 25,
        *,
        ode_hidden_dim: int | None = None,
        method: str = "rk4",
        max_step: float | None = None,
        n_context: int = 0,
    ):
        super().__init__()
        self.dynamics = mlp(
            hidden_dim, ode_hidden_dim or hidden_dim, hidden_dim, n_layers=2, activation=nn.Tanh
        )
        self.cell = nn.GRUCell(2 * n_features, hidden_dim)
        self.out = nn.Linear(hidden_dim + n_context, 2 * latent_dim)
        self.hidden_dim = hidden_dim
        if method not in self.MAX_STEP:
            raise ValueError(f"method must be one of {sorted(self.MAX_STEP)}; got {method!r}.")
        self.method = method
        self.max_step = float(self.MAX_STEP[method] if max_step is None else max_step)

    def _step(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """One step of the hidden-state dynamics, each row its own ``dt (batch, 1)``; a row
        with ``dt = 0`` keeps its state exactly."""
        if self.method == "euler":
            return euler(self.dynamics, h, dt, 1)
        return rk4(self.dynamics, h, dt, 1)

    def schedule(self, t: torch.Tensor, lengths: torch.Tensor):
        """Each series' walk as a sequence of steps on one clock shared by the batch.

        A series reads its observations from the last to the first; before each read (but
        the first) it walks the span from the previous one in ``ceil(span / max_step)``
        equal steps, and after the last read walks back to the time origin the same way.
        Step ``s`` of the shared clock is step ``s`` of every series' own sequence, so a
        series takes as many steps as its own spans need, whatever the other series of the
        batch need, and the loop runs as many steps as the busiest series.

        Parameters
        ----------
        t : Tensor of shape (batch, steps)
            Observation times in reading order, as :func:`observed_sequences` gives them
            with ``reverse=True``.
        lengths : LongTensor of shape (batch,)

        Returns
        -------
        dt : Tensor of shape (batch, clock)
            Signed step length of each series at clock steps 1 … ``clock`` (0 once its walk
            is over).
        reads : LongTensor of shape (batch, clock + 1)
            The observation each series reads after clock step ``s`` (0: before any step),
            -1 where it reads none.
        """
        n_batch, n_obs = t.shape
        position = torch.arange(n_obs, device=t.device)
        active = position < lengths[:, None]
        t_first = t.gather(1, (lengths - 1)[:, None])  # each series' first observation time
        # segment j < n_obs: the walk before reading observation j (nothing before the first
        # read); segment n_obs: from the first observation back to the origin
        spans = torch.cat([t.new_zeros(n_batch, 1), t[:, 1:] - t[:, :-1]], dim=1)
        spans = torch.cat([torch.where(active, spans, 0.0), -t_first], dim=1)
        # a span that is a whole number of steps up to float32 rounding takes that number
        steps = torch.ceil(spans.abs() / self.max_step * (1 - 1e-6)).long()
        ends = steps.cumsum(1)  # clock step at which each segment's walk ends
        clock = int(ends[:, -1].max())
        ticks = torch.arange(1, clock + 1, device=t.device).expand(n_batch, clock)
        segment = torch.searchsorted(ends, ticks.contiguous()).clamp(max=n_obs)
        dt = spans.gather(1, segment) / steps.gather(1, segment).clamp(min=1)
        dt = torch.where(ticks <= ends[:, -1:], dt, 0.0)
        # observation j is read right after its walk ends; padding reads go to a spare column
        at = torch.where(active, ends[:, :n_obs], clock + 1)
        reads = torch.full((n_batch, clock + 2), -1, dtype=torch.long, device=t.device)
        reads.scatter_(1, at, position.expand(n_batch, n_obs))
        return dt, reads[:, : clock + 1]

    def reads(self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor):
        """The batch laid out on the clock of :meth:`schedule`: steps, inputs and reads.

        Parameters
        ----------
        values, mask : Tensor of shape (batch, time, features)
        times : Tensor of shape (time,)

        Returns
        -------
        dt : Tensor of shape (batch, clock)
            As :meth:`schedule` gives it.
        inputs : Tensor of shape (batch, clock + 1, 2 * features)
            ``(values, mask)`` each series reads after each clock step (where it reads
            nothing, a placeholder that the encoder never uses).
        reading : BoolTensor of shape (batch, clock + 1)
            Where a series reads.
        """
        x, m, t, lengths = observed_sequences(values, mask, times, reverse=True)
        dt, reads = self.schedule(t, lengths)
        inputs = torch.cat([x, m], dim=-1)
        inputs = inputs.gather(1, reads.clamp(min=0)[..., None].expand(-1, -1, inputs.shape[-1]))
        return dt, inputs, reads >= 0

    def forward(self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, context=None):
        """Encode a batch.

        Parameters
        ----------
        values, mask : Tensor of shape (batch, time, features)
        times : Tensor of shape (time,)
            Increasing grid in the model's time units; the time origin is 0.
        context : Tensor of shape (batch, n_context), optional
            Per-series inputs the head reads beside the final state (static covariates).

        Returns
        -------
        loc, scale : Tensor of shape (batch, latent)
        """
        dt, inputs, reading = self.reads(values, mask, times)
        # each clock step's gates as a view: unbind has one backward node for all steps (a
        # slice per step would write a zero tensor of the whole size in its backward)
        gates = [part.unbind(1) for part in self._input_gates(inputs, reading)]
        anyone = reading.any(0).tolist()  # clock steps at which some series reads: one sync
        h = values.new_zeros(values.shape[0], self.hidden_dim)
        for s in range(reading.shape[1]):
            if s > 0:
                h = self._step(h, dt[:, s - 1, None])
            if anyone[s]:
                h = self._update(gates[0][s], gates[1][s], h)
        loc, raw = self.out(_with_context([h], context)).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4

    #: Added to the update gate's pre-activation of a series that reads nothing at a step:
    #: the gate is then exactly 1 in floating point, so the state carries over unchanged and
    #: no gradient flows through the unused update.
    _HOLD = 1e4

    def _input_gates(self, inputs: torch.Tensor, reading: torch.Tensor):
        """The input half of :attr:`cell`'s gates for every read of the batch at once.

        Parameters
        ----------
        inputs : Tensor of shape (batch, clock + 1, 2 * features)
        reading : BoolTensor of shape (batch, clock + 1)

        Returns
        -------
        reset_update : Tensor of shape (batch, clock + 1, 2 * hidden)
            ``W_ih x + b_ih`` of the reset and update gates, the update gate pinned at 1
            (keep the state) where a series reads nothing.
        new : Tensor of shape (batch, clock + 1, hidden)
            ``W_ih x + b_ih`` of the candidate state.
        """
        n = self.hidden_dim
        gates = F.linear(inputs, self.cell.weight_ih, self.cell.bias_ih)
        hold = torch.zeros(2, n, dtype=gates.dtype, device=gates.device)
        hold[1] = self._HOLD
        held = (~reading)[..., None].to(gates.dtype) * hold.flatten()
        reset_update, new = gates.split([2 * n, n], dim=-1)
        return reset_update + held, new

    def _update(
        self, reset_update: torch.Tensor, new: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        """:attr:`cell`'s update (``torch.nn.GRUCell``'s equations and parameters) from the
        input gates :meth:`_input_gates` gives at one step, ``(batch, 2 * hidden)`` and
        ``(batch, hidden)``; state ``h (batch, hidden)``."""
        n = self.hidden_dim
        hidden_ru, hidden_new = F.linear(h, self.cell.weight_hh, self.cell.bias_hh).split(
            [2 * n, n], dim=1
        )
        h = h.to(hidden_new.dtype)  # under bf16 autocast the update is bf16, as GRUCell's is
        reset, update = torch.sigmoid(reset_update + hidden_ru).chunk(2, dim=1)
        new = torch.tanh(torch.addcmul(new, reset, hidden_new))
        return torch.lerp(new, h, update)  # (1 - update) * new + update * h


class GapRNN(nn.Module):
    """The RNN baseline of Chen et al. (2018), Table 2: a GRU fed observations and time gaps.

    Each step reads ``(values, mask, gap since the previous observation)``; a head maps the
    state and the gap to the next observation time to the next observation's values.

    Parameters
    ----------
    n_features : int
    hidden_dim : int, default 25
    gap_scale : float, default 1.0
        Typical gap between observations; gaps enter the network divided by it, so that the
        network sees inputs of order one whatever the time unit.
    """

    def __init__(self, n_features: int, hidden_dim: int = 25, *, gap_scale: float = 1.0):
        super().__init__()
        self.gru = nn.GRU(2 * n_features + 1, hidden_dim, batch_first=True)
        self.head = mlp(hidden_dim + 1, hidden_dim, n_features, n_layers=2, activation=nn.Tanh)
        self.register_buffer("gap_scale", torch.tensor(float(gap_scale)))

    def step_inputs(self, x, m, gaps):
        """Concatenate values (..., features), mask (..., features), scaled gaps (...)."""
        return torch.cat([x, m, (gaps / self.gap_scale).unsqueeze(-1)], dim=-1)

    def _head(self, h, gaps):
        return self.head(torch.cat([h, (gaps / self.gap_scale).unsqueeze(-1)], dim=-1))

    def forward(self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor):
        """One-step-ahead predictions along each series.

        Returns
        -------
        pred : Tensor of shape (batch, steps - 1, features)
            Prediction of observed step ``i + 1`` from steps ``0..i``.
        target, target_mask : Tensor of shape (batch, steps - 1, features)
        h_last : Tensor of shape (batch, hidden)
            State after each series' last observation.
        t_last : Tensor of shape (batch,)
            Time of each series' last observation.
        """
        x, m, t, lengths = observed_sequences(values, mask, times, reverse=False)
        gaps = torch.cat([torch.zeros_like(t[:, :1]), t[:, 1:] - t[:, :-1]], dim=1)
        # padded run: outputs past a series' end are never read (masked below)
        out, _ = self.gru(self.step_inputs(x, m, gaps))
        h_last = out[torch.arange(out.shape[0], device=out.device), lengths - 1]
        pred = self._head(out[:, :-1], gaps[:, 1:])
        valid = torch.arange(x.shape[1] - 1, device=x.device) < (lengths - 1).unsqueeze(1)
        target_mask = m[:, 1:] * valid.unsqueeze(-1)
        t_last = t.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        return pred, x[:, 1:], target_mask, h_last, t_last

    def rollout(self, h: torch.Tensor, t_last: torch.Tensor, query: torch.Tensor):
        """Feed predictions back in to extrapolate.

        Parameters
        ----------
        h : Tensor of shape (batch, hidden)
        t_last : Tensor of shape (batch,)
        query : Tensor of shape (n_query,)
            Increasing times after every series' last observation.

        Returns
        -------
        Tensor of shape (batch, n_query, features)
        """
        preds = []
        t_prev = t_last
        state = h.unsqueeze(0)
        for tq in query:
            gap = tq - t_prev
            pred = self._head(state[0], gap)
            preds.append(pred)
            step = self.step_inputs(pred, torch.ones_like(pred), gap).unsqueeze(1)
            _, state = self.gru(step, state)
            t_prev = tq.expand_as(t_last)
        return torch.stack(preds, dim=1)


class ODERNN(nn.Module):
    """ODE-RNN forecaster (Rubanova et al. 2019) run forwards in time, non-latent.

    From each series' first observation on, the hidden state follows ``dh/dt = g(h)``
    between the batch's grid times (RK4, steps no longer than ``max_step``) and takes a GRU
    update at the series' observations; a head reads the state just before each time as the
    prediction there. Past the last observation the state keeps following the ODE, so
    forecasts at any later time need no feedback of predictions. Same interface as
    :class:`GapRNN`.

    Parameters
    ----------
    n_features : int
    hidden_dim : int, default 25
    max_step : float, default 0.05
        Longest RK4 step, in model time units.
    """

    def __init__(self, n_features: int, hidden_dim: int = 25, *, max_step: float = 0.05):
        super().__init__()
        self.dynamics = mlp(hidden_dim, hidden_dim, hidden_dim, n_layers=2, activation=nn.Tanh)
        self.cell = nn.GRUCell(2 * n_features, hidden_dim)
        self.head = mlp(hidden_dim, hidden_dim, n_features, n_layers=2)
        self.hidden_dim = hidden_dim
        self.max_step = float(max_step)

    def forward(self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor):
        """Predictions just before every grid time, from the observations before it.

        Returns
        -------
        pred, target, target_mask : Tensor of shape (batch, time, features)
            ``target_mask`` excludes each series' first observation (nothing precedes it).
        h_last : Tensor of shape (batch, hidden)
            State at the last grid time.
        t_last : Tensor of shape (batch,)
            The last grid time (the same for every series).
        """
        before, after, scored = self.states(values, mask, times)
        pred = self.head(before)
        target_mask = mask & scored[..., None]
        t_last = times[-1].expand(values.shape[0])
        return pred, values, target_mask.to(values.dtype), after[:, -1], t_last

    def states(self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor):
        """Hidden states just before and just after the update at every grid time.

        Parameters
        ----------
        values, mask : Tensor of shape (batch, time, features)
        times : Tensor of shape (time,)

        Returns
        -------
        before, after : Tensor of shape (batch, time, hidden)
            ``after`` has read the observations at that time, ``before`` only earlier ones.
        started : BoolTensor of shape (batch, time)
            Whether the series had an observation before that time.
        """
        observed = mask.any(-1)
        spans = (times[1:] - times[:-1]).tolist()
        inputs = torch.cat([values * mask, mask.to(values.dtype)], dim=-1)
        h = values.new_zeros(values.shape[0], self.hidden_dim)
        started = torch.zeros_like(observed[:, 0])
        before, after, scored = [], [], []
        for i in range(times.shape[0]):
            if i > 0:
                evolved = rk4(self.dynamics, h, spans[i - 1], _n_steps(spans[i - 1], self.max_step))
                h = torch.where(started[:, None], evolved, h)
            before.append(h)
            scored.append(started)
            h = torch.where(observed[:, i, None], self.cell(inputs[:, i], h), h)
            after.append(h)
            started = started | observed[:, i]
        return torch.stack(before, 1), torch.stack(after, 1), torch.stack(scored, 1)

    def rollout(self, h: torch.Tensor, t_last: torch.Tensor, query: torch.Tensor):
        """Follow the hidden ODE from ``t_last`` to each query time.

        Parameters
        ----------
        h : Tensor of shape (batch, hidden)
        t_last : Tensor of shape (batch,)
            All equal (the end of the batch's grid).
        query : Tensor of shape (n_query,)
            Increasing times after ``t_last``.

        Returns
        -------
        Tensor of shape (batch, n_query, features)
        """
        edges = torch.cat([t_last[:1], query]).tolist()
        preds = []
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            h = rk4(self.dynamics, h, b - a, _n_steps(b - a, self.max_step))
            preds.append(self.head(h))
        return torch.stack(preds, dim=1)
