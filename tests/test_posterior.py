"""The Latent ODE's predictive: calibration on held-out values, and its warnings."""

import copy

import numpy as np
import pytest

from latentode import LatentODE
from latentode._query import chunks
from latentode.datasets import make_spirals
from latentode.evaluation import evaluate, held_out_draws, hold_out

# every training series trained on (no automatic validation split): the tests calibrate
FAST = dict(
    max_epochs=4, batch_size=32, latent_dim=3, random_state=0, obs_std=0.02, validation_fraction=0
)


@pytest.fixture(scope="module")
def spirals():
    return make_spirals(n_series=300, n_obs=20, noise_std=0.3, random_state=0)


@pytest.fixture(scope="module")
def fitted(spirals):
    # a fixed noise far below the data's makes the model's own bands much too narrow
    return LatentODE(**FAST).fit(spirals.train)


# the default calibration hides less than the last 2 time units evaluated here: told so
@pytest.mark.filterwarnings("ignore:calibrated bands are asked for:UserWarning")
def test_calibration_brings_coverage_to_its_nominal_level(spirals, fitted, tmp_path):
    calibration, held_out = spirals.test[:30], spirals.test[30:]
    context, target = hold_out(held_out, last=2.0)
    raw = evaluate({"raw": fitted}, context, target, levels=[0.5, 0.9])
    assert raw.coverage_90.iloc[-1] < 0.6  # the premise: overconfident
    calibrated = LatentODE.load(_saved(fitted, tmp_path)).calibrate(calibration)
    table = evaluate({"calibrated": calibrated}, context, target, levels=[0.5, 0.9])
    overall = table[table.feature == "all"].iloc[0]
    assert 0.8 <= overall.coverage_90 <= 0.97 and 0.38 <= overall.coverage_50 <= 0.62
    assert overall.crps < raw.crps.iloc[-1]  # better bands score better, not just wider
    # the point forecast is the model's: calibration changes the spread, not the mean
    t = target[0].times
    assert np.allclose(
        calibrated.predict(context[:1], times=t), fitted.predict(context[:1], times=t)
    )
    # saved with the model; calibrated=False gives the model's own draws back
    again = LatentODE.load(_saved(calibrated, tmp_path))
    q = dict(times=t, q=[0.05, 0.95])
    assert np.allclose(
        again.predict_quantiles(context[:1], **q), calibrated.predict_quantiles(context[:1], **q)
    )
    own = calibrated.sample(context[:1], times=t, calibrated=False)
    assert own.equals(fitted.sample(context[:1], times=t))


# a few hidden values lie further from the observations than any the calibrations held out
@pytest.mark.filterwarnings("ignore:calibrated bands are asked for:UserWarning")
def test_fit_calibrates_its_bands_by_default(spirals, fitted):
    # the same overconfident model, fitted without validation data on 240 series: it holds
    # out 24 of them and calibrates there, so its imputation bands cover what they claim
    default = LatentODE(**{**FAST, "validation_fraction": 0.1}).fit(spirals.train)
    assert len(default.validation_ids_) == 24 and default.calibration_ is not None
    context, target = hold_out(spirals.test, fraction=0.2, random_state=0)
    table = evaluate({"default": default, "raw": fitted}, context, target, levels=[0.5, 0.9])
    overall = table[table.feature == "all"].set_index("model")
    assert overall.coverage_90["raw"] < 0.6  # the premise: the model's own bands are narrow
    # measured 0.93 / 0.67: the default calibration also holds out each series' last quarter,
    # whose forecast errors widen the centre of imputation bands
    assert 0.8 <= overall.coverage_90["default"] <= 0.97
    assert 0.38 <= overall.coverage_50["default"] <= 0.75
    # calibrated for the task on the same held-out series (validation_ids_ names them)
    held = spirals.train[[spirals.train.ids.index(i) for i in default.validation_ids_]]
    task = copy.deepcopy(default).calibrate(held, fraction=0.2)
    table = evaluate({"task": task}, context, target, levels=[0.5, 0.9])
    overall = table[table.feature == "all"].iloc[0]
    assert 0.8 <= overall.coverage_90 <= 0.97 and 0.38 <= overall.coverage_50 <= 0.62


def _saved(model, folder):
    path = folder / f"m{np.random.randint(1_000_000)}.pt"
    model.save(path)
    return path


def test_calibration_needs_a_fitted_model_and_valid_options(spirals, fitted):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LatentODE().calibrate(spirals.test)
    with pytest.raises(ValueError, match="fraction"):
        LatentODE(**FAST).fit(spirals.train[:40]).calibrate(spirals.test, fraction=2.0)


