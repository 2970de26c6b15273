import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from latentode import LatentODE  # noqa: E402
from latentode.datasets import make_spirals  # noqa: E402
from latentode.plotting import (  # noqa: E402
    plot_latent,
    plot_posterior,
    plot_posterior_grid,
    plot_training_curve,
)


@pytest.fixture(scope="module")
def fitted():
    data = make_spirals(n_series=30, n_obs=15, random_state=0)
    model = LatentODE(max_epochs=2, latent_dim=3, random_state=0).fit(data.train)
    return data, model


def test_posterior_plot_content(fitted, tmp_path):
    data, model = fitted
    times = np.concatenate([data.times, data.test_extrapolation_times])
    draws = model.sample(data.test[:2], times=times, n_samples=30)
    sid = data.test.ids[0]
    fig = plot_posterior(draws, data.test, series=sid)
    assert len(fig.axes) == 2
    for ax, feature in zip(fig.axes, ["x", "y"], strict=True):
        assert ax.get_ylabel() == feature and ax.get_xlabel() == "time"
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 2  # 50% and 90%
        mean_line = ax.lines[0]
        assert np.allclose(mean_line.get_xdata(), times)
        # the observed points and the end-of-observation marker
        assert ax.collections[-1].get_offsets().shape == (15, 2)
        assert ax.lines[-1].get_xdata()[0] == pytest.approx(data.test[0].times[-1])
    path = tmp_path / "posterior.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="not in the samples"):
        plot_posterior(draws, series="nope")


def test_training_curve(fitted):
    _, model = fitted
    ax = plot_training_curve(model.history_)
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 2
    assert "ELBO" in ax.get_ylabel()


def test_posterior_grid_has_a_row_per_series(fitted):
    data, model = fitted
    draws = model.sample(data.test[:3], times=data.test_extrapolation_times, n_samples=20)
    fig = plot_posterior_grid(draws, data.test)
    assert len(fig.axes) == 3 * 2
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"series {sid}" for sid in data.test.ids[:3]]
    assert [ax.get_ylabel() for ax in fig.axes] == ["x", "y"] * 3


def test_latent_plot_draws_mean_and_draw_lines(fitted):
    data, model = fitted
    t = data.test_extrapolation_times[:10]
    draws = model.sample(data.test[:2], times=t, n_samples=8, include_latent=True)
    ax = plot_latent(draws, dims=(0, 2), n_draws=5)
    assert ax.get_xlabel() == "z[0]" and ax.get_ylabel() == "z[2]"
    assert len(ax.lines) == 2 * (5 + 1)  # per series: five draws and the mean
    mean0 = draws["z"].isel(series=0).mean("sample")
    assert np.allclose(ax.lines[5].get_xdata(), mean0[:, 0]) and len(ax.lines[5].get_xdata()) == 10
    with pytest.raises(ValueError, match="include_latent=True"):
        plot_latent(model.sample(data.test[:1], times=t, n_samples=2))
