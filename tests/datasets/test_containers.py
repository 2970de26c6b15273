import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from latentode.datasets import (
    IrregularDataset,
    as_dataset,
    collate,
    from_arrays,
    from_pandas,
    from_xarray,
)


def ragged():
    return from_arrays(
        [
            (np.array([0.0, 1.0, 2.5]), np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]])),
            (np.array([0.5]), np.array([[5.0, 6.0]])),
            (np.array([1.0, 3.0]), np.array([[7.0, np.nan], [8.0, 9.0]])),
        ],
        ids=["a", "b", "c"],
        feature_names=["hr", "temp"],
    )


def test_collate_ragged_shapes_and_mask():
    data = ragged()
    batch = collate(data)
    assert batch.times.tolist() == [0.0, 0.5, 1.0, 2.5, 3.0]
    assert batch.values.shape == (3, 5, 2)
    assert batch.mask.shape == (3, 5, 2) and batch.mask.dtype == torch.bool
    # series "a": observed hr at 0 and 1, temp at 1 and 2.5
    assert batch.mask[0, :, 0].tolist() == [True, False, True, False, False]
    assert batch.mask[0, :, 1].tolist() == [False, False, True, True, False]
    assert batch.values[0, 2].tolist() == [2.0, 3.0]
    # unobserved entries are zero, not NaN
    assert torch.isfinite(batch.values).all()
    assert batch.values[1, 0].tolist() == [0.0, 0.0]
    assert batch.mask.sum().item() == 9
    assert batch.ids == ["a", "b", "c"]
    assert batch.observed.tolist()[1] == [False, True, False, False, False]


def test_collate_applies_transforms():
    batch = collate(ragged(), times_transform=lambda t: t / 2, values_transform=lambda v: v * 10)
    assert batch.times[-1].item() == pytest.approx(1.5)
    assert batch.values[2, 4].tolist() == [80.0, 90.0]


def test_from_pandas_long_frame_round_trip():
    df = pd.DataFrame(
        {
            "pid": [1, 1, 2, 2, 2],
            "t": [0.0, 2.0, 1.0, 0.5, 3.0],
            "hr": [80.0, np.nan, 70.0, 72.0, 75.0],
            "temp": [37.0, 38.0, np.nan, 36.5, np.nan],
        }
    )
    with pytest.warns(UserWarning, match="unsorted"):
        data = from_pandas(df, id_col="pid", time_col="t")
    assert data.ids == [1, 2]
    assert data.feature_names == ["hr", "temp"]
    assert data[1].times.tolist() == [0.5, 1.0, 3.0]  # sorted
    assert np.allclose(data[1].values[0], [72.0, 36.5])
    back = data.to_pandas()
    assert back.shape == (5, 2)
    assert back.loc[(2, 1.0), "hr"] == 70.0


def test_panel_dataframe_is_accepted_directly():
    index = pd.MultiIndex.from_tuples([("x", 0.0), ("x", 1.0), ("y", 0.2)], names=["id", "time"])
    df = pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=index)
    data = as_dataset(df)
    assert isinstance(data, IrregularDataset)
    assert data.ids == ["x", "y"] and data.feature_names == ["v"]


def test_duplicate_times_merge_or_conflict():
    data = from_arrays([([0.0, 0.0, 1.0], [[1.0, np.nan], [np.nan, 2.0], [3.0, 4.0]])])
    assert data[0].times.tolist() == [0.0, 1.0]
    assert data[0].values[0].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"series 0 has two different values"):
        from_arrays([([0.0, 0.0], [[1.0], [2.0]])])


@pytest.mark.parametrize(
    "pair, message",
    [
        (([0.0, np.inf], [[1.0], [2.0]]), "non-finite time"),
        (([0.0, 1.0], [[1.0], [np.inf]]), "infinite value"),
        (([0.0, 1.0], [[np.nan], [np.nan]]), "no observed value"),
        (([0.0, 1.0], [[1.0]]), "2 times but 1 rows"),
        ((np.array(["a", "b"]), [[1.0], [2.0]]), "non-numeric times"),
    ],
)
def test_bad_series_name_the_series(pair, message):
    with pytest.raises((ValueError, TypeError), match=message) as err:
        from_arrays([([0.0], [[1.0]]), pair], ids=["ok", "bad"])
    assert "'bad'" in str(err.value)


