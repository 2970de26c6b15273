"""The recurrent networks: recognition networks and the ODE-RNN forecasters."""

import numpy as np
import pytest
import torch

from latentode.datasets import collate, from_arrays
from latentode.recurrent import GapRNN, GRUEncoder, ODERNNEncoder, RNNEncoder, observed_sequences


def batch():
    nan = float("nan")
    return collate(
        from_arrays(
            [
                ([0.0, 0.4, 1.0], [[1.0, nan], [2.0, 3.0], [nan, 4.0]]),
                ([0.2, 0.7], [[5.0, 6.0], [7.0, nan]]),
                ([0.9], [[8.0, 9.0]]),
            ]
        )
    )


def test_observed_sequences_reverse_order():
    b = batch()
    x, m, t, lengths = observed_sequences(b.values, b.mask, b.times, reverse=True)
    assert lengths.tolist() == [3, 2, 1]
    assert torch.allclose(t[0], torch.tensor([1.0, 0.4, 0.0]))
    assert torch.allclose(t[1, :2], torch.tensor([0.7, 0.2]))
    assert x[0, 0].tolist() == [0.0, 4.0] and m[0, 0].tolist() == [0.0, 1.0]
    _, _, t_fwd, _ = observed_sequences(b.values, b.mask, b.times, reverse=False)
    assert torch.allclose(t_fwd[0], torch.tensor([0.0, 0.4, 1.0]))


@pytest.mark.parametrize("kind", [GRUEncoder, RNNEncoder, ODERNNEncoder])
def test_encoder_ignores_masked_values_and_other_series(kind):
    torch.manual_seed(0)
    enc = kind(2, 4, 8)
    b = batch()
    loc, scale = enc(b.values, b.mask, b.times)
    assert loc.shape == (3, 4) and (scale > 0).all()
    # garbage where nothing is observed changes nothing
    noisy = torch.where(b.mask, b.values, torch.full_like(b.values, 1e3))
    loc2, scale2 = enc(noisy, b.mask, b.times)
    assert torch.allclose(loc, loc2) and torch.allclose(scale, scale2)
    # a series encodes the same alone as in a batch (on its own, shorter grid)
    alone = collate(from_arrays([([0.2, 0.7], [[5.0, 6.0], [7.0, float("nan")]])]))
    loc_alone, _ = enc(alone.values, alone.mask, alone.times)
    assert torch.allclose(loc_alone[0], loc[1], atol=1e-6)