def test_far_query_times_warn(spirals, fitted):
    end = spirals.train.t_max
    span = end - spirals.train.t_min
    fitted.predict(spirals.test[:2], times=[end + 1.5 * span])  # within reach: no warning
    with pytest.warns(UserWarning, match="times the span of the training data"):
        fitted.predict(spirals.test[:2], times=[end + 3 * span])


def test_bands_beyond_the_calibrated_horizon_warn(spirals, fitted, tmp_path, monkeypatch):
    import warnings

    short = copy.deepcopy(fitted).calibrate(spirals.test[:50], last=0.5)
    reach = short.calibration_.reach
    # from the last value before each hidden window, which may lie further back than 0.5
    assert 0.5 <= reach < 5
    last = spirals.test[50].times[-1]
    near = [last + 0.5 * reach, last + reach]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the calibrated horizon: silent
        short.predict_quantiles(spirals.test[50:51], times=near)
    far = [last + 0.5 * reach, last + 3 * reach]
    with pytest.warns(UserWarning, match=r"calibrate\(X, last="):
        short.predict_quantiles(spirals.test[50:51], times=far)
    with pytest.warns(UserWarning, match="calibrated bands are asked for"):
        short.sample(spirals.test[50:51], times=far, n_samples=5)
    assert not any(  # the model's own draws are not the calibration's business
        "calibrated bands" in str(w.message)
        for w in _caught(lambda: short.sample(spirals.test[50:51], times=far, calibrated=False))
    )
    # only the entries asked for count: the near time alone is within reach
    entries = np.zeros((1, 2, spirals.test.n_features), dtype=bool)
    entries[0, 0] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        near_only = short.sample(spirals.test[50:51], times=far, n_samples=400, entries=entries)
    assert np.isnan(near_only.obs.values[:, 0, 1]).all()
    with pytest.warns(UserWarning, match="calibrated bands are asked for"):
        both = short.sample(spirals.test[50:51], times=far, n_samples=400)
    width = [
        np.subtract(*np.quantile(x.obs.values[:, 0, 0], [0.95, 0.05], axis=0))
        for x in (near_only, both)
    ]
    np.testing.assert_allclose(width[0], width[1], rtol=0.2)  # the same calibrated bands
    # one call, one warning, however many chunks of series it draws in
    monkeypatch.setattr("latentode._posterior.WIDEST_CELLS", 2_000)
    for call in (
        lambda: short.predict_quantiles(spirals.test[50:], horizon=3 * reach),
        lambda: short.sample(spirals.test[50:], horizon=3 * reach, n_samples=20),
    ):
        caught = [w for w in _caught(call) if "calibrated bands" in str(w.message)]
        assert len(caught) == 1 and caught[0].filename == __file__
    monkeypatch.undo()
    # the evaluation's draws too, though it draws series by series in chunks of its own
    monkeypatch.setattr("latentode._query.CELLS", 2_000)
    context, target = hold_out(spirals.test[50:], last=3 * reach)
    assert len(list(chunks([s.times for s in target], 20, target.n_features))) > 1
    call = lambda: held_out_draws(short, context, target, 20)  # noqa: E731
    assert sum("calibrated bands" in str(w.message) for w in _caught(call)) == 1
    monkeypatch.undo()
    # kept in the file; a calibration saved before it was kept does not warn
    assert LatentODE.load(_saved(short, tmp_path)).calibration_.reach == reach
    short.calibration_.reach = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short.predict_quantiles(spirals.test[50:51], times=far)


def _caught(call):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return caught


def test_fit_calibrates_on_validation_series_when_it_can(spirals):
    with_validation = LatentODE(**FAST).fit(spirals.train, validation_data=spirals.test[:30])
    assert with_validation.calibration_ is not None
    plain = LatentODE(**FAST).fit(spirals.train)
    assert plain.calibration_ is None
    # a refit replaces the calibration of the earlier fit
    assert with_validation.fit(spirals.train).calibration_ is None
    # two short validation series: too few values to calibrate, fit goes on uncalibrated
    few = LatentODE(**FAST).fit(spirals.train, validation_data=spirals.test[:2])
    assert few.calibration_ is None
    with pytest.raises(ValueError, match="values could be held out"):
        few.calibrate(spirals.test[:2])


