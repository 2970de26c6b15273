import numpy as np
import pytest

pytest.importorskip("dm_control", reason="make_hopper needs the 'hopper' extra (dm-control)")

from latentode.datasets import HOPPER_FEATURES, make_hopper  # noqa: E402
from latentode.datasets.hopper import simulate_hopper  # noqa: E402


def test_layout_observed_points_and_scale():
    d = make_hopper(n_series=20, n_obs=10, n_times=40, random_state=0)
    assert len(d.train) == 16 and len(d.test) == 4
    assert d.train.feature_names == HOPPER_FEATURES and len(HOPPER_FEATURES) == 14
    assert d.train_values.shape == (16, 40, 14) and d.test_values.shape == (4, 40, 14)
    assert np.allclose(np.diff(d.times), 0.005) and d.times[0] == 0.0
    for k, s in enumerate(d.train):
        assert s.n_obs == 10 and np.isin(s.times, d.times).all()
        at = np.searchsorted(d.times, s.times)
        assert np.array_equal(s.values, d.train_values[k, at])
    both = np.concatenate([d.train_values, d.test_values]).reshape(-1, 14)
    assert np.array_equal(d.data_min, both.min(0)) and np.array_equal(d.data_max, both.max(0))


def test_initial_states_follow_the_protocol_and_the_physics_integrates_velocities():
    states, dt = simulate_hopper(30, 50, random_state=1)
    q0, v0 = states[:, 0, :7], states[:, 0, 7:]
    assert ((q0[:, :2] >= 0) & (q0[:, :2] <= 0.5)).all()
    assert ((q0[:, 2:] >= -2) & (q0[:, 2:] <= 2)).all() and (np.abs(v0) <= 5).all()
    # MuJoCo's semi-implicit Euler: q[k+1] = q[k] + dt * v[k+1], for these slide/hinge joints
    dq = np.diff(states[:, :, :7], axis=1) / dt
    assert np.allclose(dq, states[:, 1:, 7:], atol=1e-6)
    # gravity acts: with no control, the root's vertical velocity changes over the run
    assert np.abs(states[:, -1, 8] - states[:, 0, 8]).mean() > 0.1


def test_seeded_steps_and_validated():
    a = make_hopper(n_series=4, n_times=20, random_state=3)
    b = make_hopper(n_series=4, n_times=20, random_state=3)
    assert np.array_equal(a.train_values, b.train_values)
    c = make_hopper(n_series=4, n_times=20, random_state=4)
    assert not np.array_equal(a.train_values, c.train_values)
    slow, dt = simulate_hopper(2, 5, steps_per_time=3, random_state=0)
    fine, _ = simulate_hopper(2, 13, steps_per_time=1, random_state=0)
    assert dt == pytest.approx(0.015) and np.allclose(slow, fine[:, ::3])
    for kwargs, message in (
        (dict(n_obs=0), "n_obs"),
        (dict(n_obs=200), "n_obs"),
        (dict(n_series=1), "n_series"),
        (dict(steps_per_time=0), "steps_per_time"),
        (dict(test_size=1.0), "test_size"),
    ):
        with pytest.raises(ValueError, match=message):
            make_hopper(**kwargs)