def test_rnn_encoder_is_the_tanh_recurrence_read_at_each_series_last_step():
    """The sigmoid-rewritten loop equals h <- tanh(W x + U h + b) stopped at each series' end."""
    torch.manual_seed(0)
    enc = RNNEncoder(2, 3, 6)
    b = batch()  # ragged: 3, 2 and 1 observed steps
    x, m, t, lengths = observed_sequences(b.values, b.mask, b.times, reverse=True)
    gaps = torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1] - t[:, 1:]], dim=1)
    inputs = torch.cat([x, m, gaps.unsqueeze(-1)], dim=-1)
    expected = []
    for row, n in zip(inputs, lengths.tolist(), strict=True):
        h = torch.zeros(6)
        for step in row[:n]:  # the series' own steps only, no padding
            h = torch.tanh(enc.input(step) + enc.recurrent(h))
        expected.append(h)
    expected = torch.stack(expected)
    assert torch.allclose(enc._run(inputs, lengths), expected, atol=1e-6)
    loc, raw = enc.out(torch.cat([expected, t.gather(1, (lengths - 1)[:, None])], -1)).chunk(2, -1)
    got_loc, got_scale = enc(b.values, b.mask, b.times)
    assert torch.allclose(got_loc, loc, atol=1e-6)
    assert torch.allclose(got_scale, torch.nn.functional.softplus(raw) + 1e-4, atol=1e-6)
    # gradients reach every parameter, through the rewritten weights
    (got_loc.sum() + got_scale.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_odernn_state_evolves_between_observations_and_updates_per_feature():
    torch.manual_seed(0)
    enc = ODERNNEncoder(2, 3, 8)
    one = collate(from_arrays([([0.5], [[1.0, 2.0]])]))
    later = collate(from_arrays([([0.8], [[1.0, 2.0]])]))
    half = collate(from_arrays([([0.5], [[1.0, float("nan")]])]))
    loc_one, _ = enc(one.values, one.mask, one.times)
    # the same reading further from the origin is carried back by the ODE over a longer span
    assert not torch.allclose(loc_one, enc(later.values, later.mask, later.times)[0])
    # a partly observed time is read through the mask, not as a zero value
    assert not torch.allclose(loc_one, enc(half.values, half.mask, half.times)[0])
    # with zero dynamics the span does not matter
    with torch.no_grad():
        for p in enc.dynamics.parameters():
            p.zero_()
    assert torch.allclose(
        enc(one.values, one.mask, one.times)[0], enc(later.values, later.mask, later.times)[0]
    )


def test_odernn_walks_each_series_own_times_not_the_batch_union():
    torch.manual_seed(0)
    enc = ODERNNEncoder(1, 2, 4, max_step=10.0)  # one RK4 step per span
    # three series of four observations each at times no other series shares: a union of 12
    series = [(np.arange(4) * 0.2 + 0.01 * k + 0.05, np.ones((4, 1))) for k in range(3)]
    b = collate(from_arrays(series))
    assert b.times.shape[0] == 12
    calls = []
    enc.dynamics.register_forward_hook(lambda *_: calls.append(1))
    loc, _ = enc(b.values, b.mask, b.times)
    # four updates, three spans between them and one back to the origin, 4 stages per RK4 step
    assert len(calls) == 4 * (3 + 1)
    _, reads = enc.schedule(*observed_sequences(b.values, b.mask, b.times, reverse=True)[2:])
    assert reads.tolist() == [[0, 1, 2, 3, -1]] * 3
    # the same as each series alone
    for k, s in enumerate(series):
        alone = collate(from_arrays([s]))
        assert torch.allclose(enc(alone.values, alone.mask, alone.times)[0][0], loc[k], atol=1e-6)


@pytest.mark.parametrize("method", ["rk4", "euler"])
def test_odernn_series_take_their_own_steps_on_a_shared_clock(method):
    """A series with short gaps takes one step per gap beside one whose gaps need many; the
    loop runs the busiest series' count of steps, and each series encodes as it does alone."""
    torch.manual_seed(0)
    enc = ODERNNEncoder(1, 2, 4, method=method, max_step=0.1)
    short = (np.array([0.05, 0.1, 0.15, 0.2]), np.ones((4, 1)))  # 1 step per gap, 1 home
    long = (np.array([0.3, 0.9]), np.full((2, 1), 2.0))  # 6 steps, 3 home
    b = collate(from_arrays([short, long]))
    dt, reads = enc.schedule(*observed_sequences(b.values, b.mask, b.times, reverse=True)[2:])
    assert dt.shape == (2, 9) and reads.shape == (2, 10)
    assert reads[0].tolist() == [0, 1, 2, 3] + [-1] * 6  # read right after each step
    assert reads[1].tolist() == [0, -1, -1, -1, -1, -1, 1, -1, -1, -1]
    assert torch.allclose(dt[0], torch.tensor([-0.05] * 4 + [0.0] * 5))
    assert torch.allclose(dt[1], torch.tensor([-0.1] * 9))
    evaluations = []
    enc.dynamics.register_forward_hook(lambda *_: evaluations.append(1))
    loc, _ = enc(b.values, b.mask, b.times)
    assert len(evaluations) == 9 * (4 if method == "rk4" else 1)  # not 1 + 1 + 1 + 6 + 3
    for k, s in enumerate((short, long)):
        alone = collate(from_arrays([s]))
        assert torch.allclose(enc(alone.values, alone.mask, alone.times)[0][0], loc[k], atol=1e-6)


def test_euler_steps_are_exact_for_linear_decay_per_row():
    from latentode._rk import euler

    h = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    span = torch.tensor([[0.3], [-0.2]])  # each row its own signed span
    out = euler(lambda x: -x, h, span, 4)
    expected = h * (1 - span / 4) ** 4
    assert torch.allclose(out, expected, atol=1e-7)
    assert torch.allclose(euler(lambda x: -x, h, 0.3, 3), h * 0.9**3, atol=1e-7)


def test_rk4_steps_are_the_fourth_order_taylor_polynomial_for_linear_decay_per_row():
    from latentode._rk import rk4

    h = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    span = torch.tensor([[0.3], [-0.2]], dtype=torch.float64)  # each row its own signed span
    d = span / 2
    step = 1 - d + d**2 / 2 - d**3 / 6 + d**4 / 24  # RK4 on dh/dt = -h, exactly
    assert torch.allclose(rk4(lambda x: -x, h, span, 2), h * step**2, rtol=1e-12)
    d = 0.3 / 3
    step = 1 - d + d**2 / 2 - d**3 / 6 + d**4 / 24
    assert torch.allclose(rk4(lambda x: -x, h, 0.3, 3), h * step**3, rtol=1e-12)


def test_odernn_euler_encoder_one_evaluation_per_step_and_close_to_rk4():
    torch.manual_seed(0)
    rk4 = ODERNNEncoder(2, 3, 8)
    euler = ODERNNEncoder(2, 3, 8, method="euler")
    assert (rk4.max_step, euler.max_step) == (0.05, 0.02)
    euler.load_state_dict(rk4.state_dict())
    calls = []
    euler.dynamics.register_forward_hook(lambda *_: calls.append(1))
    one = collate(from_arrays([([0.1, 0.5], [[1.0, 2.0], [0.5, float("nan")]])]))
    loc_e, _ = euler(one.values, one.mask, one.times)
    # 0.5 -> 0.1 in ceil(0.4 / 0.02) = 20 steps, 0.1 -> 0 in 5: one evaluation each
    assert len(calls) == 20 + 5
    loc_r, _ = rk4(one.values, one.mask, one.times)
    assert not torch.allclose(loc_e, loc_r)  # another scheme ...
    assert torch.allclose(loc_e, loc_r, atol=0.05)  # ... of the same dynamics
    with pytest.raises(ValueError, match="method must be one of"):
        ODERNNEncoder(2, 3, 8, method="midpoint")


def test_odernn_update_is_the_gru_cell_and_a_series_that_reads_nothing_keeps_its_state():
    """The encoder's fused update (input gates for every read at once) is ``nn.GRUCell``'s
    update with the same parameters; a series without a read keeps its state bit for bit and
    passes no gradient through the unused update."""
    torch.manual_seed(0)
    enc = ODERNNEncoder(2, 3, 8)
    inputs = torch.randn(4, 2, 4)  # 4 series, 2 clock steps, values and mask of 2 features
    reading = torch.tensor([[True, True], [True, False], [False, True], [False, False]])
    h = torch.randn(4, 8, requires_grad=True)
    reset_update, new = enc._input_gates(inputs, reading)
    for s in range(2):
        got = enc._update(reset_update[:, s], new[:, s], h)
        cell = enc.cell(inputs[:, s], h)
        rows = reading[:, s]
        assert torch.allclose(got[rows], cell[rows], atol=1e-6)
        assert torch.equal(got[~rows], h[~rows])
        (grad,) = torch.autograd.grad(got[~rows].sum(), h)
        assert torch.equal(grad[~rows], torch.ones(int((~rows).sum()), 8))
        assert torch.equal(grad[rows], torch.zeros(int(rows.sum()), 8))


def test_odernn_gradients_reach_the_hidden_dynamics():
    torch.manual_seed(0)
    enc = ODERNNEncoder(2, 3, 8)
    b = batch()
    loc, scale = enc(b.values, b.mask, b.times)
    (loc.sum() + scale.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.dynamics.parameters())


def test_gap_rnn_one_step_targets():
    torch.manual_seed(0)
    net = GapRNN(2, 8)
    b = batch()
    pred, target, target_mask, h, t_last = net(b.values, b.mask, b.times)
    assert pred.shape == target.shape == (3, 2, 2)
    # series 2 has a single observation: no target; series 1 one target
    assert target_mask[2].sum() == 0 and target_mask[1, 1].sum() == 0
    assert target[0, 1].tolist() == [0.0, 4.0]
    assert torch.allclose(t_last, torch.tensor([1.0, 0.7, 0.9]))
    out = net.rollout(h, t_last, torch.tensor([1.5, 2.0]))
    assert out.shape == (3, 2, 2)
