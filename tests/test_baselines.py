import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from latentode import RNNBaseline
from latentode.datasets import from_arrays, make_spirals


@pytest.fixture(scope="module")
def data():
    return make_spirals(n_series=60, n_obs=20, random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    return RNNBaseline(max_epochs=15, batch_size=16, random_state=0).fit(data.train)


def test_learns_one_step_prediction(fitted):
    loss = fitted.history_.loss
    assert len(loss) == 15 and loss[-1] < 0.5 * loss[0]


def test_extrapolates_with_coordinates(data, fitted):
    out = fitted.predict(data.test, times=data.test_extrapolation_times)
    assert out.dims == ("series", "time", "feature") and out.shape == (len(data.test), 100, 2)
    assert np.all(np.isfinite(out.values))
    again = fitted.predict(data.test, times=data.test_extrapolation_times)
    assert np.array_equal(out.values, again.values)


def test_only_extrapolates(data, fitted):
    with pytest.raises(ValueError, match="only extrapolates"):
        fitted.predict(data.test, times=[1.0, 6.0])


def test_contract_and_persistence(data, fitted, tmp_path):
    with pytest.raises(NotFittedError):
        RNNBaseline().predict(data.test, times=[6.0])
    assert clone(fitted).get_params() == fitted.get_params()
    path = tmp_path / "rnn.pt"
    fitted.save(path)
    loaded = RNNBaseline.load(path)
    t = data.test_extrapolation_times[:10]
    assert np.array_equal(loaded.predict(data.test, times=t), fitted.predict(data.test, times=t))


def test_needs_two_observations_per_series():
    one = from_arrays([([0.0], [[1.0]]), ([0.0, 1.0], [[1.0], [2.0]])])
    with pytest.raises(ValueError, match="fewer than two"):
        RNNBaseline(max_epochs=1).fit(one)
