import numpy as np
import pytest

from latentode.datasets import make_spirals


def test_spiral_protocol_shapes_and_splits():
    d = make_spirals(n_series=100, n_obs=30, random_state=1)
    assert len(d.train) == 80 and len(d.test) == 20
    assert all(s.n_obs == 30 for s in d.train)
    assert d.times.shape == (100,)
    assert d.test_extrapolation_times.shape == (100,)
    assert d.test_extrapolation_times[0] > d.times[-1]
    assert np.allclose(np.diff(np.concatenate([d.times, d.test_extrapolation_times])), 0.05)
    assert d.test_extrapolation_truth.shape == (20, 100, 2)
    # every observed time is on the grid of the observation window, drawn without replacement
    for s in d.test:
        assert np.all(np.isin(s.times, d.times)) and len(np.unique(s.times)) == 30
    ids = set(d.train.ids) | set(d.test.ids)
    assert ids == set(range(100))


def test_half_clockwise_and_noise_level():
    d = make_spirals(n_series=1000, n_obs=100, noise_std=0.2, random_state=2)
    cw = np.concatenate([d.clockwise_train, d.clockwise_test])
    assert cw.sum() == 500
    resid = d.test_extrapolation_values - d.test_extrapolation_truth
    assert resid.std() == pytest.approx(0.2, rel=0.05)
    # the truth turns: counter-clockwise spirals have positive angular velocity about (+5, 0)
    ccw = d.test_truth[~d.clockwise_test]
    angle = np.unwrap(np.arctan2(ccw[..., 1], ccw[..., 0] - 5.0), axis=1)
    assert np.all(np.diff(angle, axis=1) > 0)


def test_seeded_and_validated():
    a = make_spirals(n_series=20, random_state=3)
    b = make_spirals(n_series=20, random_state=3)
    assert np.array_equal(a.train[0].values, b.train[0].values)
    with pytest.raises(ValueError, match="n_obs"):
        make_spirals(n_obs=101)
