"""Dynamics, regularisers and the continuous-depth layer."""

import pytest
import torch


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


def test_last_observed_is_strictly_earlier_per_feature():
    from latentode.nn import last_observed

    times = torch.tensor([0.0, 1.0, 2.0, 3.0])
    values = torch.tensor([[[1.0, 0.0], [2.0, 5.0], [0.0, 0.0], [4.0, 0.0]]])
    mask = torch.tensor([[[1, 0], [1, 1], [0, 0], [1, 0]]], dtype=torch.bool)
    last, gap, seen = last_observed(times, values, mask, torch.tensor([0.0, 1.0, 1.5, 3.0, 10.0]))
    # nothing precedes t=0; at t=1 only the value at t=0 (not the one at t=1 itself)
    assert seen[0].tolist() == [[False, False], [True, False]] + [[True, True]] * 3
    assert last[0, :, 0].tolist() == [0.0, 1.0, 2.0, 2.0, 4.0]
    assert last[0, :, 1].tolist() == [0.0, 0.0, 5.0, 5.0, 5.0]
    assert gap[0, :, 0].tolist() == [0.0, 1.0, 0.5, 2.0, 7.0]
    assert gap[0, :, 1].tolist() == [0.0, 0.0, 0.5, 2.0, 9.0]


def test_next_observed_mirrors_last_observed():
    from latentode.nn import next_observed

    times = torch.tensor([0.0, 1.0, 2.0, 3.0])
    values = torch.tensor([[[1.0, 0.0], [2.0, 5.0], [0.0, 0.0], [4.0, 0.0]]])
    mask = torch.tensor([[[1, 0], [1, 1], [0, 0], [1, 0]]], dtype=torch.bool)
    nxt, gap, seen = next_observed(times, values, mask, torch.tensor([-1.0, 1.0, 1.5, 3.0]))
    assert seen[0, :, 0].tolist() == [True, True, True, False]
    assert seen[0, :, 1].tolist() == [True, False, False, False]
    assert nxt[0, :3, 0].tolist() == [1.0, 4.0, 4.0]
    assert gap[0, :3, 0].tolist() == [1.0, 2.0, 1.5] and gap[0, 0, 1] == 2.0


def test_observed_neighbours_give_their_positions_on_the_grid():
    from latentode.nn import last_observed, next_observed

    times = torch.tensor([0.0, 1.0, 2.0, 3.0])
    values = torch.tensor([[[1.0, 0.0], [2.0, 5.0], [0.0, 0.0], [4.0, 0.0]]])
    mask = torch.tensor([[[1, 0], [1, 1], [0, 0], [1, 0]]], dtype=torch.bool)
    query = torch.tensor([0.0, 1.0, 1.5, 3.0, 10.0])
    last, _, seen, index = last_observed(times, values, mask, query, with_index=True)
    assert index[0, :, 0].tolist() == [0, 0, 1, 1, 3]
    assert index[0, :, 1].tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(values[0].gather(0, index[0]).where(seen[0], 0.0), last[0])
    nxt, _, seen, index = next_observed(times, values, mask, query, with_index=True)
    assert index[0, :, 0].tolist() == [1, 3, 3, 0, 0]  # 0 where nothing follows
    assert index[0, :, 1].tolist() == [1, 0, 0, 0, 0]
    assert seen[0, :, 1].tolist() == [True, False, False, False, False]
    assert torch.equal(values[0].gather(0, index[0]).where(seen[0], 0.0), nxt[0])


def test_anchor_following_the_path_keeps_the_neighbours_offset_from_it():
    from latentode.nn import Anchor, last_observed, next_observed

    times = torch.linspace(0.0, 3.0, 4)
    path = (2.0 * times).view(1, 1, 4, 1).expand(3, 1, 4, 1)  # a trend, 3 draws
    values = torch.tensor([[[1.0], [0.0], [0.0], [0.0]]])  # 1 above the path at t=0
    mask = torch.tensor([[[True], [False], [False], [False]]])
    query = torch.tensor([0.5, 2.0])
    loc = (2.0 * query).view(1, 1, 2, 1).expand(3, 1, 2, 1)
    context = [
        f(times, values, mask, query, with_index=True) for f in (last_observed, next_observed)
    ]
    anchor = Anchor(1, follow_path=True)
    with torch.no_grad():
        anchor.weight.fill_(20.0)
        anchor.log_rate.fill_(-10.0)  # the observation all but decides at any distance
        anchor.path_logit.fill_(20.0)  # β = 1: the neighbour moves with the path
    out = anchor(loc, *context, path=path)
    assert out.shape == loc.shape
    assert torch.allclose(out[0, 0, :, 0], loc[0, 0, :, 0] + 1.0, atol=1e-4)
    with torch.no_grad():
        anchor.path_logit.fill_(-20.0)  # β = 0: the level blend, the trend is lost
    level = Anchor(1)
    level.load_state_dict({k: v for k, v in anchor.state_dict().items() if k != "path_logit"})
    assert torch.allclose(anchor(loc, *context, path=path), level(loc, *[c[:3] for c in context]))
    assert torch.allclose(level(loc, *[c[:3] for c in context]), torch.ones_like(loc), atol=1e-4)


