"""Model files forged by someone who recomputes their checksum: read through the same gate as
the constructor, so bad parameters, fitted state or weights are refused with a message."""

import json

import numpy as np
import pytest
import torch

from latentode import LatentODE
from latentode._io import read_model, write_model


@pytest.fixture(scope="module")
def saved(data, small, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    LatentODE(**small).fit(data.train).save(path)
    return path


def forge(saved, tmp_path, *, params=None, fitted=None, state=None):
    """A copy of ``saved`` with entries changed, checksum recomputed as a forger would."""
    payload = read_model(saved, cls_name="LatentODE")
    p, f = json.loads(payload["params"]), json.loads(payload["fitted"])
    p.update(params or {})
    f.update(fitted or {})
    weights = dict(payload["state_dict"])
    weights.update(state or {})
    path = tmp_path / "forged.pt"
    write_model(
        path, cls_name="LatentODE", params=json.dumps(p), fitted=json.dumps(f), state_dict=weights
    )
    return path


def test_an_untouched_file_predicts_as_before(saved, data, tmp_path):
    model = LatentODE.load(forge(saved, tmp_path))
    again = LatentODE.load(saved)
    np.testing.assert_allclose(model.predict(data.test).values, again.predict(data.test).values)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"latent_dim": -3}, "invalid parameters.*latent_dim"),
        ({"method": "euler", "solver_options": {"step_size": 1e-7}, "max_nfe": None}, "step_size"),
        ({"lr": float("nan")}, "invalid parameters.*lr"),
        ({"no_such_option": 1}, "not those of this latentode version.*no_such_option"),
    ],
)
def test_forged_parameters_are_refused(saved, tmp_path, params, message):
    with pytest.raises(ValueError, match=message):
        LatentODE.load(forge(saved, tmp_path, params=params))


@pytest.mark.parametrize(
    "fitted, message",
    [
        ({"time_scale_": -1.0}, "time_scale_ must be positive"),
        ({"time_scale_": float("inf")}, "time_scale_ must be positive"),
        ({"time_origin_": float("nan")}, "time_origin_ must be finite"),
        ({"value_scale_": [0.0, 1.0]}, "value_scale_ must be positive"),
        ({"value_mean_": [1.0]}, "value_mean_ must be 2 finite numbers"),
        ({"feature_names_in_": []}, "no features"),
    ],
)
def test_forged_fitted_state_is_refused(saved, tmp_path, fitted, message):
    with pytest.raises(ValueError, match=f"fitted state is invalid.*{message}"):
        LatentODE.load(forge(saved, tmp_path, fitted=fitted))


def test_forged_weights_are_refused(saved, tmp_path):
    payload = read_model(saved, cls_name="LatentODE")
    name, weight = next(iter(payload["state_dict"].items()))
    with pytest.raises(ValueError, match="weights do not fit the model"):
        LatentODE.load(forge(saved, tmp_path, state={name: torch.zeros(weight.shape[0] + 1)}))
    with pytest.raises(ValueError, match="weights do not fit the model"):
        LatentODE.load(forge(saved, tmp_path, params={"latent_dim": 5}))
    poisoned = torch.full_like(weight, float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        LatentODE.load(forge(saved, tmp_path, state={name: poisoned}))
