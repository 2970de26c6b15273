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
    with pytest.raises(SolverError, match="NaN or inf") as err:
        fixed(torch.full((1, 1), 10.0), torch.tensor([0.0, 50.0]))
    # the account of what failed, without the advice, for callers that give their own
    assert "NaN or inf" in err.value.reason and "tolerances" not in err.value.reason
    capped = ODESolver(Linear(), max_nfe=10)
    with pytest.raises(SolverError) as err:
        capped(torch.ones(1, 1), torch.linspace(0.0, 50.0, 3))
    assert err.value.reason == "more than max_nfe=10 function evaluations in one forward solve"


def test_raised_error_undoes_pyros_copies_with_trace_shapes():
    import pyro
    from pyro import poutine

    from latentode.solvers import raised_error

    solver = ODESolver(Blowup(), method="euler", options={"step_size": 0.25})

    def model():
        pyro.sample("x", pyro.distributions.Normal(0.0, 1.0))
        solver(torch.full((1, 1), 10.0), torch.tensor([0.0, 50.0]))

    # two enclosing traces: Pyro copies the error once per trace, appending the shapes
    with pytest.raises(SolverError) as err:
        poutine.trace(poutine.trace(model).get_trace).get_trace()
    assert "Trace Shapes" in str(err.value) and err.value.reason is None
    inner = raised_error(err.value)
    assert "Trace Shapes" not in str(inner) and "NaN or inf" in inner.reason
    assert str(err.value).startswith(str(inner))
    # an error Pyro did not copy is its own original, whatever caused it
    other = ValueError("bad argument")
    other.__cause__ = ValueError("bad")
    assert raised_error(other) is other


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_found_anywhere(bad):
    from latentode.solvers import _all_finite

    values = torch.randn(3, 50, 4)
    assert _all_finite(values) and _all_finite(torch.zeros(0, 4))
    for where in [(0, 0, 0), (1, 25, 2), (2, 49, 3)]:
        hit = values.clone()
        hit[where] = bad
        assert not _all_finite(hit)


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


# -- the native Dormand–Prince backend -----------------------------------------------------


def _field(seed=0):
    torch.manual_seed(seed)
    return ODEFunc(4, 20).double()


def _times(n=40, t_max=3.0, seed=1):
    gen = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(n, generator=gen, dtype=torch.float64) * t_max)[0]
    t[0] = 0.0
    return t


def test_native_is_as_accurate_as_torchdiffeq_forward_and_backward_in_time():
    func, t = _field(), _times()
    y0 = torch.randn(64, 4, dtype=torch.float64)
    with torch.no_grad():
        exact = ODESolver(func, rtol=1e-12, atol=1e-14, backend="torchdiffeq")(y0, t)
        for tol in (1e-4, 1e-7):
            ref = ODESolver(func, rtol=tol, atol=tol / 100, backend="torchdiffeq")
            nat = ODESolver(func, rtol=tol, atol=tol / 100, backend="native")
            assert nat.backend == "native" and ref.backend == "torchdiffeq"
            err_ref = (ref(y0, t) - exact).abs().max()
            err_nat = (nat(y0, t) - exact).abs().max()
            assert err_nat < 3 * err_ref and err_nat < 100 * tol
        back = ODESolver(func, rtol=1e-8, atol=1e-10, backend="native")(exact[-1], t.flip(0))
        assert torch.allclose(back[-1], y0, atol=1e-6)  # integrating back returns to the start


def test_native_passes_tensor_times_to_time_dependent_fields():
    class Cos(nn.Module):
        def forward(self, t, y):
            assert isinstance(t, torch.Tensor) and t.ndim == 0
            return torch.cos(t) * torch.ones_like(y)

    t = torch.linspace(0, 4, 9, dtype=torch.float64)
    y0 = torch.zeros(3, 2, dtype=torch.float64)
    ys = ODESolver(Cos(), rtol=1e-9, atol=1e-11, backend="native")(y0, t)
    assert torch.allclose(ys, torch.sin(t).view(-1, 1, 1).expand_as(ys), atol=1e-7)