def test_anchor_blend_decays_with_the_distance_and_ignores_missing_neighbours():
    from latentode.nn import Anchor

    anchor = Anchor(2)
    with torch.no_grad():
        anchor.weight.fill_(20.0)  # an observation at distance 0 all but decides
    loc = torch.zeros(3, 1, 4, 2)  # (samples, batch, query, features)
    last = torch.full((1, 4, 2), 10.0)
    gap = torch.tensor([0.0, 10.0, 30.0, 0.0]).view(1, 4, 1).expand(1, 4, 2)
    seen = torch.ones(1, 4, 2, dtype=torch.bool)
    seen[0, 3] = False
    none = (torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4, 2, dtype=torch.bool))
    out = anchor(loc, (last, gap, seen), none)
    assert out.shape == loc.shape
    assert torch.allclose(out[0, 0, 0], torch.full((2,), 10.0), atol=1e-4)
    assert 10.0 > out[0, 0, 1, 0] > out[0, 0, 2, 0] > 0.0  # less pull as the value ages
    assert torch.equal(out[:, :, 3], loc[:, :, 3])  # no neighbour: the decoder's mean
    # both sides at equal distance and weight: their average
    both = anchor(loc, (last, gap, seen), (-last, gap, seen))
    assert torch.allclose(both[0, 0, 0], torch.zeros(2), atol=1e-4)
    # gradients stay finite where a feature has no neighbour
    anchor(loc.requires_grad_(), (last, gap, seen), none).sum().backward()
    assert torch.isfinite(anchor.log_rate.grad).all() and torch.isfinite(anchor.weight.grad).all()


def test_same_time_readout_never_reads_a_value_from_itself():
    from latentode.nn import SameTimeReadout

    torch.manual_seed(0)
    net = SameTimeReadout(3, 8)
    for p in net.head[-1].parameters():  # past the zero start, so the outputs move
        torch.nn.init.normal_(p)
    loc = torch.randn(5, 2, 4, 3)  # (draws, batch, time, features)
    marginal = torch.tensor([0.5, 1.0, 2.0])
    values = torch.randn(2, 4, 3)
    seen = torch.ones(2, 4, 3, dtype=torch.bool)
    seen[0, 1] = torch.tensor([True, False, False])  # only feature 0 seen at that time
    mean, scale, others = net(loc, marginal, values, seen)
    assert mean.shape == scale.shape == loc.shape and (scale > 0).all()
    assert others.shape == seen.shape
    assert not others[0, 1, 0] and others[0, 1, 1:].all() and others[1].all()
    moved = values.clone()
    moved[..., 0] += 3.0  # feature 0's values change everywhere
    mean2, scale2, _ = net(loc, marginal, moved, seen)
    # (up to rounding: its own term is taken off a shared sum)
    assert torch.allclose(mean2[..., 0], mean[..., 0], atol=1e-5)
    assert torch.allclose(scale2[..., 0], scale[..., 0], atol=1e-5)
    assert not torch.allclose(mean2[..., 1:], mean[..., 1:])  # the others read feature 0
    # an unseen value is read by nobody
    hidden = seen.clone()
    hidden[..., 0] = False
    mean3, _, _ = net(loc, marginal, values, hidden)
    mean4, _, _ = net(loc, marginal, moved, hidden)
    assert torch.equal(mean3, mean4)


