"""The rules users compare with: last value carried forward, interpolation, the mean."""

import numpy as np
import pandas as pd
import pytest

from latentode import FeatureMean, LastValue, LinearInterpolation
from latentode.datasets import from_arrays
from latentode.evaluation import evaluate, hold_out


def random_walks(n_series=200, n_obs=40, sd=1.0, seed=0):
    """Brownian motions observed at random times: the error of carrying a value over a gap g
    is Normal(0, sd^2 g), so calibrated bands widen like sqrt(g)."""
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(n_series):
        t = np.sort(rng.uniform(0, 10, n_obs))
        steps = rng.normal(0, sd * np.sqrt(np.diff(t, prepend=0.0)))
        values = np.stack([np.cumsum(steps), 5.0 + rng.normal(0, 0.1, n_obs)], axis=1)
        series.append((t, values))
    return from_arrays(series, feature_names=["walk", "level"])


def test_last_value_carries_each_feature_on_its_own():
    nan = np.nan
    train = from_arrays(
        [
            (np.array([0.0, 1.0, 2.0]), np.array([[1.0, nan], [2.0, 10.0], [nan, 30.0]])),
            (np.array([0.0, 3.0]), np.array([[5.0, nan], [7.0, nan]])),  # never sees feature 1
        ]
    )
    locf = LastValue(random_state=0).fit(train)
    pred = locf.predict(train, times=[0.0, 0.5, 1.5, 2.5]).values
    assert pred[0, :, 0].tolist() == [1.0, 1.0, 2.0, 2.0]
    assert pred[0, :, 1].tolist() == [10.0, 10.0, 10.0, 30.0]  # before its first: the first
    assert pred[1, :, 0].tolist() == [5.0, 5.0, 5.0, 5.0]
    assert np.allclose(pred[1, :, 1], 20.0)  # never observed: the training mean


def test_interpolation_is_exact_on_lines_and_carries_beyond_the_ends():
    t = np.array([1.0, 2.0, 4.0])
    train = from_arrays([(t, np.stack([3 * t, -t], axis=1))] * 5)
    interp = LinearInterpolation(random_state=0).fit(train)
    pred = interp.predict(train[:1], times=[1.0, 1.5, 3.0, 4.0, 6.0]).values[0]
    assert np.allclose(pred[:, 0], [3.0, 4.5, 9.0, 12.0, 12.0])
    assert np.allclose(pred[:, 1], [-1.0, -1.5, -3.0, -4.0, -4.0])


def test_empirical_bands_widen_with_the_gap_and_cover_held_out_values():
    walks = random_walks(n_series=600)
    train, test = walks[:200], walks[200:]  # 400 test series: errors of different paths
    models = {
        "LOCF": LastValue(random_state=0).fit(train),
        "interpolation": LinearInterpolation(random_state=0).fit(train),
    }
    bands = models["LOCF"].predict_quantiles(test[:1], times=[10.0, 20.0], q=[0.05, 0.95])
    width = (bands[("walk", 0.95)] - bands[("walk", 0.05)]).to_numpy()
    assert width[1] > 1.5 * width[0]  # the sd grows like sqrt(gap)
    for option in ({"last": 3.0}, {"fraction": 0.1, "random_state": 0}):
        context, target = hold_out(test, **option)
        table = evaluate(models, context, target, levels=[0.5, 0.9], n_samples=400)
        walk = table[table.feature == "walk"]
        assert walk.coverage_90.between(0.85, 0.95).all(), (option, walk)
        assert walk.coverage_50.between(0.44, 0.56).all(), (option, walk)


def test_interpolation_bands_are_narrower_inside_than_beyond():
    walks = random_walks(n_series=100)
    interp = LinearInterpolation(random_state=0).fit(walks)
    s = walks[0]
    inside = 0.5 * (s.times[10] + s.times[11])
    bands = interp.predict_quantiles(walks[:1], times=[inside, s.times[-1] + 2.0], q=[0.05, 0.95])
    width = (bands[("walk", 0.95)] - bands[("walk", 0.05)]).to_numpy()
    assert width[0] < width[1] / 2


def test_feature_mean_predicts_the_training_mean_with_its_spread():
    walks = random_walks(n_series=50)
    mean = FeatureMean().fit(walks)
    values = np.concatenate([s.values for s in walks])
    pred = mean.predict(walks[:3], times=[0.5, 7.0]).values
    assert np.allclose(pred, values.mean(0))
    q = mean.predict_quantiles(walks[:1], times=[1.0], q=[0.1, 0.9])
    expected = np.quantile(values[:, 1], [0.1, 0.9])
    assert np.allclose(q["level"].to_numpy()[0], expected, atol=1e-2)


