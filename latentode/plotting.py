"""Matplotlib figures: posterior extrapolation with credible bands, latent trajectories,
training curves."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .datasets import as_dataset
from .metrics import draw_quantiles

__all__ = [
    "plot_latent",
    "plot_posterior",
    "plot_posterior_grid",
    "plot_reliability",
    "plot_training_curve",
]


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
    time_label: str | None = None,
    series_label: str = "series",
    legend: bool = True,
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
    time_label : str, optional
        The x axis' label; default "time", with the unit the model was fitted in if known.
    series_label : str, default "series"
        What a series is called in the title (e.g. the id column's name, "patient").
    legend : bool, default True

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
        q = draw_quantiles(d.transpose("sample", ...).values, [0.05, 0.25, 0.75, 0.95])
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
        ax.set_xlabel(_time_label(samples, time_label))
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{series_label} {series}")
    if legend:
        axes[0].legend(loc="best", fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def _time_label(samples, time_label):
    if time_label is not None:
        return time_label
    unit = samples.attrs.get("time_unit")
    return f"time ({unit})" if unit else "time"


def plot_posterior_grid(
    samples: xr.Dataset,
    observed=None,
    *,
    series=None,
    max_series=4,
    time_label=None,
    series_label="series",
):
    """:func:`plot_posterior` for several series: one row per series, one column per feature.

    Parameters
    ----------
    samples : xarray.Dataset
        Output of :meth:`latentode.LatentODE.sample`.
    observed : IrregularDataset, DataFrame or list of (times, values), optional
    series : sequence, optional
        Series ids; default the first ``max_series`` of ``samples``.
    max_series : int, default 4
    time_label, series_label : str, optional
        As in :func:`plot_posterior`. One legend for the figure is drawn below the panels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    series = list(samples.series.values[:max_series]) if series is None else list(series)
    n_features = samples.sizes["feature"]
    fig, axes = plt.subplots(
        len(series), n_features, figsize=(4.5 * n_features, 2.6 * len(series)), squeeze=False
    )
    for row, sid in enumerate(series):
        plot_posterior(
            samples,
            observed,
            series=sid,
            axes=axes[row],
            time_label=time_label,
            series_label=series_label,
            legend=False,
        )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small")
    fig.tight_layout(rect=(0, 0.5 / (2.6 * len(series)), 1, 1))  # room for the legend
    return fig


def plot_latent(samples: xr.Dataset, *, series=None, dims=(0, 1), n_draws=20, ax=None):
    """Latent trajectories ``z(t)`` in a plane of two latent dimensions.

    Parameters
    ----------
    samples : xarray.Dataset
        Output of :meth:`latentode.LatentODE.sample` with ``include_latent=True``:
        ``z (sample, series, time, latent)``.
    series : sequence, optional
        Series ids; default all (up to 10).
    dims : (int, int), default (0, 1)
        The latent dimensions on the axes.
    n_draws : int, default 20
        Posterior draws drawn per series (thin lines); the mean is a thick line, with a dot
        at the first query time.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    if "z" not in samples:
        raise ValueError(
            "samples hold no latent trajectories; call sample(..., include_latent=True)."
        )
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    series = list(samples.series.values[:10]) if series is None else list(series)
    i, j = dims
    for k, sid in enumerate(series):
        z = samples["z"].sel(series=sid)
        colour = f"C{k % 10}"
        for d in range(min(n_draws, z.sizes["sample"])):
            ax.plot(z[d, :, i], z[d, :, j], color=colour, alpha=0.15, lw=0.8)
        mean = z.mean("sample")
        ax.plot(mean[:, i], mean[:, j], color=colour, lw=2, label=f"series {sid}")
        ax.scatter([mean[0, i]], [mean[0, j]], color=colour, s=25, zorder=3)
    ax.set_xlabel(f"z[{i}]")
    ax.set_ylabel(f"z[{j}]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


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


def plot_reliability(table, *, ax=None):
    """Empirical against nominal coverage of central intervals, one line per model.

    Parameters
    ----------
    table : DataFrame
        Columns ``model``, ``nominal``, ``empirical``, as
        :func:`latentode.evaluation.reliability` returns it.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        Points above the diagonal: bands wider than they claim; below: too narrow.
    """
    plt = _pyplot()
    missing = {"model", "nominal", "empirical"} - set(getattr(table, "columns", []))
    if missing:
        raise ValueError(
            f"table lacks the columns {sorted(missing)}; pass what "
            "latentode.evaluation.reliability returns."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    for name, rows in table.groupby("model", sort=False):
        rows = rows.sort_values("nominal")
        ax.plot(rows["nominal"], rows["empirical"], marker="o", ms=3, label=str(name))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("empirical coverage on held-out values")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return ax