def test_checkpoint_gradients_equal_backprop_and_converge_like_torchdiffeq():
    func, t = _field(2), _times(60)
    y0 = torch.randn(32, 4, dtype=torch.float64)
    weight = torch.randn(60, 32, 4, dtype=torch.float64)

    def gradient(**kwargs):
        solver = ODESolver(func, **kwargs)
        y = y0.clone().requires_grad_(True)
        func.zero_grad()
        (solver(y, t) * weight).sum().backward()
        return torch.cat([y.grad.flatten()] + [p.grad.flatten() for p in func.parameters()])

    tight = dict(rtol=1e-8, atol=1e-10)
    native = gradient(backend="native", **tight)
    checkpoint = gradient(adjoint="checkpoint", **tight)
    # the same discrete solve, differentiated two ways: equal to rounding
    assert torch.allclose(native, checkpoint, rtol=1e-9, atol=1e-10)
    exact = gradient(rtol=1e-12, atol=1e-14, backend="torchdiffeq")
    reference = gradient(backend="torchdiffeq", **tight)
    scale = exact.abs().max()
    err_native = (checkpoint - exact).abs().max() / scale
    err_reference = (reference - exact).abs().max() / scale
    assert err_native < 2 * err_reference and err_native < 1e-4


def test_checkpoint_backward_costs_one_reevaluation_per_step_at_any_number_of_outputs():
    func, t = _field(3), _times(100, t_max=5.0)
    y0 = torch.randn(50, 4, dtype=torch.float64)
    counts = {}
    for mode in ("checkpoint", True):
        solver = ODESolver(func, rtol=1e-6, atol=1e-8, adjoint=mode)
        solver(y0.clone().requires_grad_(True), t).pow(2).sum().backward()
        counts[mode] = dict(solver.nfe)
    fwd, bwd = counts["checkpoint"]["forward"], counts["checkpoint"]["backward"]
    assert bwd <= 7 / 6 * fwd + 7  # 7 evaluations per step recomputed, 6 per step forward
    # torchdiffeq's continuous adjoint restarts its backward solve at each of the 100 outputs
    assert counts[True]["backward"] > 3 * bwd


def test_backend_selection_and_bad_settings():
    func = ODEFunc(2, 8)
    assert ODESolver(func).backend == "native"
    assert ODESolver(func, options={"max_num_steps": 50}).backend == "native"
    assert ODESolver(func, method="rk4", options={"step_size": 0.1}).backend == "torchdiffeq"
    assert ODESolver(func, adjoint=True).backend == "torchdiffeq"
    assert ODESolver(func, options={"first_step": 0.1}).backend == "torchdiffeq"
    with pytest.raises(ValueError, match="backend='native' supports"):
        ODESolver(func, method="rk4", backend="native")
    with pytest.raises(ValueError, match="adjoint='checkpoint' needs the native solver"):
        ODESolver(func, method="bosh3", adjoint="checkpoint")
    with pytest.raises(ValueError, match="adjoint must be"):
        ODESolver(func, adjoint="yes")
    with pytest.raises(ValueError, match="backend must be one of"):
        ODESolver(func, backend="scipy")


def test_native_failures_are_solver_errors():
    class Blowup(nn.Module):
        def forward(self, t, y):
            return y**2

    t = torch.tensor([0.0, 2.0])
    with pytest.raises(SolverError, match="max_num_steps=5"):
        ODESolver(Blowup(), options={"max_num_steps": 5})(torch.ones(2, 1), t)
    with pytest.raises(SolverError, match="dopri5"):  # y' = y^2 from 1 blows up at t = 1
        ODESolver(Blowup(), backend="native")(torch.ones(2, 1), t)


