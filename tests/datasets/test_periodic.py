import numpy as np
import pytest

from latentode.datasets import make_periodic


def test_layout_and_observed_points_come_from_the_shared_times():
    d = make_periodic(n_series=50, n_obs=20, random_state=0)
    assert len(d.train) == 40 and len(d.test) == 10
    assert d.times.shape == (100,) and np.all(np.diff(d.times) > 0)
    assert d.train_values.shape == (40, 100, 1) and d.test_truth.shape == (10, 100, 1)
    for k, s in enumerate(d.train):
        assert s.n_obs == 20 and np.isin(s.times, d.times).all()
        at = np.searchsorted(d.times, s.times)
        assert np.array_equal(s.values, d.train_values[k, at])


def test_truth_is_the_stated_sine_and_noise_has_the_stated_level():
    d = make_periodic(n_series=200, n_obs=10, noise_std=0.05, random_state=1)
    expected = np.sin(2 * np.pi * d.frequency_train[:, None] * d.times + d.phase_train[:, None])
    assert np.allclose(d.train_truth[..., 0], expected)
    assert ((d.frequency_train >= 0.2) & (d.frequency_train <= 1.0)).all()
    residual = (d.train_values - d.train_truth).std()
    assert 0.045 < residual < 0.055  # 16 000 draws: the estimate is within 2% of 0.05


def test_seeded_and_validated():
    a, b = make_periodic(n_series=20, random_state=3), make_periodic(n_series=20, random_state=3)
    assert np.array_equal(a.train_values, b.train_values)
    for kwargs, message in (
        (dict(n_obs=0), "n_obs"),
        (dict(frequency_range=(1.0, 0.5)), "frequency_range"),
        (dict(noise_std=-1), "noise_std"),
        (dict(n_series=1), "n_series"),
    ):
        with pytest.raises(ValueError, match=message):
            make_periodic(**kwargs)