def test_sample_quantiles_interval_share_the_latent_ode_layout():
    walks = random_walks(n_series=60)
    locf = LastValue(random_state=3).fit(walks)
    draws = locf.sample(walks[:4], times=[10.5, 11.0], n_samples=50)
    assert draws["obs"].dims == ("sample", "series", "time", "feature")
    assert draws.equals(
        LastValue(random_state=3).fit(walks).sample(walks[:4], times=[10.5, 11.0], n_samples=50)
    )
    table = locf.predict_quantiles(walks[:4], times=[10.5, 11.0])
    assert table.index.names == ["series", "time"] and table.columns.names == [
        "feature",
        "quantile",
    ]
    assert table.shape == (8, 6)
    interval = locf.predict_interval(walks[:4], times=[10.5, 11.0], coverage=[0.5, 0.9])
    assert (interval[("walk", 0.9, "lower")] <= interval[("walk", 0.5, "lower")]).all()
    assert isinstance(interval, pd.DataFrame)


def test_bad_parameters_and_unsaveable_rules_say_so(tmp_path):
    walks = random_walks(n_series=10)
    with pytest.raises(ValueError, match="n_bins"):
        LastValue(n_bins=0).fit(walks)
    locf = LastValue().fit(walks)
    with pytest.raises(ValueError, match="q must be"):
        locf.predict_quantiles(walks, q=[0.0, 0.5])
    with pytest.raises(ValueError, match="n_samples"):
        locf.sample(walks, n_samples=0)
    with pytest.raises(NotImplementedError, match="fit it again"):
        locf.save(tmp_path / "locf.pt")


def test_summary_logistic_regression_learns_from_summaries_with_missing_features():
    from latentode import SummaryLogisticRegression

    rng = np.random.default_rng(0)
    series, labels = [], []
    for i in range(300):
        label = i % 2
        t = np.sort(rng.uniform(0, 10, 12))
        level = rng.normal(1.5 if label else -1.5, 1.0)
        values = np.stack([level + rng.normal(0, 1, 12), rng.normal(0, 1, 12)], axis=1)
        if i % 3 == 0:
            values[:, 1] = np.nan  # some series never observe the second feature
        series.append((t, values))
        labels.append(["survived", "died"][label])
    data = from_arrays(series, feature_names=["lactate", "hr"])
    clf = SummaryLogisticRegression().fit(data[:200], labels[:200])
    assert clf.classes_.tolist() == ["died", "survived"]
    proba = clf.predict_proba(data[200:])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(1), 1)
    assert clf.score(data[200:], labels[200:]) > 0.85
    assert clf.summaries(data[:1]).shape == (1, 12)
    with pytest.raises(ValueError, match="one label per series"):
        SummaryLogisticRegression().fit(data, labels[:5])
    with pytest.raises(ValueError, match="C must be"):
        SummaryLogisticRegression(C=0).fit(data, labels)
    swapped = from_arrays(
        [(s.times, s.values[:, ::-1]) for s in data[:3]], feature_names=["hr", "lactate"]
    )
    with pytest.raises(ValueError, match="select and order the columns"):
        clf.predict(swapped)


def test_summary_logistic_regression_chooses_its_penalty_by_cross_validation():
    """Hundreds of summaries from a hundred series: with the usual penalty (C=1) the fit
    learns their noise and its held-out log loss suffers; the cross-validated one is
    stronger and does better."""
    from sklearn.metrics import log_loss

    from latentode import SummaryLogisticRegression

    rng = np.random.default_rng(2)
    n, k = 500, 60  # one weakly informative feature of 60: 360 summaries
    labels = rng.integers(0, 2, n)
    series = []
    for label in labels:
        values = rng.normal(size=(6, k))
        values[:, 0] += 0.4 if label else -0.4
        series.append((np.sort(rng.uniform(0, 10, 6)), values))
    data = from_arrays(series)
    chosen = SummaryLogisticRegression().fit(data[:100], labels[:100])
    usual = SummaryLogisticRegression(C=1.0).fit(data[:100], labels[:100])
    assert chosen.C_ in SummaryLogisticRegression.Cs and chosen.C_ < 1.0
    assert usual.C_ == 1.0
    held_out = [log_loss(labels[100:], m.predict_proba(data[100:])[:, 1]) for m in (chosen, usual)]
    assert held_out[0] < 0.72 < 0.78 < held_out[1]  # 0.67 and 0.84 with this seed
    # a class of one series cannot be cross-validated: the penalty is then 1.0
    single = np.zeros(100, dtype=int)
    single[0] = 1
    assert SummaryLogisticRegression().fit(data[:100], single).C_ == 1.0
    # three classes: the multinomial log loss chooses the penalty
    three = np.array(["a", "b", "c"])[rng.integers(0, 3, 120)]
    shifted = from_arrays(
        [(s.times, s.values + "abc".index(c)) for s, c in zip(data[:120], three, strict=True)]
    )
    clf = SummaryLogisticRegression().fit(shifted[:90], three[:90])
    assert clf.C_ in SummaryLogisticRegression.Cs and clf.classes_.tolist() == ["a", "b", "c"]
    assert clf.score(shifted[90:], three[90:]) > 0.9