def test_fully_missing_rows_are_dropped_not_imputed():
    data = from_arrays([([0.0, 1.0, 2.0], [[1.0], [np.nan], [3.0]])])
    assert data[0].times.tolist() == [0.0, 2.0]


def test_gate_rejects_wrong_types_and_empty_input():
    with pytest.raises(TypeError, match="X must be"):
        as_dataset(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="empty"):
        as_dataset([])
    with pytest.raises(ValueError, match="MultiIndex"):
        as_dataset(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(ValueError, match="is not a column"):
        from_pandas(pd.DataFrame({"a": [1.0]}), id_col="id", time_col="a")
    with pytest.raises(TypeError, match="not real numbers"):
        from_pandas(pd.DataFrame({"id": [1], "t": [0.0], "s": ["x"]}), id_col="id", time_col="t")


def test_datetime_and_timedelta_times():
    times = pd.to_datetime(["2024-01-01", "2024-01-02"]).to_numpy()
    with pytest.raises(TypeError, match="series 0 has datetime times; convert them to elapsed"):
        from_arrays([(times, [[1.0], [2.0]])])
    gaps = pd.to_timedelta([0, 90], unit="min")
    with pytest.raises(TypeError, match="series 0 has timedelta times.*time_unit"):
        from_arrays([(gaps.to_numpy(), [[1.0], [2.0]])])
    assert from_arrays([(gaps.to_numpy(), [[1.0], [2.0]])], time_unit="h")[0].times.tolist() == [
        0.0,
        1.5,
    ]
    frame = pd.DataFrame({"id": ["a", "a"], "t": gaps, "v": [1.0, 2.0]})
    data = from_pandas(frame, id_col="id", time_col="t", time_unit="min")
    assert data[0].times.tolist() == [0.0, 90.0]


def test_nullable_dtypes_missing_ids_and_complex_values():
    frame = pd.DataFrame(
        {
            "id": pd.array([1, 1, 2], dtype="Int64"),
            "t": pd.array([0, 1, 0], dtype="Int64"),
            "v": pd.array([1.5, pd.NA, 2.0], dtype="Float64"),
            "w": pd.array([pd.NA, 3, 4], dtype="Int64"),
        }
    )
    data = from_pandas(frame, id_col="id", time_col="t")
    assert data.ids == [1, 2]
    assert np.array_equal(data[0].values, [[1.5, np.nan], [np.nan, 3.0]], equal_nan=True)
    frame.loc[2, "id"] = pd.NA
    with pytest.raises(ValueError, match="1 rows have a missing series id in 'id'"):
        from_pandas(frame, id_col="id", time_col="t")
    with pytest.raises(TypeError, match="series 0 has complex values"):
        from_arrays([([0.0], np.array([[1 + 1j]]))])


def test_tensors_of_any_float_dtype_are_accepted():
    t = torch.tensor([0.0, 1.0])
    v = torch.tensor([[1.0], [2.5]], dtype=torch.bfloat16)
    assert from_arrays([(t, v)])[0].values.tolist() == [[1.0], [2.5]]


def test_errors_name_the_argument_given_to_the_estimator():
    with pytest.raises(ValueError, match=r"^X: series 1 contains an infinite value"):
        as_dataset([([0.0], [[1.0]]), ([0.0], [[np.inf]])], name="X")


def test_indexing_returns_subsets():
    data = ragged()
    assert data[1].id == "b"
    assert data[1:].ids == ["b", "c"]
    assert data[[2, 0]].ids == ["c", "a"]
    assert data[np.array([True, False, True])].ids == ["a", "c"]
    assert "3 series" in repr(data)


def test_subsample_hides_whole_time_points_and_keeps_one_per_series():
    data = from_arrays([(np.arange(40.0), np.ones((40, 2))), ([3.0], [[1.0, np.nan]])])
    batch = collate(data)
    gen = torch.Generator().manual_seed(0)
    sub = batch.subsample(0.5, generator=gen)
    kept = sub.observed.sum(-1)
    assert 10 <= kept[0] <= 30  # Binomial(40, 0.5), far inside the tails
    assert kept[1] == 1  # a series never loses its only observation
    assert torch.equal(sub.mask, batch.mask & sub.observed[..., None])  # whole rows hidden
    assert torch.all(sub.values[~sub.mask] == 0)
    assert batch.subsample(1.0) is batch
    with pytest.raises(ValueError, match="keep must be"):
        batch.subsample(0.0)


def test_truncate_encoder_shows_an_early_part_and_keeps_the_likelihood_mask():
    data = from_arrays(
        [(np.arange(10.0), np.ones((10, 1))), (np.arange(5.0, 9.0), np.ones((4, 1)))]
    )
    batch = collate(data)
    cut = batch.truncate_encoder(0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cut.mask, batch.mask)
    assert cut.encode_mask is not None and not torch.any(cut.encode_mask & ~batch.mask)
    for b, (first, last) in enumerate([(0.0, 9.0), (5.0, 8.0)]):
        seen = batch.times[cut.encode_mask[b, :, 0]]
        assert seen[0] == first  # always the first observation
        assert seen[-1] >= first + 0.5 * (last - first) - 1  # at least half the span (grid 1)
        # what is shown is a prefix of the observations
        observed = batch.times[batch.mask[b, :, 0]]
        assert torch.equal(seen, observed[: len(seen)])
    assert batch.truncate_encoder(1.0) is batch


def test_hide_values_hides_single_values_from_the_encoder_only():
    data = from_arrays([(np.arange(50.0), np.ones((50, 2))), ([3.0], [[1.0, np.nan]])])
    batch = collate(data)
    hidden = batch.hide_values(0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hidden.mask, batch.mask) and torch.equal(hidden.values, batch.values)
    assert not torch.any(hidden.encode_mask & ~batch.mask)
    share = 1 - hidden.encode_mask[0].sum() / batch.mask[0].sum()
    assert 0.2 < share < 0.4  # Binomial(100, 0.3), far inside the tails
    # single values, not whole time points: some times keep one feature and hide the other
    split = hidden.encode_mask[0].sum(-1) == 1
    assert split.any()
    assert hidden.encode_mask[1].sum() == 1  # a series never loses its only value
    # on top of forecast training: a subset of what truncate_encoder shows
    cut = batch.truncate_encoder(0.5, generator=torch.Generator().manual_seed(1))
    both = cut.hide_values(0.3, generator=torch.Generator().manual_seed(2))
    assert not torch.any(both.encode_mask & ~cut.encode_mask)
    assert batch.hide_values(0.0) is batch
    with pytest.raises(ValueError, match="share must be"):
        batch.hide_values(1.0)


def test_weight_pairs_gives_each_observed_series_feature_pair_the_same_total():
    data = from_arrays(
        [
            (np.arange(4.0), [[1.0, 2.0], [1.0, np.nan], [1.0, np.nan], [1.0, 5.0]]),
            ([1.5], [[np.nan, 3.0]]),
        ]
    )
    batch = collate(data)
    weighted = batch.weight_pairs(2.0)
    assert weighted.obs_weight.shape == (2, 1, 2)
    per_pair = (weighted.obs_weight * batch.mask).sum(1)  # total weight of each pair
    assert torch.allclose(per_pair, torch.tensor([[2.0, 2.0], [0.0, 2.0]]))
    assert weighted.obs_weight[0, 0].tolist() == [0.5, 1.0]  # 4 and 2 observations
    assert weighted.obs_weight[1, 0, 0] == 0  # never observed
    # the weights follow the scored mask, so they are taken after subsampling
    sub = batch.subsample(0.5, generator=torch.Generator().manual_seed(0)).weight_pairs(2.0)
    assert torch.allclose((sub.obs_weight * sub.mask).sum(1)[sub.mask.any(1)], torch.tensor(2.0))
    assert batch.rows(torch.tensor([1])).obs_weight is None
    assert torch.equal(weighted.rows(torch.tensor([1])).obs_weight, weighted.obs_weight[1:])
    with pytest.raises(ValueError, match="scale must be"):
        batch.weight_pairs(0.0)


def _same(a, b):
    assert a.ids == b.ids and a.feature_names == b.feature_names
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.times, y.times)
        assert np.array_equal(x.values, y.values, equal_nan=True)


