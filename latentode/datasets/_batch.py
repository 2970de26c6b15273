"""Mini-batches of irregular series: the union time grid, values and an observation mask.

:func:`collate` lays a list of :class:`~latentode.datasets.IrregularSeries` on the union of
their time points; a :class:`Batch` carries the tensors the networks read, and makes the
training-time variants of itself (rows, subsampled points, pair weights, a truncated encoder
window).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ._containers import IrregularSeries

__all__ = ["Batch", "collate"]


@dataclass
class Batch:
    """A mini-batch of series laid on the union of their observation times.

    Attributes
    ----------
    times : Tensor of shape (time,)
        Sorted union of the series' observation times (in whatever units they were given).
    values : Tensor of shape (batch, time, features)
        Observed values, 0 where not observed.
    mask : BoolTensor of shape (batch, time, features)
        True where a value is observed.
    ids : list
        Series identifiers, length ``batch``.
    encode_mask : BoolTensor of shape (batch, time, features) or None
        When set (see :meth:`truncate_encoder`), the observations the recognition network may
        read; the likelihood still scores all of ``mask``.
    labels : LongTensor of shape (batch,) or None
        Class index of each series, for supervised training.
    obs_weight : Tensor of shape (batch, 1, features) or None
        When set (see :meth:`weight_pairs`), the weight of each (series, feature) pair's
        observations in the training likelihood; None weights every observation by 1.
    static : Tensor of shape (batch, n_static) or None
        The series' static covariates (as transformed by :func:`collate`), 0 where unknown;
        None when the series carry none.
    static_mask : BoolTensor of shape (batch, n_static) or None
        True where a static covariate is known.
    """

    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    ids: list
    encode_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    obs_weight: torch.Tensor | None = None
    static: torch.Tensor | None = None
    static_mask: torch.Tensor | None = None

    @property
    def context(self) -> torch.Tensor | None:
        """What the networks read of the static covariates: Tensor of shape
        (batch, 2 * n_static), the values (0 where unknown) and then the known-indicators;
        None without static covariates."""
        if self.static is None:
            return None
        return torch.cat([self.static, self.static_mask.to(self.static.dtype)], dim=-1)

    @property
    def observed(self) -> torch.Tensor:
        """BoolTensor of shape (batch, time): True where any feature is observed."""
        return self.mask.any(-1)

    def rows(self, index: torch.Tensor) -> Batch:
        """The series at positions ``index``, in that order, on the same time grid.

        Parameters
        ----------
        index : LongTensor of shape (n,)

        Returns
        -------
        Batch
            ``values, mask (n, time, features)``; copies, so the batch itself is left as it is.
        """
        index = torch.as_tensor(index, dtype=torch.long)
        picked = {
            f.name: getattr(self, f.name)[index.to(getattr(self, f.name).device)]
            for f in dataclasses.fields(self)
            if f.name != "times" and torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, ids=[self.ids[i] for i in index.tolist()], **picked)

    def to(self, device) -> Batch:
        """Return the batch on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, **moved)

    def subsample(self, keep: float, *, generator: torch.Generator | None = None) -> Batch:
        """Randomly hide observed time points, keeping each with probability ``keep``.

        All features of a time point are hidden together; a series that would lose every
        point keeps its original observations. Used as training-time augmentation
        (Rubanova et al. 2019 subsample a fraction of the observed points).

        Parameters
        ----------
        keep : float in (0, 1]
            Probability of keeping each observed time point of each series.
        generator : torch.Generator, optional
            On the CPU; drives the draw.

        Returns
        -------
        Batch
            Same ``times``; ``values`` and ``mask`` of shape (batch, time, features) with the
            hidden points unobserved (value 0).
        """
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be in (0, 1]; got {keep!r}.")
        if keep == 1:
            return self
        draw = torch.rand(self.mask.shape[:2], generator=generator).to(self.mask.device)
        rows = self.observed & (draw < keep)
        empty = ~rows.any(-1)
        rows = torch.where(empty[:, None], self.observed, rows)
        mask = self.mask & rows[..., None]
        encode = None if self.encode_mask is None else self.encode_mask & mask
        return dataclasses.replace(self, values=self.values * mask, mask=mask, encode_mask=encode)

    def weight_pairs(self, scale: float) -> Batch:
        """Give every observed (series, feature) pair the same total weight ``scale``.

        Each observation of feature ``d`` in series ``b`` gets the weight ``scale / n_bd``,
        where ``n_bd`` is how often ``d`` is observed in ``b`` (in ``mask``, so after any
        :meth:`subsample`): a channel measured twice counts as much as one measured a hundred
        times, as in the per-(series, feature) averages of
        :func:`latentode.metrics.series_feature_mse`.

        Parameters
        ----------
        scale : float
            Total weight of a pair; the mean number of observations per observed pair of the
            training data keeps the likelihood's overall weight against the KL term.

        Returns
        -------
        Batch
            With ``obs_weight`` of shape (batch, 1, features), 0 for pairs never observed.
        """
        if not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
            raise ValueError(f"scale must be a positive number; got {scale!r}.")
        count = self.mask.sum(1, keepdim=True, dtype=self.values.dtype)
        weight = torch.where(count > 0, scale / count.clamp(min=1), torch.zeros_like(count))
        return dataclasses.replace(self, obs_weight=weight)

    def hide_values(self, share: float, *, generator: torch.Generator | None = None) -> Batch:
        """Hide a random share of the observed values from the encoder (imputation training).

        Each value the encoder would read is hidden with probability ``share``, independently
        per (series, time, feature); the likelihood still scores every value of ``mask``. A
        series that would lose every value keeps those it had.

        Parameters
        ----------
        share : float in [0, 1)
            Probability of hiding each value; 0 leaves the batch as it is.
        generator : torch.Generator, optional
            On the CPU; drives the draw.

        Returns
        -------
        Batch
            With ``encode_mask`` of shape (batch, time, features), a subset of the previous
            one (or of ``mask``).
        """
        if not 0 <= share < 1:
            raise ValueError(f"share must be in [0, 1); got {share!r}.")
        if share == 0:
            return self
        seen = self.mask if self.encode_mask is None else self.encode_mask
        draw = torch.rand(seen.shape, generator=generator).to(seen.device)
        kept = seen & (draw >= share)
        empty = ~kept.flatten(1).any(-1)
        kept = torch.where(empty[:, None, None], seen, kept)
        return dataclasses.replace(self, encode_mask=kept)

    def truncate_encoder(self, low: float, *, generator: torch.Generator | None = None) -> Batch:
        """Let the encoder read only an early part of each series (forecast training).

        For each series a fraction ``u ~ Uniform(low, 1)`` is drawn and the encoder sees the
        observations up to ``first + u * (last - first)`` of its observed span (at least the
        first one); the likelihood still scores every observation, so the model learns to
        carry ``z0`` inferred from the early part over the rest.

        Parameters
        ----------
        low : float in (0, 1]
            Smallest fraction of the span shown; 1 leaves the batch as it is.
        generator : torch.Generator, optional
            On the CPU; drives the draw.

        Returns
        -------
        Batch
            With ``encode_mask`` of shape (batch, time, features).
        """
        if not 0 < low <= 1:
            raise ValueError(f"low must be in (0, 1]; got {low!r}.")
        if low == 1:
            return self
        observed = self.observed
        t = self.times.expand(observed.shape)
        first = torch.where(observed, t, torch.inf).amin(-1)
        last = torch.where(observed, t, -torch.inf).amax(-1)
        u = low + (1 - low) * torch.rand(observed.shape[0], generator=generator)
        cut = first + u.to(t.device, t.dtype) * (last - first)
        rows = observed & (t <= cut[:, None])
        return dataclasses.replace(self, encode_mask=self.mask & rows[..., None])


