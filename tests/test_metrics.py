import math

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from latentode.metrics import (
    crps,
    draw_quantiles,
    interval_coverage,
    mae,
    masked_mse,
    nlpd,
    rmse,
    series_feature_mse,
)

NAN = np.nan


def test_point_errors_skip_unobserved_entries():
    y = np.array([[1.0, NAN], [3.0, 4.0]])
    pred = np.array([[2.0, 100.0], [3.0, 2.0]])
    assert masked_mse(y, pred) == pytest.approx((1 + 0 + 4) / 3)
    assert rmse(y, pred) == pytest.approx(math.sqrt(5 / 3))
    assert mae(y, pred) == pytest.approx(1.0)
    assert masked_mse(y, pred, mask=[[True, True], [False, True]]) == pytest.approx(2.5)
    # xarray in, same answer
    assert rmse(xr.DataArray(y), xr.DataArray(pred)) == pytest.approx(rmse(y, pred))


def test_crps_matches_the_gaussian_closed_form_and_a_point_mass():
    rng = np.random.default_rng(0)
    y = np.array([0.0, 1.0, -2.0])
    draws = rng.normal(size=(40_000, 3))
    z = y  # standard normal predictive
    closed = z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi)
    assert crps(y, draws) == pytest.approx(closed.mean(), abs=0.01)
    point = np.full((5, 3), 0.5)
    assert crps(y, point) == pytest.approx(np.abs(0.5 - y).mean())
    # the sample axis may be elsewhere
    assert crps(y, draws.T, sample_axis=-1) == pytest.approx(crps(y, draws))


def test_coverage_of_a_calibrated_predictive():
    rng = np.random.default_rng(1)
    y = rng.normal(size=4000)
    draws = rng.normal(size=(2000, 4000))
    assert interval_coverage(y, draws, coverage=0.9) == pytest.approx(0.9, abs=0.02)
    assert interval_coverage(y, 0.1 * draws, coverage=0.9) < 0.2  # overconfident
    # a few draws per value: a value exchangeable with them is inside the band read off them
    # with its nominal probability (sample quantiles at numpy's default positions: 0.9 x 19/21)
    few = rng.normal(size=(20, 40000))
    truth = rng.normal(size=40000)
    assert interval_coverage(truth, few, coverage=0.9) == pytest.approx(0.9, abs=0.01)
    assert interval_coverage(truth, few, coverage=0.5) == pytest.approx(0.5, abs=0.01)


def test_nlpd_reduces_to_the_gaussian_and_mixes_draws():
    y = np.array([0.3, NAN, -1.0])
    one = np.array([[0.0, 0.0, 0.0]])
    expected = -stats.norm.logpdf([0.3, -1.0], scale=0.5).mean()
    assert nlpd(y, one, 0.5) == pytest.approx(expected)
    two = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mix = 0.5 * (stats.norm.pdf([0.3, -1.0], 0, 0.5) + stats.norm.pdf([0.3, -1.0], 1, 0.5))
    assert nlpd(y, two, 0.5) == pytest.approx(-np.log(mix).mean())


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="y_pred has shape"):
        rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no observed"):
        mae(np.full(3, NAN), np.zeros(3))
    with pytest.raises(ValueError, match="samples have shape"):
        crps(np.zeros(3), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="coverage must be"):
        interval_coverage(np.zeros(3), np.zeros((10, 3)), coverage=1.5)
    with pytest.raises(ValueError, match="scale must be positive"):
        nlpd(np.zeros(3), np.zeros((2, 3)), 0.0)


def test_series_feature_mse_averages_per_pair_and_handles_unobserved_pairs():
    nan = np.nan
    y = np.array(
        [
            [[1.0, nan], [2.0, nan], [3.0, nan]],  # feature 1 never observed in series 0
            [[0.0, 1.0], [nan, nan], [nan, 3.0]],
        ]
    )
    pred = np.array(
        [
            [[2.0, 9.0], [2.0, 9.0], [5.0, 9.0]],
            [[1.0, 1.0], [7.0, 7.0], [7.0, 1.0]],
        ]
    )
    # pairs: (0, 0): (1 + 0 + 4) / 3; (1, 0): 1 / 1; (1, 1): (0 + 4) / 2; (0, 1) unobserved
    pairs = [5 / 3, 1.0, 2.0]
    assert series_feature_mse(y, pred) == pytest.approx(np.mean(pairs))
    assert series_feature_mse(y, pred, unobserved="zero") == pytest.approx(sum(pairs) / 4)
    # entries count equally in masked_mse, pairs do here
    assert masked_mse(y, pred) == pytest.approx((1 + 0 + 4 + 1 + 0 + 4) / 6)
    # a leading sample axis: the mean of the per-draw errors
    draws = np.stack([pred, np.nan_to_num(y)])  # second draw is exact
    assert series_feature_mse(y, draws) == pytest.approx(np.mean(pairs) / 2)
    mask = np.isfinite(y)
    mask[1] = False
    assert series_feature_mse(y, pred, mask) == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="unobserved must be"):
        series_feature_mse(y, pred, unobserved="nan")
    with pytest.raises(ValueError, match="y_pred has shape"):
        series_feature_mse(y, pred[:, :2])
    with pytest.raises(ValueError, match=r"\(series, time, feature\)"):
        series_feature_mse(y[0], pred[0])


def test_interval_score_is_width_plus_the_penalty_for_values_outside():
    from latentode.metrics import interval_score

    draws = np.linspace(-1, 1, 1001)[:, None] * np.ones((1, 3))  # central 90%: about +-0.9
    low, high = np.quantile(draws[:, 0], [0.05, 0.95], method="weibull")
    y = np.array([0.0, 1.4, np.nan])  # inside; above the interval; not observed
    # the width twice, and (2 / 0.1) times the distance of the value outside
    expected = (2 * (high - low) + 20 * (1.4 - high)) / 2
    assert interval_score(y, draws, coverage=0.9) == pytest.approx(expected)
    assert expected == pytest.approx((1.8 + 1.8 + 10) / 2, abs=0.05)
    narrow = interval_score(y, 0.1 * draws, coverage=0.9)
    assert narrow > interval_score(y, draws, coverage=0.9)  # too narrow scores worse
    with pytest.raises(ValueError, match="coverage"):
        interval_score(y, draws, coverage=1.0)


@pytest.mark.parametrize("n", [1, 7, 200])
def test_draw_quantiles_are_numpys_weibull_quantiles(n):
    rng = np.random.default_rng(3)
    draws = rng.normal(size=(n, 4, 5, 3))
    draws[rng.random(draws.shape) < 0.01] = np.nan  # a NaN draw makes its column NaN
    levels = [0.0, 0.01, 0.05, 0.25, 0.5, 0.9, 0.995, 1.0]
    expected = np.quantile(draws, levels, axis=0, method="weibull")
    got = draw_quantiles(draws, levels)
    assert got.shape == (len(levels), 4, 5, 3)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert draw_quantiles(draws[:, 0, 0, 0], 0.5).shape == (1,)


def test_draw_quantiles_reject_levels_outside_the_unit_interval():
    with pytest.raises(ValueError, match="levels"):
        draw_quantiles(np.zeros((3, 2)), [0.5, 1.5])
    with pytest.raises(ValueError, match="at least one draw"):
        draw_quantiles(np.zeros((0, 2)), [0.5])
    with pytest.raises(ValueError, match="at least one draw"):
        draw_quantiles(np.float64(1.0), [0.5])
