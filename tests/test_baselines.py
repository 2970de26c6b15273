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


def test_odernn_predictions_are_causal_and_skip_first_observations():
    import torch

    from latentode.datasets import collate, from_arrays
    from latentode.recurrent import ODERNN

    torch.manual_seed(0)
    net = ODERNN(1, 8)
    data = from_arrays([([0.0, 0.3, 0.7], [[1.0], [2.0], [3.0]]), ([0.3, 1.0], [[5.0], [6.0]])])
    batch = collate(data)
    pred, target, target_mask, _, t_last = net(batch.values, batch.mask, batch.times)
    # each series' first observation has nothing before it to predict from
    assert target_mask[:, :, 0].tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]]
    assert torch.all(t_last == 1.0)
    # changing a later value leaves every earlier prediction unchanged
    later = batch.values.clone()
    later[0, 2, 0] = 100.0
    pred2, *_ = net(later, batch.mask, batch.times)
    assert torch.equal(pred2[:, :3], pred[:, :3]) and not torch.equal(pred2[0, 3], pred[0, 3])


def test_odernn_baseline_extrapolates_better_than_the_mean():
    from latentode.baselines import ODERNNBaseline
    from latentode.datasets import make_spirals

    data = make_spirals(n_series=100, n_obs=20, random_state=0)
    model = ODERNNBaseline(max_epochs=10, random_state=0).fit(data.train)
    pred = model.predict(data.test, times=data.test_extrapolation_times[:30]).values
    truth = data.test_extrapolation_truth[:, :30]
    rmse = np.sqrt(np.mean((pred - truth) ** 2))
    mean_rmse = np.sqrt(np.mean((truth - data.train_truth.mean((0, 1))) ** 2))
    assert model.history_.loss[-1] < 0.5 * model.history_.loss[0]
    assert rmse < mean_rmse


@pytest.mark.slow
def test_odernn_classifier_per_series_and_per_time():
    from latentode import ODERNNClassifier

    data = make_spirals(n_series=120, n_obs=20, random_state=0)
    clf = ODERNNClassifier(max_epochs=15, random_state=0).fit(data.train, data.clockwise_train)
    assert not clf.label_per_time_ and list(clf.classes_) == [False, True]
    assert clf.score(data.test, data.clockwise_test) >= 0.9
    proba = clf.predict_proba(data.test)
    # a series' class comes from its own observations, not from the batch it is in
    alone = clf.predict_proba(data.test[:1])
    assert np.allclose(alone, proba[:1], atol=1e-3)

    sides = [np.where(s.values[:, 0] > 0, "right", "left") for s in data.train]
    per_time = ODERNNClassifier(max_epochs=15, forecast_weight=0.5, random_state=0)
    per_time.fit(data.train, sides)
    truth = [np.where(s.values[:, 0] > 0, "right", "left") for s in data.test]
    assert per_time.label_per_time_
    assert [p.shape for p in per_time.predict(data.test)] == [t.shape for t in truth]
    assert per_time.score(data.test, truth) > 0.85
    with pytest.raises(ValueError, match="ODERNNClassifier.fit needs y"):
        ODERNNClassifier().fit(data.train, None)
