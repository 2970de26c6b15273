"""A time unit given when the data were built is remembered by the model: data counted in
another unit are refused at prediction, not silently read on the wrong clock."""

import numpy as np
import pandas as pd
import pytest

from latentode import LastValue, LatentODE
from latentode.datasets import from_pandas


def frame(unit_scale=1.0):
    rng = np.random.default_rng(0)
    rows = []
    for sid in range(12):
        for h in np.sort(rng.uniform(0, 10, 8)):
            rows.append((sid, pd.Timedelta(hours=h), np.sin(h / 2) + 0.1 * rng.normal()))
    return pd.DataFrame(rows, columns=["id", "t", "x"])


def test_the_unit_travels_with_the_data_and_is_checked(tmp_path, small):
    data = from_pandas(frame(), id_col="id", time_col="t", time_unit="h")
    assert data.time_unit == "h" and data[2:5].time_unit == "h"
    assert data.split_at(5.0)[0].time_unit == "h"
    assert data[[0, 3]].time_unit == "h"
    model = LatentODE(**{**small, "max_epochs": 1}).fit(data)
    assert model.time_unit_ == "h"
    assert model.sample(data[:2], n_samples=2).attrs["time_unit"] == "h"
    in_minutes = from_pandas(frame(), id_col="id", time_col="t", time_unit="min")
    with pytest.raises(
        ValueError, match="counts time in 'min' but the model was fitted on times in 'h'"
    ):
        model.predict(in_minutes)
    same = from_pandas(frame(), id_col="id", time_col="t", time_unit="hours")  # an alias
    model.predict(same, n_samples=2)
    model.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="counts time in 'min'"):
        LatentODE.load(tmp_path / "m.pt").predict(in_minutes)
    # the simple baselines check it the same way
    with pytest.raises(ValueError, match="counts time in 'min'"):
        LastValue().fit(data).predict(in_minutes, times=[1.0])


def test_an_unknown_unit_is_refused_where_it_is_given():
    with pytest.raises(ValueError, match="time_unit='parsecs' is not a unit of time"):
        from_pandas(frame(), id_col="id", time_col="t", time_unit="parsecs")
