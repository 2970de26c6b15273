"""Series in Parquet files: the index and summary, block reads, and the epoch's stream."""

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install latentode[parquet])")

from latentode.datasets import ParquetSeries, from_arrays, make_spirals, write_parquet  # noqa: E402


@pytest.fixture(scope="module")
def spirals():
    data = make_spirals(n_series=70, n_obs=12, random_state=0).train  # 56 series, 2 features
    # some values missing, so that nulls and partly observed rows are exercised
    rng = np.random.default_rng(0)
    pairs = []
    for s in data:
        v = s.values.copy()
        v[rng.random(v.shape) < 0.2] = np.nan
        v[0, 0] = 1.0  # every series keeps an observation
        pairs.append((s.times, v))
    ids = [f"stay-{i:03d}" for i in range(len(pairs))]
    return from_arrays(pairs, ids=ids, feature_names=["x", "y"])


@pytest.fixture(scope="module")
def stored(spirals, tmp_path_factory):
    path = tmp_path_factory.mktemp("pq") / "spirals.parquet"
    write_parquet(spirals, path, series_per_group=5)
    return path


def same_series(a, b):
    assert a.ids == b.ids and a.feature_names == b.feature_names
    for s, t in zip(a, b, strict=True):
        np.testing.assert_array_equal(s.times, t.times)
        np.testing.assert_array_equal(s.values, t.values)


