import math

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from latentode.flows import CNF, CNFDynamics, exact_trace, hutchinson_trace


class Linear(nn.Module):
    """f(t, z) = A z."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.as_tensor(a, dtype=torch.float64))

    def forward(self, t, z):
        return z @ self.a.T


def _random_dynamics(dim, seed=0, **kwargs):
    torch.manual_seed(seed)
    f = CNFDynamics(dim, hidden_dim=16, **kwargs).double()
    nn.init.normal_(f.layers[-1].weight, std=0.5)  # away from the identity start
    return f


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_linear_field_log_density_matches_closed_form(trace):
    a = torch.tensor([[-0.3, 0.8, 0.0], [-0.5, 0.2, 0.1], [0.2, 0.0, -0.4]], dtype=torch.float64)
    flow = CNF(3, Linear(a), t1=1.5, trace=trace, rtol=1e-9, atol=1e-9)
    base = dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1)
    q = dist.TransformedDistribution(base, [flow])
    torch.manual_seed(0)
    x = base.sample((64,))
    y = flow(x)
    expm = torch.linalg.matrix_exp(1.5 * a)
    assert torch.allclose(y, x @ expm.T, atol=1e-7)
    # p(y) = N(expm(-A t1) y) / |det expm(A t1)| and log det expm(A t1) = t1 tr(A)
    y_new = torch.randn(64, 3, dtype=torch.float64)
    closed = base.log_prob(y_new @ torch.linalg.inv(expm).T) - 1.5 * torch.trace(a)
    # the exact trace gives the closed form; Hutchinson's probes scatter around it
    if trace == "exact":
        assert torch.allclose(q.log_prob(y_new), closed, atol=1e-7)
    else:
        with torch.no_grad():  # "hutchinson" is what was asked for, also without gradients
            estimates = torch.stack([q.log_prob(y_new.clone()) for _ in range(400)])
        stderr = estimates.std(0) / math.sqrt(len(estimates))
        assert torch.all((estimates.mean(0) - closed).abs() < 4 * stderr)
        assert float(stderr.min()) > 0  # a real estimate: each probe gives another value


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased(noise):
    f = _random_dynamics(5)
    z = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64)
    fz = f(t, z)
    exact = exact_trace(fz, z)
    torch.manual_seed(1)
    n = 20000
    zz = z.detach().repeat(n, 1).requires_grad_(True)
    probe = torch.randint(0, 2, zz.shape).double() * 2 - 1
    if noise == "gaussian":
        probe = torch.randn_like(zz)
    est = hutchinson_trace(f(t, zz), zz, probe, create_graph=False).reshape(n, 4)
    exact = exact.detach()
    stderr = est.std(0) / math.sqrt(n)
    assert torch.all((est.mean(0) - exact).abs() < 4 * stderr + 1e-9)
    assert float(est.std(0).min()) > 0  # it really is a random estimate


def test_inverse_round_trip_and_log_det_agree():
    flow = CNF(2, _random_dynamics(2), rtol=1e-8, atol=1e-8)
    x = torch.randn(10, 2, dtype=torch.float64)
    with torch.no_grad():
        y, ld_forward = flow.flow(x)
        x_back, ld_reverse = flow.flow(y, reverse=True)
    assert torch.allclose(x_back, x, atol=1e-6)
    assert torch.allclose(ld_forward, ld_reverse, atol=1e-6)
    assert float(ld_forward.abs().max()) > 1e-2  # a non-trivial volume change


def test_density_of_a_nonlinear_flow_integrates_to_one():
    flow = CNF(2, _random_dynamics(2, time_dependent=True, gated=True), rtol=1e-6, atol=1e-6)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    q = dist.TransformedDistribution(base, [flow])
    grid = torch.linspace(-7, 7, 141, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    with torch.no_grad():
        density = q.log_prob(points).exp()
    mass = float(density.sum() * (grid[1] - grid[0]) ** 2)
    assert mass == pytest.approx(1.0, abs=0.01)


def test_identity_at_start_and_argument_checks():
    flow = CNF(3)
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.allclose(flow(x), x)
    with pytest.raises(ValueError, match="vectors of size 3"):
        flow(torch.randn(4, 2))
    with pytest.raises(ValueError, match="trace="):
        CNF(3, trace="approx")
    with pytest.raises(ValueError, match="t1 must be positive"):
        CNF(3, t1=0)


def test_gradients_flow_to_the_dynamics_through_the_log_density():
    flow = CNF(2, _random_dynamics(2).float(), adjoint=True, rtol=1e-5, atol=1e-5)
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    q = dist.TransformedDistribution(base, [flow])
    loss = -q.log_prob(torch.randn(16, 2)).mean()
    loss.backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert flow.nfe["backward"] > 0