def collate(
    series: Iterable[IrregularSeries],
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    times_transform=None,
    values_transform=None,
    static_transform=None,
    static: bool = True,
) -> Batch:
    """Lay a list of series on the union of their time points.

    Parameters
    ----------
    series : iterable of IrregularSeries
        Series with equal numbers of features.
    dtype : torch.dtype, default torch.float32
        Floating dtype of the returned tensors.
    device : torch.device or str, optional
        Where the tensors live.
    times_transform, values_transform : callable, optional
        Applied to the union grid ``(time,)`` and to the values array ``(batch, time, features)``
        (NumPy, NaN = missing) before conversion; the estimators use them to rescale.
    static_transform : callable, optional
        Applied to the static covariates ``(batch, n_static)`` (NumPy, NaN = unknown) of series
        that carry them.
    static : bool, default True
        Carry the series' static covariates; False leaves ``static`` None (for models that
        do not read them).

    Returns
    -------
    Batch
        ``times (time,)``, ``values (batch, time, features)``, ``mask (batch, time, features)``,
        and ``static, static_mask (batch, n_static)`` when the series carry static covariates.
    """
    series = list(series)
    if not series:
        raise ValueError("collate() needs at least one series; got an empty list.")
    all_times = np.concatenate([s.times for s in series])
    grid = np.unique(all_times)
    n_features = series[0].values.shape[1]
    dense = np.full((len(series), grid.shape[0], n_features), np.nan)
    # one scatter for the whole batch: row b takes series b's values at its grid positions
    rows = np.repeat(np.arange(len(series)), [len(s.times) for s in series])
    dense[rows, np.searchsorted(grid, all_times)] = np.concatenate([s.values for s in series])
    if times_transform is not None:
        grid = times_transform(grid)
    if values_transform is not None:
        dense = values_transform(dense)
    mask = ~np.isnan(dense)
    values = np.where(mask, dense, 0.0)
    static_values = static_mask = None
    if static and series[0].static is not None:
        table = np.stack([s.static for s in series])
        if static_transform is not None:
            table = static_transform(table)
        known = ~np.isnan(table)
        static_values = torch.as_tensor(np.where(known, table, 0.0), dtype=dtype, device=device)
        static_mask = torch.as_tensor(known, device=device)
    return Batch(
        times=torch.as_tensor(grid, dtype=dtype, device=device),
        values=torch.as_tensor(values, dtype=dtype, device=device),
        mask=torch.as_tensor(mask, device=device),
        ids=[s.id for s in series],
        static=static_values,
        static_mask=static_mask,
    )


# -- the validation gate ------------------------------------------------------------------
