import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from latentode import LatentODEClassifier
from latentode.datasets import make_spirals

FAST = dict(max_epochs=3, batch_size=20, latent_dim=3, random_state=0)


@pytest.fixture(scope="module")
def spirals():
    return make_spirals(n_series=60, n_obs=15, random_state=0)


def direction(flags):
    return np.where(flags, "clockwise", "counter")


@pytest.fixture(scope="module")
def fitted(spirals):
    return LatentODEClassifier(**FAST).fit(spirals.train, direction(spirals.clockwise_train))


def test_parameters_include_the_latent_ode_ones_and_label_weight():
    clf = LatentODEClassifier(latent_dim=6, label_weight=5.0)
    params = clf.get_params()
    assert params["latent_dim"] == 6 and params["label_weight"] == 5.0 and "encoder" in params
    assert clone(clf).get_params() == params


def test_probabilities_labels_and_persistence(spirals, fitted, tmp_path):
    proba = fitted.predict_proba(spirals.test)
    assert proba.shape == (len(spirals.test), 2)
    assert np.allclose(proba.sum(1), 1.0) and (proba >= 0).all()
    assert list(fitted.classes_) == ["clockwise", "counter"]
    assert set(fitted.predict(spirals.test)) <= {"clockwise", "counter"}
    assert np.array_equal(fitted.predict(spirals.test), fitted.classes_[proba.argmax(1)])
    fitted.save(tmp_path / "clf.pt")
    loaded = LatentODEClassifier.load(tmp_path / "clf.pt")
    assert list(loaded.classes_) == list(fitted.classes_)
    assert np.array_equal(loaded.predict_proba(spirals.test), proba)
    series = fitted.predict_series(spirals.test, times=[5.5])
    assert series.dims == ("series", "time", "feature")


