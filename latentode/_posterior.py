"""The posterior predictive of a fitted Latent ODE: point forecasts, draws, quantiles, scores.

:class:`PosteriorPredictiveMixin` gives an estimator whose ``model_`` is a
:class:`~latentode.models.LatentODEModel` its ``predict``, ``sample``, ``predict_quantiles``,
``predict_interval``, ``to_inference_data``, ``score_samples`` and ``score``, all in the data's
units and on the xarray and pandas layouts of the package.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings

import numpy as np
import pandas as pd
import torch
import xarray as xr
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from ._base import PREDICT_CHUNK, IntervalMixin, seed_from, serialised
from ._empirical import BinnedEmpirical
from ._query import chunks
from ._validation import integer
from .datasets import collate
from .evaluation import NothingHeldOut, gaps_to, held_out_draws, hold_out
from .inference import make_inference_data, per_series_elbo, posterior_predictive
from .inference.predictive import QueryPathsError
from .metrics import draw_quantiles

__all__ = ["PosteriorPredictiveMixin"]

logger = logging.getLogger(__name__)

_N_SAMPLES = integer("n_samples", low=1)
_IMPORTANCE = integer("importance_samples", low=0)
#: Held-out values a feature needs for a calibration of its own (else all features pooled).
_MIN_PER_FEATURE = 30
#: Held-out values a calibration needs at the least.
_MIN_VALUES = 50
#: Standardised errors kept per bin in a saved calibration.
_KEEP = 1000

#: Values the widest tensor of one chunk of posterior draws may hold (16 MB in float32): a
#: decoder layer of width 100 over 32 draws x 200 series x 100 times would hold 64 M at once.
WIDEST_CELLS = 4_000_000
#: On a CUDA device a chunk may be up to this many times larger (fewer, larger kernel launches),
#: its widest tensor within ``1 / CUDA_FREE_SHARE`` of the device's free memory.
CUDA_CELLS_FACTOR = 32
CUDA_FREE_SHARE = 64


def widest_cells(device: torch.device) -> int:
    """Values the widest tensor of one chunk of draws may hold on ``device``:
    :data:`WIDEST_CELLS` on the CPU; on a CUDA device up to ``CUDA_CELLS_FACTOR`` times that,
    as the device's free memory allows (a GPU's time goes into launching the solver's many
    small kernels, so it gains from large chunks; a CPU does not)."""
    if device.type != "cuda":
        return WIDEST_CELLS
    free, _ = torch.cuda.mem_get_info(device)
    bound = free // (4 * CUDA_FREE_SHARE)  # float32 bytes
    return int(max(WIDEST_CELLS, min(CUDA_CELLS_FACTOR * WIDEST_CELLS, bound)))


class PosteriorPredictiveMixin(IntervalMixin):
    """Prediction and scoring through the posterior predictive of a fitted Latent ODE.

    Needs the scaling, batching and seeding of
    :class:`~latentode._base.IrregularSeriesEstimator` and a fitted ``model_``.
    """

    def _draw_width(self) -> int:
        """The widest of features, latent state and hidden layers: what one draw of one
        series at one time holds at most."""
        return max(
            len(self.feature_names_in_),
            self.latent_dim,
            getattr(self, "decoder_hidden_dim", 0),
            getattr(self, "ode_hidden_dim", 0),
        )

    def _proposal_width(self) -> int:
        """What one importance proposal of one series holds at each time of its chunk's union
        grid once it is decoded and scored block by block (and at its own times only): its
        latent state, with the cumulative intensities of a Poisson model."""
        n_features = len(self.feature_names_in_)
        return self.latent_dim + (n_features if getattr(self, "poisson", False) else 0)

    def _own_chunks(self) -> dict:
        """Chunk sizing of draws at each series' own times (see :mod:`latentode._query`)."""
        return {"width": self._draw_width(), "cells": widest_cells(self.device_)}

    def _draw(self, X, times, n_samples: int, *, sites, positions=None, entries=None):
        """Posterior predictive draws at query times, chunked over series; with ``positions``
        (ndarray of shape (series, own)), at each series' positions on the query times only;
        ``entries`` (bool ndarray of shape (series, time, features) on the query times), the
        entries wanted: noise is drawn and a same-time readout read there only (see
        ``wanted`` of :func:`latentode.inference.posterior_predictive`).

        Returns
        -------
        data : IrregularDataset
        t : ndarray of shape (time,)
        draws : dict of str to Tensor
            As :func:`latentode.inference.posterior_predictive` returns them (model units),
            concatenated over series.
        """
        check_is_fitted(self)
        _N_SAMPLES.check(n_samples)
        proposals = getattr(self, "importance_samples", 0)  # set on a fitted model: check
        _IMPORTANCE.check(proposals)
        data = self._check_data(X)
        t = self._check_times(times, data)
        query = self._model_times(t, self.device_)
        if entries is not None:
            entries = _check_entries(entries, (len(data), len(t), self.n_features_in_))
        chunks = []
        with self._seeded(seed_from(self.random_state), self.device_):
            width, cells = self._draw_width(), widest_cells(self.device_)
            # values per series and observation time: the importance proposals' paths and
            # scores (decoded block by block below, so only the paths' own width counts),
            # and with anchor="path" the draws decoded on that grid too
            on_grid = proposals * self._proposal_width()
            if getattr(self, "anchor", False) == "path":
                on_grid = max(on_grid, n_samples * width)
            for start, stop in _series_chunks(
                data, n_samples, len(t), width, on_grid=on_grid, cells=cells
            ):
                batch = self._batch(data[start:stop], self.device_)
                block = max(1, cells // ((stop - start) * batch.times.numel() * width))
                try:
                    drawn = posterior_predictive(
                        self.model_,
                        batch.times,
                        batch.values,
                        batch.mask,
                        query,
                        n_samples=n_samples,
                        sites=sites,
                        static=batch.context,
                        n_proposals=proposals,
                        proposal_block=block,
                        query_index=None
                        if positions is None
                        else torch.as_tensor(positions[start:stop], device=self.device_),
                        wanted=None
                        if entries is None
                        else torch.as_tensor(entries[start:stop], device=self.device_),
                    )
                except QueryPathsError as err:
                    raise self._unsolved(err, t) from err
                chunks.append(drawn)
        return data, t, {s: torch.cat([c[s] for c in chunks], dim=1) for s in sites}

    def _unsolved(self, err: QueryPathsError, t: np.ndarray) -> QueryPathsError:
        """The draws' paths could not be solved to the query times ``t``, said for a
        prediction: how far the times reach beyond the training span and what to change."""
        reason = err.reason
        start, span = self.time_origin_, self.time_scale_
        before, after = (start - t[0]) / span, (t[-1] - start - span) / span
        if max(before, after) > 1.0:
            side = (
                f"reach {t[-1]:g}, {after:.1f} times the training span past its last time"
                if after >= before
                else f"start at {t[0]:g}, {before:.1f} times the training span before its "
                "first time"
            )
            advice = (
                f"the query times {side}, where the fitted dynamics were never checked "
                "against data and the paths of some draws diverge: ask for times closer to "
                "the training span"
            )
        else:
            advice = (
                "the fitted dynamics diverge near the data: refit (longer, or with a smaller "
                "learning rate) or loosen the solver's tolerances (rtol, atol)"
            )
        return QueryPathsError(
            f"the latent paths of the posterior draws could not be solved to the query times "
            f"({reason}); {advice}.",
            reason=reason,
        )

    @serialised
    def predict(
        self, X, *, times=None, horizon=None, n_points: int = 20, n_samples: int = 32
    ) -> xr.DataArray:
        """Posterior mean of the series at query times, given their observed points.

        Times inside a series' observed window interpolate it; later times extrapolate.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
            The series to condition on.
        times : array-like of shape (time,), mapping or DataFrame, optional
            Increasing query times in the data's units, one grid for every series or each
            series' own: a mapping of series id to times, or a long DataFrame with ``series``
            and ``time`` columns; default the union of the series' observation times. Any times
            are allowed, also before a series' first observation or the training data's first
            time: ``z0`` is the state at the training data's first time (``time_origin_``),
            solved forwards and backwards from there. Times more than twice the training span
            outside it draw a warning.
        horizon : float, optional
            Instead of ``times``: ``n_points`` evenly spaced times after each series' own last
            observation, up to that time plus ``horizon``.
        n_points : int, default 20
        n_samples : int, default 32
            Monte Carlo draws of ``z0`` averaged for the mean.

        Returns
        -------
        xarray.DataArray of shape (series, time, feature)
            In the data's units, with series ids, times and feature names as coordinates.
            With per-series times (a mapping or ``horizon``), of shape (series, step,
            feature) instead, ``time`` a coordinate of dims (series, step) with each series'
            own times (NaN-padded where a series has fewer).
        """
        own = self._own_grids(X, times, horizon, n_points)
        if own is not None:
            data, grids = own
            longest = max(len(g) for g in grids)
            values = np.full((len(data), longest, self.n_features_in_), np.nan)
            stamps = np.full((len(data), longest), np.nan)
            for start, stop, draws, t, valid in self._own_time_draws(
                data, grids, n_samples, ("mean",)
            ):
                mean = self._unscale_values(draws["mean"].mean(0))
                values[start:stop] = np.where(valid[..., None], mean, np.nan)
                stamps[start:stop] = np.where(valid, t, np.nan)
            coords = self._coords(data, np.arange(longest))
            coords["step"] = coords.pop("time")
            coords["time"] = (("series", "step"), stamps)
            dims = ("series", "step", "feature")
        else:
            data, t, draws = self._draw(X, times, n_samples, sites=("mean",))
            values = self._unscale_values(draws["mean"].mean(0))
            coords, dims = self._coords(data, t), ("series", "time", "feature")
        attrs = self._attrs(quantity="posterior predictive mean", n_samples=n_samples)
        return xr.DataArray(values, dims=dims, coords=coords, name="mean", attrs=attrs)

    @serialised
    def sample(
        self,
        X,
        *,
        times=None,
        horizon=None,
        n_points: int = 20,
        n_samples: int = 100,
        include_latent: bool = False,
        calibrated: bool = True,
        entries=None,
    ) -> xr.Dataset:
        """Draws from the posterior predictive distribution at query times.

        Runs the model's generative mode, vectorised over the draws (see
        :func:`latentode.inference.posterior_predictive`): draws of ``z0`` given each series —
        the guide's ``q(z0 | x)`` importance-resampled toward the series' posterior (see
        ``importance_samples``), or ``q``'s own draws with ``importance_samples=0`` — solved
        to ``times``, decoded, and observation noise drawn. Draws are reproducible for a given
        ``random_state``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), mapping or DataFrame, optional
            One grid for every series or each series' own (a mapping of series id to times, or
            a long DataFrame with ``series`` and ``time`` columns); default the union of the
            series' observation times.
        horizon, n_points
            Instead of ``times``, as in :meth:`predict`.
        n_samples : int, default 100
        include_latent : bool, default False
            Also return the latent trajectories ``z``.
        calibrated : bool, default True
            After :meth:`calibrate`, ``obs`` is drawn from the calibrated predictive (False:
            the model's own); without a calibration it has no effect.
        entries : array-like of bool, shape (series, time, feature), optional
            With one grid of ``times`` for every series: the entries wanted (say, the missing
            values to impute); ``obs`` and ``mean`` are NaN at the others. The wanted entries
            are drawn from the same predictive as without it (``mean`` is the same, ``obs``
            other draws of the same noise), but observation noise is drawn there only, and a
            model with a same-time readout (``same_time_readout``), which costs a hidden layer
            per entry it reads, reads there only: where a few entries of many features are
            wanted at each time, much faster.

        Returns
        -------
        xarray.Dataset
            ``obs (sample, series, time, feature)``: draws including observation noise (and
            the calibration, if any);
            ``mean (sample, series, time, feature)``: the decoded trajectory of each draw;
            ``intensity (sample, series, time, feature)``: the expected number of observations
            per unit of time of each feature, for models fitted with ``poisson=True``;
            ``z0 (sample, series, latent)`` and ``z (sample, series, time, latent)`` when
            ``include_latent``. Values in the data's units (float32, the precision the draws
            are made in), times in the data's time units.
            With per-series times, ``time`` becomes ``step`` as in :meth:`predict`.
        """
        sites = ["mean", "obs"]
        if self.poisson:
            sites.append("intensity")
        if include_latent:
            sites += ["z0", "z"]
        calibrated = calibrated and getattr(self, "calibration_", None) is not None
        own = self._own_grids(X, times, horizon, n_points)
        if own is not None and entries is not None:
            raise ValueError(
                "entries needs one grid of query times for every series (times as an "
                "array); with per-series times or horizon, leave entries out."
            )
        if own is None:
            data, t, draws = self._draw(X, times, n_samples, sites=tuple(sites), entries=entries)
            wanted = None if entries is None else np.asarray(entries, dtype=bool)
            with self._one_reach_warning():
                variables = self._in_data_units(draws, data, t, calibrated, wanted)
            if wanted is not None:  # obs is NaN there already: no noise was drawn
                variables["mean"] = np.where(wanted, variables["mean"], np.float32(np.nan))
            coords, along = self._coords(data, t), "time"
        else:
            data, grids = own
            with self._one_reach_warning():
                variables, t = self._draws_on_own_times(data, grids, n_samples, sites, calibrated)
            coords = self._coords(data, np.arange(t.shape[1]))
            coords["step"] = coords.pop("time")
            coords["time"] = (("series", "step"), t)
            along = "step"
        coords["sample"] = np.arange(n_samples)
        if include_latent:
            coords["latent"] = np.arange(self.latent_dim)
        dims = {
            "obs": ("sample", "series", along, "feature"),
            "mean": ("sample", "series", along, "feature"),
            "intensity": ("sample", "series", along, "feature"),
            "z0": ("sample", "series", "latent"),
            "z": ("sample", "series", along, "latent"),
        }
        return xr.Dataset(
            {name: (dims[name], value) for name, value in variables.items()},
            coords=coords,
            attrs=self._attrs(calibrated=int(calibrated)),
        )

    def _in_data_units(
        self, draws: dict, data, t: np.ndarray, calibrated: bool, entries=None
    ) -> dict:
        """Draws of :meth:`_draw` (model units, tensors) as arrays in the data's units, ``obs``
        calibrated when asked (at ``entries`` only, when given); ``t`` the query times,
        (time,) or each series' (series, time).
        """
        out = {"obs": self._draws_in_data_units(draws["obs"])}
        if "mean" in draws:
            out["mean"] = self._draws_in_data_units(draws["mean"])
        if calibrated:
            out["obs"] = self._calibrated(out["obs"], out["mean"], data, t, entries)
        if "intensity" in draws:  # model intensities are per unit of rescaled time
            out["intensity"] = draws["intensity"].float().cpu().numpy() / float(self.time_scale_)
        for name in ("z0", "z"):
            if name in draws:
                out[name] = draws[name].cpu().numpy()
        return out

    def _own_time_draws(self, data, grids: list, n_samples: int, sites):
        """Draws at each series' own times in model units, chunk by chunk of series: the
        latent paths are solved on the union of the chunk's grids and decoded and drawn at
        each series' own times only.

        Yields
        ------
        start, stop : int
            The chunk's series, ``data[start:stop]``.
        draws : dict of str to Tensor
            As :meth:`_draw` gives them, with ``step`` (up to the longest grid of all series)
            in place of ``time``.
        times : ndarray of shape (stop - start, step)
            Each series' own times; padding steps hold the chunk's first time.
        valid : BoolArray of shape (stop - start, step)
            False on padding steps.
        """
        longest = max(len(g) for g in grids)
        cells = widest_cells(self.device_)
        for start, stop, grid in chunks(grids, n_samples, self._draw_width(), cells):
            position = np.zeros((stop - start, longest), dtype=np.int64)
            valid = np.zeros((stop - start, longest), dtype=bool)
            for k, g in enumerate(grids[start:stop]):
                position[k, : len(g)] = np.searchsorted(grid, g)
                valid[k, : len(g)] = True
            _, _, draws = self._draw(
                data[start:stop], grid, n_samples, sites=tuple(sites), positions=position
            )
            yield start, stop, draws, grid[position], valid

    def _own_time_chunks(self, data, grids: list, n_samples: int, sites, calibrated: bool):
        """:meth:`_own_time_draws` converted to the data's units (and calibrated).

        Yields
        ------
        start, stop : int
            The chunk's series, ``data[start:stop]``.
        variables : dict of str to ndarray
            As :meth:`_in_data_units`, with ``step`` (up to the longest grid of all series)
            in place of ``time``, NaN where a series has fewer times.
        times : ndarray of shape (stop - start, step)
            Each series' own times, NaN-padded.
        """
        for start, stop, draws, t, valid in self._own_time_draws(data, grids, n_samples, sites):
            out = self._in_data_units(draws, data[start:stop], t, calibrated)
            for name, value in out.items():
                if name != "z0":
                    value[:, ~valid] = np.nan
            yield start, stop, out, np.where(valid, t, np.nan)

    def _draws_in_data_units(self, v: torch.Tensor) -> np.ndarray:
        """Draws (standardised model units) in the data's units, in float32 — the precision
        they were drawn in — converted on the tensor, without float64 copies of the draws."""
        v = v.detach().float()
        scale = torch.as_tensor(self.value_scale_, dtype=torch.float32, device=v.device)
        mean = torch.as_tensor(self.value_mean_, dtype=torch.float32, device=v.device)
        out = v.mul(scale).add_(mean).cpu().numpy()
        if self._logged() is not None:
            out = self._inverse(out).astype(np.float32)
        return out

    def _draws_on_own_times(self, data, grids: list, n_samples: int, sites, calibrated: bool):
        """:meth:`_own_time_chunks` joined: (variables, times) for all series."""
        variables, times = {}, []
        for start, stop, out, t in self._own_time_chunks(data, grids, n_samples, sites, calibrated):
            for name, value in out.items():  # written in place: no second copy of the draws
                if name not in variables:
                    shape = (value.shape[0], len(data), *value.shape[2:])
                    variables[name] = np.empty(shape, dtype=value.dtype)
                variables[name][:, start:stop] = value
            times.append(t)
        return variables, np.concatenate(times)

    @serialised
    def predict_quantiles(
        self,
        X,
        *,
        times=None,
        horizon=None,
        n_points: int = 20,
        q=(0.05, 0.5, 0.95),
        n_samples: int = 200,
    ) -> pd.DataFrame:
        """Quantiles of the posterior predictive (observation noise included).

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), mapping or DataFrame, optional
            One grid for every series, or each series' own times (a mapping of series id to
            times, or a long DataFrame with ``series`` and ``time`` columns); default each
            series at its own observation times.
        horizon : float, optional
            Instead of ``times``: ``n_points`` times evenly spaced after each series' own last
            observation, up to ``last + horizon`` (in the data's time unit).
        n_points : int, default 20
        q : float or sequence of float in (0, 1), default (0.05, 0.5, 0.95)
        n_samples : int, default 200
            Draws from which the quantiles are estimated. After :meth:`calibrate`, they give
            each value's mean and spread, and the quantiles are those of the calibrated
            predictive (``mean + sd *`` the calibration's quantile at the value's distance
            from the nearest observation), exact for any number of draws; without a
            calibration, the draws' own quantiles (at the plotting positions ``q (n + 1)``,
            numpy's "weibull").

        Returns
        -------
        DataFrame of shape (rows, features * len(q))
            Indexed by (series, time) — every series at every time of one grid, or each at its
            own times; columns a MultiIndex (feature, quantile), as sktime's
            ``predict_quantiles`` for panel data. In the data's units.
        """
        levels = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if levels.ndim != 1 or levels.size == 0 or not ((levels > 0) & (levels < 1)).all():
            raise ValueError(f"q must be quantile levels in (0, 1); got {q!r}.")
        if times is None and horizon is None:  # each series at its own observation times
            check_is_fitted(self)
            times = {s.id: s.times for s in self._check_data(X)}
        calibrated = getattr(self, "calibration_", None) is not None
        own = self._own_grids(X, times, horizon, n_points)
        if own is not None:
            with self._one_reach_warning():
                return self._quantiles_on_own_times(*own, levels, n_samples, calibrated)
        drawn = self.sample(X, times=times, n_samples=n_samples, calibrated=False)
        obs = drawn["obs"].transpose("sample", "series", "time", "feature")
        if calibrated:
            # read off the calibrated predictive itself (mean + sd x the calibration's
            # quantile), not off a finite number of draws from it, whose sample quantiles
            # make central intervals too narrow (about 0.9 x (n - 1) / (n + 1) at 90%)
            data = self._check_data(X)
            mean = drawn["mean"].transpose(*obs.dims).values
            with self._one_reach_warning():
                values = self._calibrated_quantiles(obs.values, mean, data, obs.time.values, levels)
        else:
            # at the plotting positions q (n + 1): bands of n draws cover their nominal share
            # of values like the draws (see latentode.metrics.interval_metrics)
            values = draw_quantiles(obs.values, levels)
        table = xr.DataArray(
            values,
            dims=("quantile", "series", "time", "feature"),
            coords={"quantile": levels, **{k: obs[k] for k in ("series", "time", "feature")}},
        )
        table = table.transpose("series", "time", "feature", ...)
        frame = table.to_series().unstack(["feature", "quantile"])
        columns = pd.MultiIndex.from_product(
            [list(obs.feature.values), list(levels)], names=["feature", "quantile"]
        )
        return frame.reindex(columns=columns)

    def _quantiles_on_own_times(
        self, data, grids: list, levels: np.ndarray, n_samples: int, calibrated: bool
    ) -> pd.DataFrame:
        """:meth:`predict_quantiles` with each series at its own times: the rows of those
        times only, series by series; the draws of one chunk of series at a time are held."""
        ids = np.asarray(data.ids, dtype=object)
        blocks, keys, stamps = [], [], []
        sites = ["mean", "obs"] if calibrated else ["obs"]
        for start, _, out, t in self._own_time_chunks(data, grids, n_samples, sites, False):
            obs, valid = out["obs"], np.isfinite(t)
            # rows of the valid (series, step), columns (feature, quantile) with the quantiles
            # varying fastest
            if calibrated:
                filled = np.where(valid, t, np.nanmin(t, axis=1, keepdims=True))
                values = self._calibrated_quantiles(
                    obs, out["mean"], data[start : start + len(t)], filled, levels
                )  # (quantile, series, step, feature)
                rows = values.transpose(1, 2, 3, 0)[valid]
            else:  # the padding steps' draws are not sorted
                rows = draw_quantiles(obs[:, valid], levels).transpose(1, 2, 0)
            blocks.append(rows.reshape(len(rows), -1))
            series, step = np.nonzero(valid)
            keys.append(ids[start + series])
            stamps.append(t[series, step])
        index = pd.MultiIndex.from_arrays(
            [np.concatenate(keys), np.concatenate(stamps)], names=["series", "time"]
        )
        columns = pd.MultiIndex.from_product(
            [[str(f) for f in self.feature_names_in_], list(levels)], names=["feature", "quantile"]
        )
        return pd.DataFrame(np.concatenate(blocks), index=index, columns=columns)

    @serialised
    def to_inference_data(self, X, *, n_samples: int = 100, log_likelihood: bool = False):
        """Posterior draws of the fitted model on ``X`` in ArviZ's container.

        Draws of ``z0`` are those of :meth:`sample` (one chain): the variational posterior
        ``q(z0 | x)``, importance-resampled unless ``importance_samples=0``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        n_samples : int, default 100
        log_likelihood : bool, default False
            Add the ``log_likelihood`` group, which ArviZ's ``loo`` and ``waic`` read. Their
            results are not valid here, and asking for the group warns: each series has its
            own ``z0``, drawn from an approximation of its posterior (``q(z0 | x)``, resampled
            from a finite number of proposals) rather than the exact posterior, so the
            importance weights of PSIS-LOO (and WAIC's variance penalty) do not estimate
            held-out fit (Pareto k far above 0.7 is typical).
            Compare models by held-out error and coverage
            (:func:`latentode.evaluation.evaluate`) or by :meth:`score` (the ELBO).

        Returns
        -------
        arviz.InferenceData (arviz < 1) or xarray.DataTree (arviz >= 1)
            Groups: ``posterior`` with ``z0 (chain, draw, series, latent)``;
            ``posterior_predictive`` with ``obs (chain, draw, series, time, feature)``;
            ``observed_data`` with ``obs (series, time, feature)``, NaN where not observed;
            with ``log_likelihood=True`` also ``log_likelihood`` with ``obs (chain, draw,
            series)``, each series' log-likelihood of its observed values in the data's units
            (the model's noise family). Times are the union of the series' observation times.
            The ``posterior`` group's attributes say the draws are variational.

        Warns
        -----
        UserWarning
            With ``log_likelihood=True``: ``loo``/``waic`` on these draws are not valid.
        """
        # heteroscedastic noise is a function of the latent path: draw it too
        state = ("z",) if log_likelihood and self.model_.noise.heteroscedastic else ()
        data, t, draws = self._draw(X, None, n_samples, sites=("z0", "mean", "obs", *state))
        if log_likelihood and getattr(self, "noise_rank", 0):
            raise ValueError(
                "to_inference_data(log_likelihood=True): with noise_rank > 0 the features of a "
                "time are scored jointly, not value by value; use score_samples for densities."
            )
        if log_likelihood:
            warnings.warn(
                "to_inference_data(log_likelihood=True): ArviZ's loo and waic on these draws are "
                "not valid estimates of held-out fit (the draws of z0 come from the variational "
                "posterior q(z0 | x), one per series); compare models with "
                "latentode.evaluation.evaluate on held-out values, or with score (the ELBO).",
                UserWarning,
                stacklevel=3,
            )
        z0 = draws["z0"]
        with torch.no_grad():  # (features,), or (draw, series, time, features) with the state
            noise = self.model_.noise(draws.get("z"))
        predictive = self._unscale_values(draws["obs"])[None]
        # densities on the model's scale (log for log features), then in the data's units
        loc = draws["mean"].cpu().double().numpy()[None] * self.value_scale_ + self.value_mean_
        sigma = noise.cpu().double().numpy() * self.value_scale_
        batch = collate(data, times_transform=None)
        observed = np.where(batch.mask.numpy(), batch.values.double().numpy(), np.nan)
        if self.model_.tails is None:
            log_density = stats.norm.logpdf(self._forward(observed), loc, sigma)
        else:  # the model's Student-t noise, its degrees of freedom per feature
            df = self.model_.tails().detach().cpu().double().numpy()
            log_density = stats.t.logpdf(self._forward(observed), df, loc, sigma)
        logged = self._logged()
        if logged is not None:  # the log transform's Jacobian
            log_density[..., logged] -= np.log(observed[..., logged] + self.value_shift_[logged])
        log_lik = np.nansum(log_density, axis=(-2, -1))
        coords = self._coords(data, t)
        coords.update(chain=[0], draw=np.arange(n_samples), latent=np.arange(self.latent_dim))
        draws = ("chain", "draw", "series")
        groups = {
            "posterior": xr.Dataset(
                {"z0": (draws + ("latent",), z0.cpu().double().numpy()[None])},
                coords=coords,
                attrs=self._attrs(inference="variational (amortised SVI), not MCMC"),
            ),
            "posterior_predictive": xr.Dataset(
                {"obs": (draws + ("time", "feature"), predictive)}, coords=coords
            ),
            "observed_data": xr.Dataset(
                {"obs": (("series", "time", "feature"), observed)}, coords=coords
            ),
        }
        if log_likelihood:
            groups["log_likelihood"] = xr.Dataset({"obs": (draws, log_lik)}, coords=coords)
        for name, group in groups.items():  # keep only the coordinates a variable uses
            used = {dim for var in group.data_vars.values() for dim in var.dims}
            groups[name] = group.drop_vars([c for c in group.coords if c not in used])
        return make_inference_data(groups)

    # -- evaluation --------------------------------------------------------------------------
    @serialised
    def score_samples(self, X, *, num_particles: int = 16) -> np.ndarray:
        """Evidence lower bound of each series, in the data's units (higher is better).

        The ELBO of the standardised data is corrected by the Jacobian of the standardisation
        (and of the time rescaling for the Poisson term), so it bounds the log-density of the
        series as given.

        Returns
        -------
        ndarray of shape (series,)
        """
        check_is_fitted(self)
        data = self._check_data(X)
        out = []
        log_scale = torch.as_tensor(np.log(self.value_scale_), dtype=torch.float32)
        with self._seeded(seed_from(self.random_state), self.device_):
            for i in range(0, len(data), PREDICT_CHUNK):
                batch = self._batch(data[i : i + PREDICT_CHUNK], self.device_)
                elbo = per_series_elbo(self.model_, batch, num_particles=num_particles).cpu()
                counts = batch.mask.sum(1).float().cpu()  # (batch, features)
                elbo = elbo - (counts * log_scale).sum(-1)
                elbo = elbo + torch.as_tensor(self._log_jacobian(data[i : i + PREDICT_CHUNK]))
                if self.poisson:
                    elbo = elbo - counts.sum(-1) * math.log(self.time_scale_)
                out.append(elbo.double().numpy())
        return np.concatenate(out)

    @serialised
    def score(self, X, y=None) -> float:
        """Mean per-series evidence lower bound (see :meth:`score_samples`); higher is better."""
        return float(np.mean(self.score_samples(X)))

    # -- calibration -----------------------------------------------------------------------
    @serialised
    def calibrate(
        self, X, *, last=None, after=None, n_last=None, fraction=None, n_samples: int = 200
    ):
        """Calibrate the predictive distribution on held-out values of ``X`` (split conformal).

        Parts of the series in ``X`` — which the model must not have been fitted on — are
        hidden (:func:`latentode.evaluation.hold_out`) and predicted from the rest; the
        standardised errors ``z = (y - mean) / sd`` (``mean`` the average of the draws'
        noise-free predictions, ``sd`` the spread of the draws with their noise), per feature
        and in bins of the time from the nearest observation, make the calibrated predictive
        ``mean + sd * Z`` with ``Z`` drawn from them. Its central intervals then cover their
        nominal share of values like those held out, whatever the model's own spread.
        :meth:`sample`, :meth:`predict_quantiles` and :meth:`predict_interval` use it from
        then on (and it is saved with the model); :meth:`predict` (the mean) is unchanged.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
            Calibration series, not seen in ``fit``.
        last, after, n_last, fraction : optional
            How to hide values, as in :func:`latentode.evaluation.hold_out`: each series'
            last window, what follows a common time, the last observation times, a random
            share of the values. Hide what the model will be asked to predict; several
            options are pooled. Without any: the last quarter of the median span and 10% of
            the values, pooled. Series too short to split are skipped.
        n_samples : int, default 200
            Draws per held-out value.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Fewer than 50 values could be held out; the estimator keeps what it had.
        """
        check_is_fitted(self)
        data = self._check_data(X)
        rules = [
            {k: v}
            for k, v in dict(last=last, after=after, n_last=n_last, fraction=fraction).items()
            if v is not None
        ]
        if not rules:
            span = float(np.median([s.times[-1] - s.times[0] for s in data]))
            rules = [{"last": 0.25 * span}, {"fraction": 0.1}]
        with self._keep_state_on_failure():
            self.calibration_ = None  # the model's own draws are standardised
            f, gap, z = self._standardised_errors(data, rules, n_samples)
            if z.size < _MIN_VALUES:
                raise NothingHeldOut(
                    f"X: only {z.size} values could be held out to calibrate (at least "
                    f"{_MIN_VALUES} are needed); pass more or longer series."
                )
            gaps, scores = [], []
            for d in range(self.n_features_in_):  # a feature held out rarely borrows them all
                mine = f == d if np.count_nonzero(f == d) >= _MIN_PER_FEATURE else slice(None)
                gaps.append(gap[mine])
                scores.append(z[mine])
            self.calibration_ = BinnedEmpirical(gaps, scores, n_bins=8, keep=_KEEP)
        return self

    def _standardised_errors(self, data, rules: list, n_samples: int):
        """Feature, gap and ``(y - mean) / sd`` of each held-out value, the hold-outs of
        ``rules`` (keyword sets of ``hold_out``) pooled."""
        pooled = []
        seed = seed_from(self.random_state)
        for option in rules:
            with warnings.catch_warnings():  # series too short to split are simply skipped
                warnings.filterwarnings("ignore", message="hold_out:", category=UserWarning)
                try:
                    context, target = hold_out(data, **option, random_state=seed)
                except NothingHeldOut:
                    continue
            y, f, gap, x, m = held_out_draws(self, context, target, n_samples, with_means=True)
            # on the model's scale (log for log features), where the errors are symmetric
            y, x = self._forward(y, f), self._forward(x.astype(np.float64), f)
            centre = self._forward(m.astype(np.float64), f).mean(0)
            sd = np.maximum(x.std(0), 1e-9 * self.value_scale_[f])
            pooled.append((f, gap, (y - centre) / sd))
        if not pooled:
            return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0)
        return tuple(np.concatenate(parts) for parts in zip(*pooled, strict=True))

    def _calibrate_if_possible(self, X) -> None:
        """:meth:`calibrate` on ``X``, or log why not (the automatic step of ``fit``)."""
        try:
            self.calibrate(X)
        except NothingHeldOut as err:
            logger.info("the predictive was left uncalibrated: %s", err)

    def _centre_and_spread(self, obs: np.ndarray, means: np.ndarray):
        """Centre and spread of the predictive on the model's scale (log for log features),
        from draws of ``obs`` and of the noise-free ``mean`` (sample, series, time, feature).

        The centre is the average of the noise-free means, not of the noisy draws: where the
        learned noise is much wider than the errors (a feature with gross entry errors in
        training), the average of noisy draws wanders by ``sd / sqrt(n)``, as far as the
        errors themselves, and a calibration of ``(y - centre) / sd`` would mostly calibrate
        that Monte Carlo noise (too narrow with fewer draws than at calibration)."""
        return self._forward(means).mean(0), self._forward(obs).std(0)

    def _calibrated(
        self, obs: np.ndarray, means: np.ndarray, data, t: np.ndarray, entries=None
    ) -> np.ndarray:
        """Calibrated draws from raw ones (sample, series, time, feature), same shape;
        calibrated on the model's scale (log for log features); with ``entries`` (bool,
        (series, time, feature)), at those only (the others' errors are not drawn)."""
        mean, sd = self._centre_and_spread(obs, means)
        gap = _gaps(data, t)
        self._check_reach(gap if entries is None else np.where(entries.any(-1), gap, np.nan))
        rng = np.random.default_rng(seed_from(self.random_state) + 2)
        z = np.zeros(obs.shape, dtype=np.float32)
        for d in range(obs.shape[-1]):
            if entries is None:
                z[..., d] = self.calibration_.draw(d, gap.ravel(), obs.shape[0], rng).reshape(
                    obs.shape[:-1]
                )
            elif entries[..., d].any():
                at = entries[..., d]
                z[:, at, d] = self.calibration_.draw(d, gap[at], obs.shape[0], rng)
        return self._inverse(mean + sd * z).astype(np.float32)

    def _calibrated_quantiles(
        self, obs: np.ndarray, means: np.ndarray, data, t: np.ndarray, levels: np.ndarray
    ) -> np.ndarray:
        """Quantiles of the calibrated predictive from raw draws of ``obs`` and ``mean``
        (sample, series, time, feature): array of shape (quantile, series, time, feature), in
        the data's units."""
        mean, sd = self._centre_and_spread(obs, means)
        gap = _gaps(data, t).ravel()
        self._check_reach(gap)
        z = np.empty((len(levels), *mean.shape))
        for d in range(mean.shape[-1]):
            z[..., d] = self.calibration_.quantiles(d, gap, levels).T.reshape(
                len(levels), *mean.shape[:-1]
            )
        # the log transform is increasing: quantiles on the model's scale map to the data's
        return self._inverse(mean + sd * z)

    def _check_reach(self, gap: np.ndarray) -> None:
        """Note how far from the observations calibrated bands are asked for, for the one
        warning of :meth:`_one_reach_warning` (every caller runs inside it)."""
        asked = self._reach_asked
        asked[0] = max(asked[0], float(np.nanmax(gap, initial=0.0)))

    def _warn_reach(self, far: float, stacklevel: int) -> None:
        """Warn when calibrated bands are asked for much further from the observations than
        any value held out in the calibration: there they reuse its farthest errors, which
        are usually smaller than errors further out, and the bands can be too narrow."""
        reach = self.calibration_.reach
        if reach and far > 1.5 * reach:
            warnings.warn(
                f"calibrated bands are asked for up to {far:.4g} time units from a series' "
                f"nearest observation, but the calibration held out values at most "
                f"{reach:.4g} away; beyond that its errors are extrapolated and the bands may "
                f"be too narrow. Calibrate for this horizon: calibrate(X, last={far:.4g}).",
                UserWarning,
                stacklevel=stacklevel,
            )

    @contextlib.contextmanager
    def _one_reach_warning(self):
        """One public call's calibration-reach check: its chunks of series each note how far
        they were asked for, and one warning names the farthest (nested calls report to the
        outermost)."""
        if self.__dict__.get("_reach_asked") is not None:
            yield
            return
        self._reach_asked = [0.0]
        try:
            yield
            far = self._reach_asked[0]
        finally:
            self.__dict__.pop("_reach_asked", None)
        if getattr(self, "calibration_", None) is not None:
            # _warn_reach, this generator, contextlib's __exit__, the public method, its lock
            self._warn_reach(far, stacklevel=6)

    def _fitted_state(self) -> dict:
        calibration = getattr(self, "calibration_", None)
        state = None if calibration is None else calibration.to_state()
        return {**super()._fitted_state(), "calibration_": state}

    def _set_fitted_state(self, state: dict) -> None:
        super()._set_fitted_state(state)
        saved = state.get("calibration_")
        self.calibration_ = None if saved is None else BinnedEmpirical.from_state(saved)