def test_per_series_times_and_horizons_match_the_common_grid(spirals, fitted):
    series = spirals.test[:4]
    own = {s.id: s.times[-1] + np.array([0.5, 1.0]) for s in series}
    table = fitted.predict_quantiles(series, times=own, q=[0.5], n_samples=64)
    assert [len(table.loc[s.id]) for s in series] == [2] * 4
    for s in series:
        np.testing.assert_allclose(table.loc[s.id].index.values, own[s.id])
    # the same values as asking that one series on its own grid (the draws are seeded)
    first = fitted.predict_quantiles(series[:1], times=own[series[0].id], q=[0.5], n_samples=64)
    np.testing.assert_allclose(table.loc[series[0].id].values, first.values, atol=0.2)
    ahead = fitted.predict_interval(series, horizon=1.0, n_points=2, n_samples=64)
    assert np.allclose(ahead.index.get_level_values("time"), np.concatenate(list(own.values())))
    with pytest.raises(ValueError, match="no entry for series"):
        fitted.predict_quantiles(series, times={series[0].id: [1.0]})
    with pytest.raises(ValueError, match="either times or horizon"):
        fitted.predict_quantiles(series, times=[1.0], horizon=1.0)
    with pytest.raises(ValueError, match="horizon"):
        fitted.predict_quantiles(series, horizon=-1.0)
    with pytest.raises(ValueError, match="q must be"):
        fitted.predict_quantiles(series, q=[])


def test_predict_and_sample_take_each_series_own_times(spirals, fitted):
    series = spirals.test[:3]
    own = {series[0].id: [0.5, 1.0], series[1].id: [2.0], series[2].id: [0.1, 0.2, 0.3]}
    mean = fitted.predict(series, times=own, n_samples=8)
    assert mean.dims == ("series", "step", "feature") and mean.sizes["step"] == 3
    assert mean.time.dims == ("series", "step")
    np.testing.assert_array_equal(mean.time.values[1], [2.0, np.nan, np.nan])
    assert np.isnan(mean.values[1, 1:]).all() and np.isfinite(mean.values[2]).all()
    # one chunk: the same draws as the common grid of the union of the times
    union = fitted.predict(series, times=[0.1, 0.2, 0.3, 0.5, 1.0, 2.0], n_samples=8)
    for k, s in enumerate(series):
        for j, t in enumerate(own[s.id]):
            expected = union.sel(series=s.id, time=t).values
            np.testing.assert_allclose(mean.values[k, j], expected, rtol=1e-6)
    # sample too: the same draws of the latent path at each series' own times (the noise is
    # drawn at those times only), padding blank
    drawn = fitted.sample(series, times=own, n_samples=8, include_latent=True)
    union_times = [0.1, 0.2, 0.3, 0.5, 1.0, 2.0]
    on_union = fitted.sample(series, times=union_times, n_samples=8, include_latent=True)
    assert drawn.obs.dims == ("sample", "series", "step", "feature")
    assert drawn.z.dims == ("sample", "series", "step", "latent")
    for k, s in enumerate(series):
        picked = on_union.z.sel(series=s.id, time=own[s.id]).values
        np.testing.assert_allclose(drawn.z.values[:, k, : len(own[s.id])], picked, rtol=1e-6)
        mean = drawn.obs.values[:, k, : len(own[s.id])].mean(0)
        assert np.isfinite(mean).all()
    assert np.isnan(drawn.obs.values[:, 1, 1:]).all() and np.isnan(drawn.z.values[:, 1, 1:]).all()
    # the quantiles at own times are those of the same draws (numpy's, at q (n + 1)), one row
    # per own time: the padding steps neither add rows nor enter a quantile
    q = [0.1, 0.5, 0.9]
    table = fitted.predict_quantiles(series, times=own, q=q, n_samples=8)
    assert len(table) == sum(len(t) for t in own.values())
    for k, s in enumerate(series):
        n = len(own[s.id])
        expected = np.quantile(drawn.obs.values[:, k, :n], q, axis=0, method="weibull")
        got = table.loc[s.id].to_numpy().reshape(n, 2, len(q)).transpose(2, 0, 1)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    draws = fitted.sample(series, horizon=1.0, n_points=4, n_samples=5, include_latent=True)
    assert draws.obs.shape == (5, 3, 4, 2) and draws.z0.shape == (5, 3, 3)
    for k, s in enumerate(series):
        np.testing.assert_allclose(draws.time.values[k], s.times[-1] + np.arange(1, 5) / 4)


def test_times_as_a_long_frame_of_series_and_time(spirals, fitted):
    import pandas as pd

    series = spirals.test[:3]
    own = {series[0].id: [0.5, 1.0], series[1].id: [2.0], series[2].id: [0.1, 0.3, 0.2]}
    rows = [(sid, t) for sid, ts in own.items() for t in ts]
    long = pd.DataFrame(rows, columns=["series", "time"])
    own[series[2].id].sort()  # a mapping's grids must be increasing; a long frame is sorted
    by_mapping = fitted.predict_quantiles(series, times=own, q=[0.5], n_samples=16)
    for frame in (long, long.set_index(["series", "time"]), long.rename(columns=str.upper)):
        table = fitted.predict_quantiles(series, times=frame, q=[0.5], n_samples=16)
        pd.testing.assert_frame_equal(table, by_mapping)
    np.testing.assert_allclose(table.loc[series[2].id].index.values, [0.1, 0.2, 0.3])
    assert fitted.predict(series, times=long, n_samples=4).sizes["step"] == 3
    with pytest.raises(ValueError, match="columns 'series' and 'time'"):
        fitted.predict(series, times=long.rename(columns=str.upper).assign(extra=1.0))
    with pytest.raises(ValueError, match="numbers in the data's time unit"):
        fitted.predict(series, times=long.assign(time="noon"))


