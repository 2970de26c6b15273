import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from latentode import LatentODE  # noqa: E402
from latentode.datasets import make_spirals  # noqa: E402
from latentode.plotting import plot_posterior, plot_training_curve  # noqa: E402


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