def test_xarray_round_trip_keeps_ids_times_and_missingness():
    data = ragged()
    grid = data.to_xarray()
    assert grid.dims == ("series", "time", "feature")
    assert grid.time.values.tolist() == [0.0, 0.5, 1.0, 2.5, 3.0]
    assert np.isnan(grid.sel(series="b", time=0.0)).all()  # b was not observed then
    _same(from_xarray(grid), data)
    _same(as_dataset(grid), data)  # the estimators' gate takes it too
    # a Dataset of one variable per feature, dims in another order and other names
    ds = grid.rename(series="patient", time="hours").to_dataset("feature").transpose()
    _same(from_xarray(ds, series_dim="patient", time_dim="hours"), data)


def test_from_xarray_single_feature_timedelta_and_errors():
    da = xr.DataArray(
        [[1.0, np.nan, 2.0], [np.nan, 3.0, np.nan]],
        dims=("series", "time"),
        coords={"series": [10, 11], "time": pd.to_timedelta([0, 30, 90], unit="min")},
        name="glucose",
    )
    data = from_xarray(da, time_unit="h")
    assert data.feature_names == ["glucose"] and data.ids == [10, 11]
    assert data[0].times.tolist() == [0.0, 1.5] and data[1].times.tolist() == [0.5]
    with pytest.raises(TypeError, match="timedelta"):
        from_xarray(da)
    with pytest.raises(ValueError, match=r"series 11 has no observed value.*dropna"):
        from_xarray(da.where(da.series == 10))
    with pytest.raises(ValueError, match="expected .'series', 'time', 'feature'.*series_dim="):
        from_xarray(da.rename(series="id"))
    bad = xr.Dataset({"a": da, "b": da.isel(time=0)})
    with pytest.raises(ValueError, match="data variable 'b' has dims"):
        from_xarray(bad, time_unit="h")
    with pytest.raises(TypeError, match="DataArray or Dataset"):
        from_xarray(np.zeros((2, 3)))