def test_outputs_say_what_made_them(spirals, fitted):
    from latentode import LastValue, __version__

    mean = fitted.predict(spirals.test[:2], times=[1.0])
    assert mean.attrs["model"] == "LatentODE" and mean.attrs["latentode_version"] == __version__
    assert mean.attrs["time_origin"] == fitted.time_origin_
    assert fitted.sample(spirals.test[:2], times=[1.0], n_samples=4).attrs["calibrated"] == 0
    rule = LastValue().fit(spirals.train)
    assert rule.sample(spirals.test[:2], times=[1.0], n_samples=4).attrs["model"] == "LastValue"


@pytest.mark.filterwarnings("ignore:calibrated bands are asked for:UserWarning")
def test_calibrated_quantiles_are_exact_not_read_off_draws(spirals, fitted, tmp_path):
    calibrated = LatentODE.load(_saved(fitted, tmp_path)).calibrate(spirals.test[:30])
    context, target = hold_out(spirals.test[30:], last=2.0)
    grid = {c.id: s.times for c, s in zip(context, target, strict=True)}
    bands = calibrated.predict_interval(context, times=grid, coverage=0.9, n_samples=10)
    truth = np.concatenate([s.values for s in target])
    lower = bands.xs("lower", axis=1, level="bound").to_numpy()
    upper = bands.xs("upper", axis=1, level="bound").to_numpy()
    inside = (truth >= lower) & (truth <= upper)
    # ten draws per value: their sample 5-95% quantiles would cover about 0.9 x 9/11
    assert 0.8 <= inside.mean() <= 0.97
    _, _, _, draws = held_out_draws(calibrated, context, target, 10)
    spread = np.diff(np.quantile(draws, [0.05, 0.95], axis=0), axis=0)
    assert np.mean(upper - lower) > 1.1 * spread.mean()
    # one series at its own times: the same draws, so the same quantiles, as on its grid
    first = context[:1]
    times = grid[first[0].id]
    on_grid = calibrated.predict_quantiles(first, times=times, q=[0.05, 0.5, 0.95])
    on_own = calibrated.predict_quantiles(first, times={first[0].id: times}, q=[0.05, 0.5, 0.95])
    np.testing.assert_allclose(on_own.to_numpy(), on_grid.to_numpy(), rtol=1e-6)
    assert list(on_own.columns) == list(on_grid.columns)


def test_calibration_centres_on_noise_free_means_when_the_noise_is_too_wide(spirals):
    # a fixed noise far above the data's: each draw is mostly noise, so the average of 20
    # noisy draws wanders by about obs_std / sqrt(20) = 4.5, beyond the model's real errors
    # (centred on it, the 90% bands covered 0.67 and the draws' mean had 3x the error)
    wide = LatentODE(**{**FAST, "obs_std": 20.0}).fit(spirals.train)
    wide.calibrate(spirals.test[:30], last=2.0)
    context, target = hold_out(spirals.test[30:], last=2.0)
    table = evaluate({"wide": wide}, context, target, levels=[0.5, 0.9], n_samples=20)
    overall = table[table.feature == "all"].iloc[0]
    assert 0.8 <= overall.coverage_90 <= 0.97 and 0.38 <= overall.coverage_50 <= 0.62
    truth = np.concatenate([s.values for s in target])
    point = np.concatenate(
        [wide.predict(c, times=s.times).values[0] for c, s in zip(context, target, strict=True)]
    )
    assert overall.mse < 1.3 * np.nanmean((truth - point) ** 2)


def test_chunks_of_draws_grow_with_the_cell_budget():
    import torch

    from latentode._posterior import WIDEST_CELLS, _series_chunks, widest_cells

    assert widest_cells(torch.device("cpu")) == WIDEST_CELLS
    data = make_spirals(n_series=60, n_obs=20, random_state=0).train
    small = _series_chunks(data, 100, 20, 100, on_grid=256 * 100)
    large = _series_chunks(data, 100, 20, 100, on_grid=256 * 100, cells=32 * WIDEST_CELLS)
    for bounds in (small, large):  # consecutive, covering every series once
        assert bounds[0][0] == 0 and bounds[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert len(small) > 4 * len(large)