def test_written_series_read_back_unchanged_with_their_summary(spirals, stored):
    data = ParquetSeries(stored)
    assert len(data) == len(spirals) and data.n_blocks == -(-len(spirals) // 5)
    same_series(data.read_blocks(range(data.n_blocks)), spirals)
    same_series(data.head(7), spirals[:7])
    values = np.concatenate([s.values for s in spirals])
    np.testing.assert_allclose(data.mean, np.nanmean(values, 0), rtol=1e-12)
    np.testing.assert_allclose(data.std, np.nanstd(values, 0), rtol=1e-10)
    assert data.t_min == spirals.t_min and data.t_max == spirals.t_max
    assert data.typical_span == np.median([s.times[-1] - s.times[0] for s in spirals])
    assert data.n_obs == sum(s.n_obs for s in spirals)
    np.testing.assert_array_equal(data.observed_values, (~np.isnan(values)).sum(0))


def test_series_across_row_groups_and_files_are_read_whole(spirals, tmp_path):
    frame = spirals.to_pandas().reset_index()
    half = len(spirals) // 2
    first = frame[frame["series"].isin(spirals.ids[:half])]
    second = frame[frame["series"].isin(spirals.ids[half:])]
    # row groups of 7 rows cut series (12 rows each) in two or three pieces
    first.to_parquet(tmp_path / "a.parquet", row_group_size=7, index=False)
    second.to_parquet(tmp_path / "b.parquet", row_group_size=7, index=False)
    data = ParquetSeries(tmp_path)
    assert len(data) == len(spirals)
    same_series(data.read_blocks(range(data.n_blocks)), spirals)
    plan = data.plan(0, batch_size=8, window=10, seed=1)
    seen = [sid for _, batch in data.stream(plan) for sid in batch.ids]
    assert sorted(seen) == sorted(spirals.ids)


def test_bad_tables_are_refused_naming_the_problem(spirals, tmp_path):
    frame = spirals.to_pandas().reset_index()
    mixed = pd.concat([frame.iloc[:5], frame.iloc[30:40], frame.iloc[5:10]])
    mixed.to_parquet(tmp_path / "mixed.parquet", index=False)
    with pytest.raises(ValueError, match="rows of series 'stay-000' are not contiguous"):
        ParquetSeries(tmp_path / "mixed.parquet")
    frame.to_parquet(tmp_path / "ok.parquet", index=False)
    with pytest.raises(ValueError, match="id_col='id' is not a column"):
        ParquetSeries(tmp_path / "ok.parquet", id_col="id")
    with pytest.raises(ValueError, match=r"value_cols \['z'\] are not feature columns"):
        ParquetSeries(tmp_path / "ok.parquet", value_cols=["x", "z"])
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        ParquetSeries(tmp_path / "ok.parquet", window=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ParquetSeries(tmp_path / "nothing.parquet")
    text = frame.assign(x=frame["x"].astype(str))
    text.to_parquet(tmp_path / "text.parquet", index=False)
    with pytest.raises(TypeError, match=r"value_cols \['x'\] are not real numbers"):
        ParquetSeries(tmp_path / "text.parquet")
    empty = frame.assign(y=np.nan)
    empty.to_parquet(tmp_path / "empty.parquet", index=False)
    with pytest.raises(ValueError, match=r"feature\(s\) \['y'\] are never observed"):
        ParquetSeries(tmp_path / "empty.parquet")


def test_duration_times_need_and_use_a_unit(spirals, tmp_path):
    frame = spirals.to_pandas().reset_index()
    frame["time"] = pd.to_timedelta(frame["time"], unit="h")
    frame.to_parquet(tmp_path / "td.parquet", index=False)
    with pytest.raises(ValueError, match="holds durations; pass time_unit="):
        ParquetSeries(tmp_path / "td.parquet")
    data = ParquetSeries(tmp_path / "td.parquet", time_unit="h")
    assert data.time_unit == "h"
    np.testing.assert_allclose(data.head(1)[0].times, spirals[0].times, atol=1e-9)


def test_each_epoch_visits_every_series_once_and_ranks_read_disjoint_blocks(stored, spirals):
    data = ParquetSeries(stored)
    orders = []
    for epoch in (0, 1):
        plan = data.plan(epoch, batch_size=8, window=12, seed=3)
        ids = [sid for _, batch in data.stream(plan) for sid in batch.ids]
        assert sorted(ids) == sorted(spirals.ids)
        assert plan.global_sizes.sum() == len(spirals)
        for blocks, n in plan.ranks[0][0]:  # windows stop as soon as they hold enough
            assert n - data._blocks[blocks[-1]].n_series < 12
        orders.append(ids)
    assert orders[0] != orders[1]
    two = data.plan(0, batch_size=8, window=12, seed=3, world=2)
    blocks = [{b for window, _ in rank[0] for b in window} for rank in two.ranks]
    assert not blocks[0] & blocks[1] and len(blocks[0] | blocks[1]) == data.n_blocks
    assert two.n_steps == min(len(rank[1]) for rank in two.ranks)
    per_rank = [[batch.ids for _, batch in data.stream(two, rank=r)] for r in (0, 1)]
    for step in range(two.n_steps):
        assert len(per_rank[0][step]) + len(per_rank[1][step]) == two.global_sizes[step]
        assert max(len(per_rank[0][step]), len(per_rank[1][step])) <= 4  # 8 / 2 processes


def tenth(t):
    return t / 10.0


def less_one(v):
    return v - 1.0


def test_the_stream_is_the_same_with_workers_and_resumes_at_any_step(stored):
    data = ParquetSeries(stored)
    plan = data.plan(2, batch_size=6, window=11, seed=0)
    # module-level functions: workers started by spawn or forkserver receive them pickled
    scale = dict(times_transform=tenth, values_transform=less_one)
    alone = list(data.stream(plan, **scale))
    assert [k for k, _ in alone] == list(range(plan.n_steps))
    pooled = list(data.stream(plan, workers=2, **scale))
    assert [k for k, _ in pooled] == list(range(plan.n_steps))
    for (_, a), (_, b) in zip(alone, pooled, strict=True):
        assert a.ids == b.ids
        assert a.times.equal(b.times) and a.values.equal(b.values) and a.mask.equal(b.mask)
    later = list(data.stream(plan, start=5, **scale))
    assert [k for k, _ in later] == list(range(5, plan.n_steps))
    assert [b.ids for _, b in later] == [b.ids for _, b in alone[5:]]


def test_write_parquet_takes_chunks_and_refuses_mismatched_ones(spirals, tmp_path):
    path = tmp_path / "chunks.parquet"
    write_parquet([spirals[:20], spirals[20:]], path, series_per_group=8)
    same_series(ParquetSeries(path).read_blocks(range(ParquetSeries(path).n_blocks)), spirals)
    other = from_arrays([(np.array([0.0]), np.array([[1.0]]))], feature_names=["q"])
    with pytest.raises(ValueError, match="every chunk needs the same features"):
        write_parquet([spirals[:3], other], tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="series_per_group must be a positive integer"):
        write_parquet(spirals, tmp_path / "x.parquet", series_per_group=0)
