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
