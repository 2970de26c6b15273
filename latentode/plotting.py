"""Matplotlib figures: posterior extrapolation with credible bands, training curves."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .datasets import as_dataset

__all__ = ["plot_posterior", "plot_training_curve"]


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def plot_posterior(
    samples: xr.Dataset,
    observed=None,
    *,
    series,
    features=None,
    truth: xr.DataArray | None = None,
    axes=None,
    colour: str = "C0",
):
    """Posterior mean with 50% and 90% credible bands for one series, one panel per feature.

    Parameters
    ----------
    samples : xarray.Dataset
        Output of :meth:`latentode.LatentODE.sample`: ``obs`` and ``mean`` of dims
        (sample, series, time, feature).
    observed : IrregularDataset, DataFrame or list of (times, values), optional
        The data the posterior was conditioned on; its points are drawn, and a dashed line
        marks the end of the series' observations (where extrapolation begins).
    series : hashable
        The series id to draw.
    features : list of str, optional
        Default all features.
    truth : xarray.DataArray of dims (time, feature), optional
        A reference trajectory to draw (e.g. the noise-free signal).
    axes : sequence of matplotlib Axes, optional
        One per feature; created when not given.
    colour : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    if series not in list(samples.series.values):
        raise ValueError(
            f"series={series!r} is not in the samples; they hold {list(samples.series.values)[:5]}"
            "..."
        )
    features = list(samples.feature.values) if features is None else list(features)
    if axes is None:
        fig, axes = plt.subplots(
            len(features), 1, figsize=(7, 2.4 * len(features)), sharex=True, squeeze=False
        )
        axes = axes[:, 0]
    fig = axes[0].figure
    draws = samples["obs"].sel(series=series)
    means = samples["mean"].sel(series=series).mean("sample")
    t = samples.time.values
    obs_series = None
    if observed is not None:
        data = as_dataset(observed, name="observed")
        if series in data.ids:
            obs_series = data[data.ids.index(series)]
            names = data.feature_names
    for ax, feature in zip(axes, features, strict=True):
        d = draws.sel(feature=feature)
        q = d.quantile([0.05, 0.25, 0.75, 0.95], dim="sample").values
        ax.fill_between(t, q[0], q[3], color=colour, alpha=0.18, lw=0, label="90% interval")
        ax.fill_between(t, q[1], q[2], color=colour, alpha=0.35, lw=0, label="50% interval")
        ax.plot(t, means.sel(feature=feature), color=colour, lw=1.8, label="posterior mean")
        if truth is not None:
            ax.plot(truth.time, truth.sel(feature=feature), color="k", lw=1, ls=":", label="truth")
        if obs_series is not None:
            j = names.index(feature)
            seen = ~np.isnan(obs_series.values[:, j])
            ax.scatter(
                obs_series.times[seen],
                obs_series.values[seen, j],
                s=14,
                color="k",
                zorder=3,
                label="observed",
            )
            ax.axvline(
                obs_series.times[-1], color="0.4", ls="--", lw=1, label="end of observations"
            )
        ax.set_ylabel(str(feature))
        ax.set_xlabel("time")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"series {series}")
    axes[0].legend(loc="best", fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def plot_training_curve(history, *, ax=None):
    """Negative ELBO per series by epoch (and validation, when recorded).

    Parameters
    ----------
    history : TrainingHistory
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, len(history.loss) + 1)
    ax.plot(epochs, history.loss, label="training")
    if history.val_loss:
        ax.plot(epochs[: len(history.val_loss)], history.val_loss, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per series")
    ax.set_yscale("symlog")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