def test_rules_take_per_series_times_and_horizons(monkeypatch):
    import latentode._query
    from latentode.datasets import from_arrays

    data = from_arrays([([0.0, 1.0], [[1.0], [2.0]]), ([0.0, 3.0], [[5.0], [7.0]])])
    rule = LastValue(random_state=0).fit(data)
    table = rule.predict_quantiles(data, horizon=2.0, n_points=2, q=[0.5])
    assert table.index.tolist() == [(0, 2.0), (0, 3.0), (1, 4.0), (1, 5.0)]
    common = rule.predict_quantiles(data[1:], times=[4.0, 5.0], q=[0.5])
    np.testing.assert_allclose(table.values[2:], common.values)
    own = rule.predict_quantiles(data, times={0: [0.5], "1": [2.0]}, q=[0.5])
    assert own.index.tolist() == [(0, 0.5), (1, 2.0)]
    # without times: each series at its own observation times, not at the union of them
    fitted = rule.predict_quantiles(data, q=[0.5])
    assert fitted.index.tolist() == [(0, 0.0), (0, 1.0), (1, 0.0), (1, 3.0)]
    long = pd.DataFrame({"id": [1, 0], "t": [2.0, 0.5]})  # two columns: id, time
    assert rule.predict_quantiles(data, times=long, q=[0.5]).equals(own)
    monkeypatch.setattr(latentode._query, "CELLS", 1)  # one series per chunk: the same rows
    assert rule.predict_quantiles(data, horizon=2.0, n_points=2, q=[0.5]).equals(table)

    # predict and sample take the same per-series times, in LatentODE's (series, step) layout
    ragged = {0: [0.5, 1.5, 2.5], 1: [2.0]}
    pred = rule.predict(data, times=ragged)
    assert pred.dims == ("series", "step", "feature")
    assert pred.values[:, :, 0].tolist()[0] == [1.0, 2.0, 2.0]
    assert pred.values[1, 0, 0] == 5.0 and np.isnan(pred.values[1, 1:, 0]).all()  # padding
    np.testing.assert_array_equal(pred.time.values[1], [2.0, np.nan, np.nan])
    ahead = rule.predict(data, horizon=2.0, n_points=2)
    np.testing.assert_array_equal(ahead.time.values, [[2.0, 3.0], [4.0, 5.0]])
    assert ahead.values[:, :, 0].tolist() == [[2.0, 2.0], [7.0, 7.0]]
    draws = rule.sample(data, times=ragged, n_samples=50)
    assert draws.obs.dims == ("sample", "series", "step", "feature")
    assert (
        np.isfinite(draws.obs.values[:, 0]).all() and np.isfinite(draws.obs.values[:, 1, 0]).all()
    )
    assert np.isnan(draws.obs.values[:, 1, 1:]).all()  # no draws where series 1 has no time
    assert draws.obs.values[:, 0, 1, 0].std() > 0  # a gap of 0.5: the training errors' spread


def test_summary_logistic_regression_reads_static_covariates():
    from latentode import SummaryLogisticRegression

    rng = np.random.default_rng(1)
    series = [(np.sort(rng.uniform(0, 10, 8)), rng.normal(size=(8, 1))) for _ in range(300)]
    data = from_arrays(series, feature_names=["hr"])  # the series say nothing of the label
    age = pd.DataFrame({"age": rng.normal(60, 15, 300)}, index=data.ids)
    labels = (age["age"] > 60).to_numpy().astype(int)
    age.iloc[::7] = np.nan  # unknown for some: imputed and flagged
    aged = data.with_static(age)
    assert SummaryLogisticRegression.summaries(aged[:2]).shape == (2, 7)
    clf = SummaryLogisticRegression().fit(aged[:200], labels[:200])
    blind = SummaryLogisticRegression().fit(data[:200], labels[:200])
    assert clf.score(aged[200:], labels[200:]) > blind.score(data[200:], labels[200:]) + 0.2
    assert list(clf.static_names_) == ["age"]
    with pytest.raises(ValueError, match=r"static covariates \[\] but the model was fitted"):
        clf.predict(data[200:])