def test_split_at_keeps_series_observed_on_both_sides_with_their_ids():
    data = from_arrays(
        [
            ([0.0, 1.0, 2.0, 3.0], [[1.0], [2.0], [3.0], [4.0]]),
            ([0.5, 0.7], [[5.0], [6.0]]),  # all before: dropped
            ([1.5, 2.0, 2.5], [[7.0], [8.0], [9.0]]),
        ],
        ids=["a", "b", "c"],
        feature_names=["x"],
    )
    before, after = data.split_at(2.0)
    assert before.ids == after.ids == ["a", "c"]
    assert np.array_equal(before[0].times, [0.0, 1.0])
    assert np.array_equal(after[0].times, [2.0, 3.0])
    assert np.array_equal(after[1].values[:, 0], [8.0, 9.0]) and before[1].n_obs == 1
    assert before.feature_names == ["x"]
    with pytest.raises(ValueError, match="time=10.0"):
        data.split_at(10.0)


def test_rows_of_the_whole_batch_equal_collating_the_reordered_series():
    """Full-batch training reorders one collated batch instead of collating again."""
    data = from_arrays(
        [
            ([0.0, 1.0], [[1.0], [2.0]]),
            ([0.5], [[3.0]]),
            ([1.0, 2.0], [[float("nan")], [4.0]]),
        ]
    )
    whole = collate(data)
    order = torch.tensor([2, 0, 1])
    picked = whole.rows(order)
    again = collate([data[i] for i in order.tolist()])
    assert torch.equal(picked.times, again.times)
    assert torch.equal(picked.values, again.values) and torch.equal(picked.mask, again.mask)
    assert picked.ids == again.ids
    picked.values.add_(1.0)  # a copy: the collated batch is left as it was
    assert torch.equal(whole.values, collate(data).values)