def test_labels_align_by_series_id(spirals, fitted):
    labels = pd.Series(direction(spirals.clockwise_train), index=spirals.train.ids)
    shuffled = labels.sample(frac=1.0, random_state=1)
    other = LatentODEClassifier(**FAST).fit(spirals.train, shuffled)
    for a, b in zip(other.model_.parameters(), fitted.model_.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_labels_are_clear_errors(spirals):
    clf = LatentODEClassifier(**FAST)
    with pytest.raises(ValueError, match="one label per series: 48 series"):
        clf.fit(spirals.train, np.zeros(3))
    with pytest.raises(ValueError, match="single class"):
        clf.fit(spirals.train, np.zeros(len(spirals.train)))
    y = direction(spirals.clockwise_train).astype(object)
    y[4] = None
    with pytest.raises(ValueError, match=f"label of series {spirals.train.ids[4]!r} is missing"):
        clf.fit(spirals.train, y)
    with pytest.raises(ValueError, match="needs y"):
        clf.fit(spirals.train, None)
    assert not hasattr(clf, "model_") and not hasattr(clf, "classes_")


@pytest.mark.slow
def test_learns_the_direction_of_rotation():
    data = make_spirals(n_series=200, n_obs=20, random_state=0)
    clf = LatentODEClassifier(max_epochs=15, latent_dim=4, random_state=0)
    clf.fit(data.train, data.clockwise_train)
    assert clf.score(data.test, data.clockwise_test) >= 0.85  # 1.0 when written; chance 0.5


def _per_time_labels(ds):
    """Label of each observation: which side of x = 0 the spiral is on."""
    return [np.where(s.values[:, 0] > 0, "right", "left") for s in ds]


def test_per_time_labels_are_learned_from_the_latent_trajectory(tmp_path):
    data = make_spirals(n_series=200, n_obs=20, random_state=1)
    y = _per_time_labels(data.train)
    y[0] = y[0].astype(object)
    y[0][:3] = None  # times without a label are allowed
    clf = LatentODEClassifier(
        max_epochs=40, batch_size=40, latent_dim=4, label_weight=5.0, random_state=0
    ).fit(data.train, y)
    assert clf.label_per_time_ and list(clf.classes_) == ["left", "right"]
    pred = clf.predict(data.test)
    assert [p.shape for p in pred] == [(s.n_obs,) for s in data.test]
    truth = _per_time_labels(data.test)
    accuracy = clf.score(data.test, truth)
    majority = max(np.mean(np.concatenate(truth) == c) for c in ("left", "right"))
    assert accuracy > 0.85 and accuracy > majority + 0.2
    proba = clf.predict_proba(data.test[:2], times=[0.0, 2.5, 6.0])  # also past the window
    assert proba.dims == ("series", "time", "class") and proba.shape == (2, 3, 2)
    assert np.allclose(proba.sum("class"), 1.0)
    clf.save(tmp_path / "per_time.pt")
    back = LatentODEClassifier.load(tmp_path / "per_time.pt")
    assert back.label_per_time_
    assert all(np.array_equal(a, b) for a, b in zip(back.predict(data.test), pred, strict=True))


def test_per_time_label_errors_name_the_series(spirals):
    y = _per_time_labels(spirals.train)
    y[2] = y[2][:-1]
    with pytest.raises(ValueError, match=r"series \d+ has 15 observation times but 14 labels"):
        LatentODEClassifier(**FAST).fit(spirals.train, y)
    with pytest.raises(ValueError, match="no label at all"):
        LatentODEClassifier(**FAST).fit(spirals.train, [[None] * s.n_obs for s in spirals.train])


def test_person_activity_rows_train_a_per_time_classifier(tmp_path):
    from latentode.datasets import load_person_activity

    rows = """A01,010-000-024-033,633790226051280329,27.05.2009 14:03:25:127,4.06,1.89,0.50,walking
A01,020-000-033-111,633790226051820913,27.05.2009 14:03:25:183,4.29,1.78,1.34,walking
A01,020-000-032-221,633790226052091205,27.05.2009 14:03:25:210,4.36,1.77,1.04,walking
A01,010-000-030-096,633790226052361498,27.05.2009 14:03:25:237,4.18,1.91,0.35,walking
A01,010-000-024-033,633790226062361498,27.05.2009 14:03:26:237,4.10,1.70,0.52,sitting
B02,010-000-024-033,633793123456780000,30.05.2009 10:29:05:678,1.00,2.00,0.10,lying
B02,020-000-033-111,633793123466780000,30.05.2009 10:29:06:678,1.10,2.10,0.90,lying
"""
    (tmp_path / "ConfLongDemo_JSI.txt").write_text(rows)
    ds = load_person_activity(tmp_path)
    clf = LatentODEClassifier(**FAST).fit(ds.data, ds.labels)
    pred = clf.predict(ds.data)
    assert [p.shape for p in pred] == [lab.shape for lab in ds.labels]
    assert set(np.concatenate(pred)) <= set(ds.activities)


def test_validation_pairs_score_the_labels_too(spirals):
    y, y_val = direction(spirals.clockwise_train), direction(spirals.clockwise_test)
    with_labels = LatentODEClassifier(**FAST).fit(
        spirals.train, y, validation_data=(spirals.test, y_val)
    )
    without = LatentODEClassifier(**FAST).fit(spirals.train, y, validation_data=spirals.test)
    # same training (same seed), so the difference is the labels' weighted log-likelihood
    assert np.allclose(with_labels.history_.loss, without.history_.loss)
    gap = np.asarray(with_labels.history_.val_loss) - np.asarray(without.history_.val_loss)
    assert np.all(gap > 0)  # -log p(label) > 0, times label_weight
    with pytest.raises(ValueError, match=r"y_val has classes \['sideways'\]"):
        LatentODEClassifier(**FAST).fit(
            spirals.train, y, validation_data=(spirals.test, np.full(len(spirals.test), "sideways"))
        )


def test_static_covariates_reach_the_classifier(tmp_path):
    # the label is a static covariate's sign; the series (spirals) carry no trace of it
    data = make_spirals(n_series=240, n_obs=10, random_state=2)
    rng = np.random.default_rng(0)
    risk = pd.DataFrame({"risk": rng.normal(size=len(data.train))}, index=data.train.ids)
    risk.iloc[::10] = np.nan  # unknown for some series: their indicator says so
    y = np.where(risk["risk"].fillna(-1.0) > 0, "high", "low")
    train = data.train.with_static(risk)
    clf = LatentODEClassifier(max_epochs=15, batch_size=48, latent_dim=3, random_state=0)
    clf.fit(train[:150], y[:150])
    blind = LatentODEClassifier(max_epochs=15, batch_size=48, latent_dim=3, random_state=0)
    blind.fit(data.train[:150], y[:150])
    held_out = train[150:]
    accuracy = clf.score(held_out, y[150:])
    assert accuracy >= 0.9  # 1.0 when written
    assert accuracy >= blind.score(data.train[150:], y[150:]) + 0.2  # ~0.6 when written
    assert list(clf.static_names_) == ["risk"]
    with pytest.raises(ValueError, match=r"no static covariates but the model was fitted with"):
        clf.predict(data.train[150:])
    renamed = held_out.with_static(held_out.static.rename(columns={"risk": "danger"}))
    with pytest.raises(ValueError, match=r"static covariates \['danger'\] but the model"):
        clf.predict(renamed)
    clf.save(tmp_path / "static.pt")
    back = LatentODEClassifier.load(tmp_path / "static.pt")
    assert np.array_equal(back.predict_proba(held_out), clf.predict_proba(held_out))
    assert np.array_equal(clf.predict(list(held_out)), clf.predict(held_out))  # unnamed, in order


def test_soft_voting_ensemble_with_the_summary_baseline(spirals, fitted):
    """scikit-learn's VotingClassifier takes the classifier and the summary logistic
    regression as they are: its probabilities are the mean of each fitted member's."""
    from sklearn.ensemble import VotingClassifier

    from latentode import SummaryLogisticRegression

    labels = direction(spirals.clockwise_train)
    members = [
        ("ode0", LatentODEClassifier(**FAST)),
        ("ode1", LatentODEClassifier(**{**FAST, "random_state": 1})),
        ("summary", SummaryLogisticRegression()),
    ]
    vote = VotingClassifier(members, voting="soft").fit(spirals.train, labels)
    each = [m.predict_proba(spirals.test) for m in vote.estimators_]
    assert np.allclose(vote.predict_proba(spirals.test), np.mean(each, axis=0))
    # the members were fitted on clones: the first equals the classifier fitted alone
    assert np.array_equal(each[0], fitted.predict_proba(spirals.test))
    assert not np.allclose(each[0], each[1])  # another seed, another model
    assert list(vote.classes_) == ["clockwise", "counter"]
