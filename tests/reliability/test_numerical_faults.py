"""Numerical faults during training never leave NaN parameters behind."""

import numpy as np
import pytest
import torch

from latentode import LatentODE
from latentode.nn import ODEFunc
from latentode.solvers import ODESolver


def inject_nan(monkeypatch, calls):
    """Make the dynamics return NaN on the given evaluation numbers (1-based)."""
    original = ODEFunc.forward
    count = {"n": 0}

    def forward(self, t, z):
        count["n"] += 1
        out = original(self, t, z)
        return out * float("nan") if calls(count["n"]) else out

    monkeypatch.setattr(ODEFunc, "forward", forward)
    return count


def all_finite(est):
    return all(torch.isfinite(p).all() for p in est.model_.state_dict().values())


def test_transient_nan_in_the_dynamics_is_rolled_back_and_retried(data, small, monkeypatch):
    count = inject_nan(monkeypatch, lambda n: n == 60)
    with pytest.warns(RuntimeWarning, match="(underflow in dt|NaN or inf).*rolled back.*retrying"):
        est = LatentODE(**small).fit(data.train)
    assert count["n"] > 60
    assert all_finite(est) and len(est.history_.loss) == 3
    assert np.isfinite(est.predict(data.test, times=data.test_extrapolation_times)).all()


def test_persistent_nan_stops_with_a_clear_error_and_keeps_the_old_model(data, small, monkeypatch):
    est = LatentODE(**small).fit(data.train)
    before = est.predict(data.test, times=[6.0, 7.0]).values
    inject_nan(monkeypatch, lambda n: n > 50)
    with pytest.warns(RuntimeWarning, match="rolled back"):
        failed = "after 3 retries.*(underflow in dt|NaN or inf).*lower lr"
        with pytest.raises(FloatingPointError, match=failed):
            est.fit(data.train)
    monkeypatch.undo()
    assert all_finite(est) and len(est.history_.loss) == 3
    assert np.array_equal(est.predict(data.test, times=[6.0, 7.0]).values, before)


def test_exploding_dynamics_hit_the_evaluation_cap(data, small):
    est = LatentODE(**{**small, "max_nfe": 5})
    with pytest.warns(RuntimeWarning, match="max_nfe=5"):
        with pytest.raises(FloatingPointError, match="max_nfe=5 function evaluations"):
            est.fit(data.train)
    assert not hasattr(est, "model_")


def test_nan_gradient_never_reaches_the_parameters(data, small, monkeypatch):
    """A NaN created only in the backward pass (finite loss) is caught before the step."""
    original = ODESolver.forward
    count = {"n": 0}

    def forward(self, y0, t):
        count["n"] += 1
        out = original(self, y0, t)
        if count["n"] == 2 and out.requires_grad:  # the second training step's solve
            out = out.clone()
            out.register_hook(lambda g: g * float("nan"))
        return out

    monkeypatch.setattr(ODESolver, "forward", forward)
    with pytest.warns(RuntimeWarning, match="gradient became NaN"):
        est = LatentODE(**small).fit(data.train)
    assert all_finite(est) and len(est.history_.loss) == 3