def test_lists_of_series_pass_the_gate_whole():
    """scikit-learn indexes a data set into a list of its series; the gate takes it back."""
    from sklearn.utils import _safe_indexing

    from latentode.datasets import IrregularSeries, make_spirals

    data = make_spirals(n_series=6, n_obs=5, random_state=0).train
    picked = _safe_indexing(data, [3, 0])
    back = as_dataset(picked)
    assert [s.id for s in back] == [data[3].id, data[0].id]
    assert np.array_equal(back[0].values, data[3].values, equal_nan=True)
    wider = IrregularSeries("w", np.array([0.0]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"\[2, 3\] features"):
        as_dataset([data[0], wider])


def test_static_covariates_travel_with_the_series():
    data = ragged()
    table = pd.DataFrame(
        {
            "age": [61.0, np.nan, 45.0],
            "unit": pd.Categorical(["surgery", "cardiac", None], categories=["cardiac", "surgery"]),
            "female": [True, False, True],
            "unused": [0.0, 0.0, 0.0],
        },
        index=["c", "a", "b"],  # any order; extra rows would be ignored
    ).drop(columns="unused")
    with_static = data.with_static(pd.concat([table, table.iloc[:0]]))
    assert with_static.static_names == ["age", "unit=cardiac", "unit=surgery", "female"]
    assert data.static_names == [] and data[0].static is None  # the original is left alone
    frame = with_static.static
    assert list(frame.index) == ["a", "b", "c"]
    assert np.isnan(frame.loc["a", "age"]) and frame.loc["c", "age"] == 61.0
    assert frame.loc["c"].tolist()[1:] == [0.0, 1.0, 1.0]
    assert np.isnan(frame.loc["b", "unit=cardiac"])  # an unknown category: unknown indicators
    # indexing, splitting, the gate and scikit-learn-style lists keep them
    assert with_static[[2, 0]].static.index.tolist() == ["c", "a"]
    before, after = with_static.split_at(1.5)
    assert before.static_names == with_static.static_names
    assert np.array_equal(after.static.loc["c"], frame.loc["c"])
    assert as_dataset(list(with_static)).static_names == [f"static{i}" for i in range(4)]
    assert "static ['age'" in repr(with_static)
    batch = collate(with_static, static_transform=lambda s: s * 2)
    assert batch.static.shape == (3, 4) and batch.static_mask.shape == (3, 4)
    assert batch.static[2, 0] == 122.0 and batch.static[0, 0] == 0 and not batch.static_mask[0, 0]
    assert batch.context.shape == (3, 8) and batch.rows(torch.tensor([2])).static[0, 0] == 122.0
    assert collate(data).static is None and collate(data).context is None


def test_static_covariate_errors_name_the_problem():
    data = ragged()
    with pytest.raises(ValueError, match=r"series \['c'\] \(1 of 3\) are not in its index"):
        data.with_static(pd.DataFrame({"age": [1.0, 2.0]}, index=["a", "b"]))
    with pytest.raises(TypeError, match="column 'ward' has dtype"):
        data.with_static(pd.DataFrame({"ward": ["x", "y", "z"]}, index=["a", "b", "c"]))
    with pytest.raises(ValueError, match="series 'b' has an infinite 'age'"):
        data.with_static(pd.DataFrame({"age": [1.0, np.inf, 3.0]}, index=["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"series \['a'\] have more than one row"):
        data.with_static(pd.DataFrame({"age": [1.0, 2.0, 3.0]}, index=["a", "a", "c"]))
    with pytest.raises(TypeError, match="pandas DataFrame indexed by series id"):
        data.with_static({"age": [1, 2, 3]})
    one = data.with_static(pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"], name="age"))
    assert one.static_names == ["age"]
    mixed = [one[0], data[1]]
    with pytest.raises(ValueError, match="static covariates of different lengths"):
        as_dataset(mixed)
