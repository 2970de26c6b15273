import warnings

import numpy as np
import pytest
import xarray as xr

import latentode.inference.arviz as adapter
from latentode import LatentODE
from latentode.datasets import make_spirals


@pytest.fixture(scope="module")
def fitted_and_test():
    d = make_spirals(n_series=40, n_obs=15, random_state=0)
    # z0 drawn from q: PSIS-LOO below needs distinct draws, and after two epochs importance
    # resampling leaves each series with one or two
    model = LatentODE(
        max_epochs=2, batch_size=16, latent_dim=3, importance_samples=0, random_state=0
    ).fit(d.train)
    return model, d.test


@pytest.fixture
def arviz_one(monkeypatch):
    """Take the adapter's arviz >= 1 branch (DataTree) whatever arviz is installed."""
    monkeypatch.setattr(adapter, "_arviz_major", lambda: 1)


def test_datatree_branch_has_the_groups_dims_and_coords(fitted_and_test, arviz_one):
    model, test = fitted_and_test
    with pytest.warns(UserWarning, match="not valid"):
        tree = model.to_inference_data(test, n_samples=12, log_likelihood=True)
    assert set(model.to_inference_data(test, n_samples=2).children) == {
        "posterior",
        "posterior_predictive",
        "observed_data",
    }
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == {
        "posterior",
        "posterior_predictive",
        "observed_data",
        "log_likelihood",
    }
    assert tree["posterior"]["z0"].dims == ("chain", "draw", "series", "latent")
    assert tree["log_likelihood"]["obs"].dims == ("chain", "draw", "series")
    assert list(tree["posterior"]["series"].values) == test.ids
    # a group carries only the coordinates its variables use
    assert "time" not in tree["log_likelihood"].coords
    assert "latent" not in tree["observed_data"].coords


def test_both_containers_hold_the_same_draws_and_loo_agrees(fitted_and_test, monkeypatch):
    arviz_stats = pytest.importorskip(
        "arviz_stats", reason="arviz-stats (the arviz >= 1 stack) is not installed"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    model, test = fitted_and_test
    if adapter._arviz_major() >= 1:
        pytest.skip("arviz >= 1 installed: the InferenceData branch cannot be compared")
    with pytest.warns(UserWarning, match="not valid"):
        idata = model.to_inference_data(test, n_samples=40, log_likelihood=True)
    monkeypatch.setattr(adapter, "_arviz_major", lambda: 1)
    with pytest.warns(UserWarning, match="not valid"):
        tree = model.to_inference_data(test, n_samples=40, log_likelihood=True)
    for group in ("posterior", "posterior_predictive", "log_likelihood"):
        xr.testing.assert_identical(getattr(idata, group), tree[group].to_dataset())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k warnings: 2 epochs of training
        old = az.loo(idata, pointwise=True)
        new = arviz_stats.loo(tree, pointwise=True)
    assert np.isfinite(new.elpd)
    assert new.elpd == pytest.approx(old.elpd_loo, rel=1e-9)
    assert np.allclose(new.elpd_i.values, old.loo_i.values)