@pytest.mark.gpu
@pytest.mark.parametrize("adjoint", [False, "checkpoint"])
def test_native_solver_on_cuda_matches_the_cpu(adjoint):
    t = _times(30)
    y0 = torch.randn(64, 4, dtype=torch.float64)
    out = {}
    for device in ("cpu", "cuda"):
        f = _field(4).to(device)
        solver = ODESolver(f, rtol=1e-7, atol=1e-9, adjoint=adjoint, backend="native")
        y = y0.to(device, copy=True).requires_grad_(True)  # a leaf on each device
        ys = solver(y, t.to(device))
        ys.pow(2).sum().backward()
        out[device] = (ys.detach().cpu(), y.grad.cpu(), next(f.parameters()).grad.cpu())
    for a, b in zip(out["cpu"], out["cuda"], strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_error_channels_leave_riders_out_of_step_control():
    class WithRider(nn.Module):
        def forward(self, t, y):  # a smooth state and a fast-oscillating integral riding along
            return torch.cat([-0.5 * y[..., :2], 100 * torch.cos(50 * t).expand_as(y[..., 2:])], -1)

    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    y0 = torch.ones(3, 3, dtype=torch.float64)
    nfe = {}
    for channels in (None, 2):
        solver = ODESolver(WithRider(), rtol=1e-6, atol=1e-8, backend="native")
        ys = solver(y0, t, error_channels=channels)
        nfe[channels] = solver.nfe["forward"]
        assert torch.allclose(
            ys[..., :2], y0[..., :2] * torch.exp(-0.5 * t).view(-1, 1, 1), atol=1e-5
        )
    assert nfe[2] < nfe[None] / 3


@pytest.mark.parametrize(
    "kwargs",
    [dict(backend="native"), dict(adjoint="checkpoint"), dict(backend="torchdiffeq")],
    ids=["native", "checkpoint", "torchdiffeq"],
)
def test_solves_stay_float32_under_autocast(kwargs):
    """An enclosing bfloat16 autocast changes neither the solution nor its gradient."""
    torch.manual_seed(0)
    func, t = ODEFunc(4, 16, n_layers=3), torch.linspace(0, 1, 8)
    y0 = torch.randn(16, 4)
    dtypes = set()
    func.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))

    def solve_and_grad(autocast):
        solver = ODESolver(func, rtol=1e-5, atol=1e-7, **kwargs)
        y = y0.clone().requires_grad_(True)
        func.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ys = solver(y, t)
        ys.pow(2).sum().backward()  # outside autocast, as PyTorch recommends
        return ys.detach(), y.grad, solver.nfe["forward"]

    plain, mixed = solve_and_grad(False), solve_and_grad(True)
    assert dtypes == {torch.float32}
    assert mixed[0].dtype == torch.float32
    assert mixed[2] == plain[2]  # the same steps: the error control saw float32 numbers
    assert torch.allclose(mixed[0], plain[0], rtol=1e-6, atol=1e-7)
    assert torch.allclose(mixed[1], plain[1], rtol=1e-5, atol=1e-6)


def test_solver_settings_are_frozen_validated_once_and_passed_through():
    import dataclasses
    import pickle

    from latentode import LatentODE, SolverSettings
    from latentode.flows import CNF
    from latentode.models import LatentODEModel
    from latentode.nn import ODEBlock

    options = {"step_size": 0.1}
    fixed = SolverSettings(method="rk4", options=options, max_nfe=50)
    options["step_size"] = 9.0  # the settings keep their own copy
    assert fixed.options == {"step_size": 0.1} and fixed.resolved_backend == "torchdiffeq"
    with pytest.raises(dataclasses.FrozenInstanceError):
        fixed.rtol = 1.0
    with pytest.raises(TypeError):
        fixed.options["step_size"] = 1.0  # read-only
    with pytest.raises(ValueError, match="rtol"):
        fixed.replace(rtol=0.0)  # a copy is validated like the original
    assert pickle.loads(pickle.dumps(fixed)) == fixed
    # one object reaches every solve: the solver, an ODE block, a flow, the model
    field = Linear()
    assert ODESolver(field, fixed).settings is fixed
    assert ODESolver(field, fixed, max_nfe=7).settings == fixed.replace(max_nfe=7)
    assert ODEBlock(field, settings=fixed).solver.settings is fixed
    assert CNF(2, settings=fixed).solver.settings is fixed
    model = LatentODEModel(2, latent_dim=3, solver=fixed)
    assert model.solver.settings is fixed
    est = LatentODE(method="rk4", solver_options={"step_size": 0.1}, max_nfe=50)
    assert est.solver_settings() == fixed
    with pytest.raises(TypeError, match="settings must be a SolverSettings"):
        ODESolver(field, {"method": "rk4"})
