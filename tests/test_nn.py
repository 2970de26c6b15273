import pytest
import torch

from latentode.datasets import collate, from_arrays
from latentode.nn import GapRNN, GRUEncoder, ODERNNEncoder, RNNEncoder, observed_sequences


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
    # (the ODE-RNN's RK4 steps follow the batch's grid: equal to integration accuracy)
    assert torch.allclose(loc_alone[0], loc[1], atol=1e-4 if kind is ODERNNEncoder else 1e-6)


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


class _ConvField(torch.nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, t, h):
        return torch.tanh(self.conv(h)) - 0.1 * h


def test_odeblock_adjoint_gradients_match_direct_backprop():
    from latentode.nn import ODEBlock

    torch.manual_seed(0)
    func = _ConvField().double()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    grads = {}
    for adjoint in (False, True):
        block = ODEBlock(func, t=(0.0, 1.0), rtol=1e-9, atol=1e-9, adjoint=adjoint)
        func.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = block(xi)
        assert out.shape == x.shape
        (out**2).sum().backward()
        grads[adjoint] = [xi.grad] + [p.grad.clone() for p in func.parameters()]
        if adjoint:
            assert block.nfe["backward"] > 0
        else:
            assert block.nfe["backward"] == 0 and block.nfe["forward"] > 0
    for direct, adj in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(direct, adj, rtol=1e-5, atol=1e-7)


def test_odeblock_fixed_steps_and_bad_interval():
    from latentode.nn import ODEBlock

    func = _ConvField()
    block = ODEBlock(func, method="rk4", options={"step_size": 0.1})
    block(torch.randn(2, 4, 5, 5))
    assert block.nfe["forward"] == 40  # 10 steps of 4 evaluations
    block.reset_nfe()
    assert block.nfe == {"forward": 0, "backward": 0}
    with pytest.raises(ValueError, match="increasing pair"):
        ODEBlock(func, t=(1.0, 0.0))


class _LinearField(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(a)

    def forward(self, t, z):
        return z @ self.a.T


@pytest.mark.parametrize("adjoint", [False, "checkpoint"])
def test_regularised_dynamics_integrate_energy_and_jacobian_norm(adjoint):
    from latentode.nn import RegularisedDynamics
    from latentode.solvers import ODESolver

    torch.manual_seed(0)
    a = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=torch.float64)
    reg = RegularisedDynamics(_LinearField(a), 2)
    solver = ODESolver(reg, rtol=1e-10, atol=1e-12, adjoint=adjoint)
    z0 = torch.randn(5, 2, dtype=torch.float64)
    reg.active, reg.probe = True, torch.randn(5, 2, dtype=torch.float64)
    t = torch.linspace(0, 2, 401, dtype=torch.float64)
    y0 = torch.cat([z0, torch.zeros(5, 2, dtype=torch.float64)], -1).requires_grad_(True)
    ys = solver(y0, t)
    z = ys[..., :2]
    # energy: trapezoid rule of |A z(t)|^2 along the solved path (401 points)
    speed2 = (z @ a.T).pow(2).sum(-1)
    energy = ((speed2[1:] + speed2[:-1]) / 2 * (t[1:] - t[:-1]).view(-1, 1)).sum(0)
    assert torch.allclose(ys[-1, :, 2], energy, rtol=1e-4)
    # Jacobian term: the probe's |eps^T A|^2 is constant in time, so J(T) = T |eps^T A|^2
    assert torch.allclose(ys[-1, :, 3], 2.0 * (reg.probe @ a).pow(2).sum(-1), rtol=1e-8)
    # the penalty is differentiable: d J(T) / dA = 2 T sum_b eps_b (eps_b^T A)
    ys[-1, :, 3].sum().backward()
    expected = 2.0 * 2.0 * reg.probe.T @ (reg.probe @ a)
    assert torch.allclose(reg.inner.a.grad, expected, rtol=1e-6)
    reg.active = False
    assert reg(t[0], z0).shape == (5, 2)  # inactive: the wrapped dynamics unchanged