def test_same_time_readout_starts_at_the_marginal_and_bounds_gross_values():
    from latentode.nn import SameTimeReadout

    torch.manual_seed(1)
    net = SameTimeReadout(2, 8)
    loc, marginal = torch.randn(1, 6, 2), torch.tensor([0.3, 2.0])
    values, seen = torch.randn(1, 6, 2), torch.ones(1, 6, 2, dtype=torch.bool)
    mean, scale, _ = net(loc, marginal, values, seen)
    assert torch.allclose(mean, loc) and torch.allclose(scale, marginal.expand(1, 6, 2), rtol=2e-3)
    for p in net.head[-1].parameters():
        torch.nn.init.normal_(p)
    gross = [values.clone() for _ in range(3)]
    for g, off in zip(gross, (4.0 * 0.3, 100.0, 1000.0), strict=True):
        g[0, 2, 0] = loc[0, 2, 0] + off  # feature 0 at 4, 333 and 3333 noise scales
    read = [net(loc, marginal, g, seen, limit=4.0)[0][0, 2, 1] for g in gross]
    assert torch.allclose(read[0], read[1]) and torch.allclose(read[1], read[2])
    assert not torch.allclose(net(loc, marginal, gross[2], seen)[0][0, 2, 1], read[2])


def test_same_time_readout_gate_is_per_target_and_old_readouts_load():
    from latentode.nn import SameTimeReadout

    torch.manual_seed(2)
    net = SameTimeReadout(3, 8)
    for p in net.head[-1].parameters():
        torch.nn.init.normal_(p)
    with torch.no_grad():
        net.gate.normal_()
        net.gate[1] = 0.0  # target 1 ignores every other feature
    loc, marginal = torch.randn(2, 5, 3), torch.tensor([0.5, 1.0, 2.0])
    values, seen = torch.randn(2, 5, 3), torch.rand(2, 5, 3) > 0.3
    mean, scale, _ = net(loc, marginal, values, seen)
    moved = values + 3.0
    mean2, _, _ = net(loc, marginal, moved, seen)
    assert torch.allclose(mean2[..., 1], mean[..., 1])  # gated off: reads nothing
    assert not torch.allclose(mean2[..., [0, 2]], mean[..., [0, 2]])
    # the sparse path (entries grouped by target) applies each entry's own target's gate,
    # and trains the same: the same gradients as the dense path at the same entries
    at = seen.nonzero(as_tuple=True)
    sparse_mean, sparse_scale, _ = net(loc, marginal, values, seen, at=at)
    assert torch.allclose(sparse_mean, mean[at], atol=1e-5)
    assert torch.allclose(sparse_scale, scale[at], atol=1e-5)
    params = list(net.parameters())
    weight = torch.randn(len(at[0]))
    dense = torch.autograd.grad((weight * (mean[at] + scale[at].log())).sum(), params)
    sparse = torch.autograd.grad((weight * (sparse_mean + sparse_scale.log())).sum(), params)
    for a, b in zip(dense, sparse, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    none = torch.zeros_like(seen).nonzero(as_tuple=True)  # nothing to read
    assert net(loc, marginal, values, seen, at=none)[0].shape == (0,)
    # a readout saved before the gate existed loads as a gain of one
    old = {k: v for k, v in net.state_dict().items() if k != "gate"}
    fresh = SameTimeReadout(3, 8)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.gate, torch.ones(3, 8)) and torch.equal(fresh.target, net.target)


@pytest.mark.parametrize("activation", [torch.nn.ELU, torch.nn.ReLU])
def test_mlp_activations_act_in_place_with_the_same_gradients_and_less_saved(activation):
    from latentode.nn import mlp

    torch.manual_seed(0)
    net = mlp(4, 20, 4, n_layers=3, activation=activation)
    assert [m.inplace for m in net if isinstance(m, activation)] == [True, True]
    act = torch.nn.functional.elu if activation is torch.nn.ELU else torch.nn.functional.relu

    def reference(x):  # the same layers with out-of-place activations
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        for layer in linears[:-1]:
            x = act(layer(x))
        return linears[-1](x)

    def saved_bytes(f, x):  # the memory that autograd keeps: distinct storages
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = f(x)
        return out, sum(storages.values())

    x = torch.randn(1000, 4, requires_grad=True)
    out, in_place = saved_bytes(net, x)
    ref, out_of_place = saved_bytes(reference, x)
    assert torch.equal(out, ref)
    # ELU out of place keeps its input beside its output (the next layer's input): one
    # (1000, 20) float tensor more per hidden layer; ReLU's backward reads its output either way
    fewer = 2 * 1000 * 20 * 4 if activation is torch.nn.ELU else 0
    assert out_of_place - in_place == fewer
    probe = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, probe, create_graph=True)
    (g_ref,) = torch.autograd.grad(ref, x, probe, create_graph=True)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    if activation is torch.nn.ELU:  # second order, as the Jacobian regulariser uses
        (h,) = torch.autograd.grad(g.pow(2).sum(), x)
        (h_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), x)
        torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-5)
