"""Held-out evaluation: splits, side-by-side scores, reliability."""

import numpy as np
import pytest
import xarray as xr

from latentode import FeatureMean, LastValue
from latentode.datasets import from_arrays, make_spirals
from latentode.evaluation import evaluate, hold_out, reliability


@pytest.fixture(scope="module")
def data():
    return make_spirals(n_series=40, n_obs=15, random_state=0).train


def _cells(ds):
    """The set of (series, time, feature) entries observed in ``ds``."""
    out = set()
    for s in ds:
        for i, j in zip(*np.nonzero(np.isfinite(s.values)), strict=True):
            out.add((s.id, float(s.times[i]), int(j)))
    return out


@pytest.mark.filterwarnings("ignore:hold_out")  # a series may end before the split
@pytest.mark.parametrize(
    "option", [{"last": 2.0}, {"after": 4.0}, {"n_last": 3}, {"fraction": 0.2, "random_state": 1}]
)
def test_hold_out_partitions_the_observed_values(data, option):
    context, target = hold_out(data, **option)
    assert [s.id for s in context] == [s.id for s in target]
    kept = [s for s in data if s.id in set(target.ids)]
    assert _cells(context) | _cells(target) == _cells(kept)
    assert not _cells(context) & _cells(target)
    for c, t in zip(context, target, strict=True):
        if "fraction" not in option:  # forecasting: every target after every context time
            assert t.times[0] > c.times[-1]
    if "n_last" in option:
        assert all(s.n_obs == 3 for s in target)
    if "fraction" in option:
        share = len(_cells(target)) / len(_cells(kept))
        assert 0.15 < share < 0.25


def test_hold_out_needs_one_rule_and_warns_about_dropped_series(data):
    with pytest.raises(ValueError, match="exactly one of"):
        hold_out(data, last=1.0, n_last=2)
    with pytest.raises(ValueError, match="fraction"):
        hold_out(data, fraction=1.5)
    with (
        pytest.warns(UserWarning, match="32 of 32 series had nothing left"),
        pytest.raises(ValueError, match="no series"),
    ):
        hold_out(data, after=100.0)


class Oracle:
    """Draws the truth exactly: every score must be perfect."""

    def __init__(self, truth):
        self.truth = {s.id: s for s in truth}

    def sample(self, X, *, times, n_samples):
        out = np.zeros((n_samples, len(X), len(times), X.n_features))
        for i, s in enumerate(X):
            t = self.truth[s.id]
            rows = np.searchsorted(times, t.times)
            out[:, i, rows] = np.nan_to_num(t.values)
        return xr.Dataset({"obs": (("sample", "series", "time", "feature"), out)})


def test_evaluate_scores_models_side_by_side(data, monkeypatch):
    context, target = hold_out(data, last=2.0)
    models = {"oracle": Oracle(target), "LOCF": LastValue(random_state=0).fit(context)}
    table = evaluate(models, context, target, levels=[0.5, 0.9], n_samples=50)
    assert list(table.model.unique()) == ["oracle", "LOCF"]
    assert set(table.feature) == {"x", "y", "all"}
    oracle = table[(table.model == "oracle") & (table.feature == "all")].iloc[0]
    assert oracle.mse == 0 and oracle.crps == 0 and oracle.coverage_90 == 1
    assert oracle.width_50 == 0 and oracle.interval_score_90 == 0
    locf = table[(table.model == "LOCF")].set_index("feature")
    assert locf.loc["all", "n"] == locf.loc["x", "n"] + locf.loc["y", "n"] == len(_cells(target))
    assert locf.loc["all", "mse"] > 0 and locf.loc["all", "width_90"] > locf.loc["all", "width_50"]
    # unit-free: each feature's MSE over its held-out variance, averaged with equal weight
    truth = {d: np.concatenate([s.values[:, d] for s in target]) for d in (0, 1)}
    for d, name in enumerate("xy"):
        variance = np.nanvar(truth[d].astype(np.float32).astype(np.float64))
        assert locf.loc[name, "mse_scaled"] == pytest.approx(locf.loc[name, "mse"] / variance)
    assert locf.loc["all", "mse_scaled"] == pytest.approx(locf.loc[["x", "y"], "mse_scaled"].mean())
    assert oracle.mse_scaled == 0
    # drawing in small chunks of series gives the same scores
    import latentode._query

    monkeypatch.setattr(latentode._query, "CELLS", 1)  # one series per call: still aligned
    chunked = evaluate({"oracle": models["oracle"]}, context, target, n_samples=50)
    assert chunked.equals(table[table.model == "oracle"].reset_index(drop=True))


def test_reliability_reads_the_coverage_columns(data):
    context, target = hold_out(data, n_last=4)
    models = {"mean": FeatureMean().fit(context), "LOCF": LastValue(random_state=0).fit(context)}
    table = evaluate(models, context, target, levels=[0.2, 0.5, 0.8], n_samples=100)
    curve = reliability(table)
    assert list(curve.columns) == ["model", "nominal", "empirical"]
    assert len(curve) == 6 and curve.nominal.tolist()[:3] == [0.2, 0.5, 0.8]
    mean = curve[curve.model == "mean"].empirical.to_numpy()
    assert np.all(np.diff(mean) >= 0)  # wider intervals cover more
    with pytest.raises(ValueError, match="evaluate returns"):
        reliability(curve)

    import matplotlib

    matplotlib.use("Agg")
    from latentode.plotting import plot_reliability

    ax = plot_reliability(curve)
    assert len(ax.lines) == 3  # the diagonal and one line per model


def test_evaluate_refuses_mismatched_inputs(data):
    context, target = hold_out(data, n_last=2)
    with pytest.raises(TypeError, match="dict of name"):
        evaluate([LastValue().fit(context)], context, target)
    with pytest.raises(ValueError, match="same series in the same order"):
        evaluate({"m": LastValue().fit(context)}, context, target[::-1])
    with pytest.raises(ValueError, match="levels"):
        evaluate({"m": LastValue().fit(context)}, context, target, levels=[1.5])
    other = from_arrays([(np.array([0.0, 1.0]), np.ones((2, 2)))])
    assert len(hold_out(other, n_last=1)[1]) == 1
