import math

import pytest
import torch
from torch import nn

from latentode import ODESolver, SolverError
from latentode.nn import ODEFunc


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(-0.7))

    def forward(self, t, y):
        return self.a * y


def test_matches_closed_form_and_counts_evaluations():
    solver = ODESolver(Linear(), rtol=1e-7, atol=1e-9)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    y0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    with torch.no_grad():
        solver.func.a.data = solver.func.a.data.double()
        ys = solver(y0, t)
    assert ys.shape == (5, 2, 1)
    expected = y0 * torch.exp(-0.7 * t).view(-1, 1, 1)
    assert torch.allclose(ys, expected, atol=1e-6)
    assert solver.nfe["forward"] > 0 and solver.nfe["backward"] == 0
    solver.reset_nfe()
    assert solver.nfe == {"forward": 0, "backward": 0}


def test_adjoint_and_direct_gradients_agree():
    torch.manual_seed(0)
    func = ODEFunc(3, 16).double()
    z0 = torch.randn(5, 3, dtype=torch.float64)
    t = torch.linspace(0, 1.5, 7, dtype=torch.float64)
    grads = {}
    for adjoint in (False, True):
        solver = ODESolver(func, rtol=1e-12, atol=1e-12, adjoint=adjoint)
        func.zero_grad()
        z0_ = z0.clone().requires_grad_(True)
        loss = (solver(z0_, t) ** 2).sum()
        loss.backward()
        grads[adjoint] = [p.grad.clone() for p in func.parameters()] + [z0_.grad.clone()]
        if adjoint:
            assert solver.nfe["backward"] > 0
        else:
            assert solver.nfe["backward"] == 0
    for g_direct, g_adjoint in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(g_direct, g_adjoint, rtol=1e-5, atol=1e-5)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="dopri5"):
        ODESolver(Linear(), method="rk45")
    with pytest.raises(ValueError, match="rtol"):
        ODESolver(Linear(), rtol=-1.0)


def test_options_are_copied():
    options = {"step_size": 0.1}
    solver = ODESolver(Linear(), method="rk4", options=options)
    options["step_size"] = 99.0
    assert solver.options == {"step_size": 0.1}
    ys = solver(torch.ones(1, 1), torch.tensor([0.0, 1.0]))
    assert ys[-1].item() == pytest.approx(math.exp(-0.7), rel=1e-4)
    assert solver.nfe["forward"] == 40  # 10 steps of 4 stages


class Blowup(nn.Module):
    def forward(self, t, y):
        return y**2


def test_failures_become_solver_errors_with_advice():
    solver = ODESolver(Blowup(), options={"max_num_steps": 50})
    with pytest.raises(SolverError, match="max_num_steps"):
        solver(torch.ones(1, 1), torch.tensor([0.0, 2.0]))
    fixed = ODESolver(Blowup(), method="euler", options={"step_size": 0.25})
    with pytest.raises(SolverError, match="NaN or inf"):
        fixed(torch.full((1, 1), 10.0), torch.tensor([0.0, 50.0]))


@pytest.mark.parametrize("adjoint", [False, True])
def test_evaluation_cap_bounds_forward_and_backward_solves(adjoint):
    solver = ODESolver(Linear(), max_nfe=40, rtol=1e-9, atol=1e-10, adjoint=adjoint)
    with pytest.raises(SolverError, match="max_nfe=40 function evaluations in one forward"):
        solver(torch.ones(3, 1), torch.linspace(0.0, 5.0, 4))
    assert solver.nfe["forward"] == 41
    # the adjoint backward solve visits every output time: a cap the forward pass meets
    # can stop the backward pass, and the error still names the solver and gives advice
    solver = ODESolver(Linear(), max_nfe=30, adjoint=adjoint)
    y = solver(torch.ones(3, 1), torch.linspace(0.0, 3.0, 20))
    if adjoint:
        with pytest.raises(SolverError, match="one backward solve.*try looser tolerances"):
            y.sum().backward()
    else:
        y.sum().backward()
        assert solver.nfe["backward"] == 0
    fixed = ODESolver(Linear(), method="rk4", options={"step_size": 0.01}, max_nfe=100)
    with pytest.raises(SolverError, match="max_nfe=100"):
        fixed(torch.ones(1, 1), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="max_nfe must be"):
        ODESolver(Linear(), max_nfe=0)