def _series_chunks(
    data, n_samples: int, n_query: int, width: int, *, on_grid: int = 0, cells: int = WIDEST_CELLS
):
    """``(start, stop)`` of the chunks of series drawn in one call each: at most
    ``PREDICT_CHUNK`` series, and few enough that one call's widest tensor stays within
    ``cells`` values — draws x series x query times x ``width`` (the widest of features,
    latent state and the networks' hidden layers), and series x the union of the chunk's
    observation times x ``on_grid`` (what one series holds per observation time: the
    importance proposals' paths, and draws decoded there)."""
    size = cells // max(1, n_samples * n_query * width)
    size = max(1, min(PREDICT_CHUNK, size))
    if not on_grid:
        return [(i, min(i + size, len(data))) for i in range(0, len(data), size)]
    bounds, start, grid = [], 0, set()
    for i, s in enumerate(data):
        new = [x for x in s.times.tolist() if x not in grid]
        full = i - start >= size
        if i > start and (full or on_grid * (i - start + 1) * (len(grid) + len(new)) > cells):
            bounds.append((start, i))
            start, grid, new = i, set(), s.times.tolist()
        grid.update(new)
    bounds.append((start, len(data)))
    return bounds


def _gaps(data, t: np.ndarray) -> np.ndarray:
    """Time from each query time to the nearest observation of its series: array of shape
    (series, time), for one grid ``t`` of shape (time,) or each series' own (series, time)."""
    if t.ndim == 1:
        return np.stack([gaps_to(s.times, t) for s in data])
    return np.stack([gaps_to(s.times, row) for s, row in zip(data, t, strict=True)])


def _check_entries(entries, shape: tuple) -> np.ndarray:
    """``entries`` of :meth:`PosteriorPredictiveMixin.sample` as a bool array of ``shape``
    (series, time, features), or a ValueError that says what it should be."""
    wanted = np.asarray(entries)
    if wanted.dtype != bool or wanted.shape != shape:
        raise ValueError(
            f"entries must be a boolean array of shape (series, time, feature) = {shape}, one "
            f"entry per series, query time and feature; got {wanted.dtype} of shape "
            f"{wanted.shape}."
        )
    return wanted
