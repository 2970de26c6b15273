"""Empirical distributions binned by a gap: the bands of the baselines and the calibration
of the Latent ODE's predictive."""

from __future__ import annotations

import numpy as np

__all__ = ["BinnedEmpirical"]


class BinnedEmpirical:
    """Empirical distributions of a quantity, per feature, in bins of a gap.

    The errors of a rule (a baseline's, or a model's standardised ones) depend on how far the
    predicted time is from what was observed; this keeps them in bins of that gap, of about
    equal counts, and gives quantiles and draws at any gap.

    Parameters
    ----------
    gaps, values : list of ndarray, one pair per feature
        Gap (>= 0) and value (e.g. truth - prediction) of each example.
    n_bins : int
        At most this many bins per feature; fewer where a feature has few examples (at least
        ``min_count`` per bin).
    min_count : int, default 100
    keep : int or None, default None
        Keep at most this many values per bin (evenly spaced order statistics), to bound the
        size of a saved model.
    """

    def __init__(self, gaps: list, values: list, *, n_bins: int, min_count=100, keep=None):
        self.edges, self.residuals = [], []
        # the largest gap with examples: beyond it every gap takes the last bin's values
        self.reach = max((float(np.max(g)) for g in gaps if len(g)), default=0.0)
        for g, e in zip(gaps, values, strict=True):
            g, e = np.asarray(g, dtype=np.float64), np.asarray(e, dtype=np.float64)
            bins = max(1, min(n_bins, len(g) // min_count))
            edges = np.unique(np.quantile(g, np.linspace(0, 1, bins + 1)[1:-1])) if len(g) else []
            index = np.searchsorted(edges, g, side="right")
            self.edges.append(np.asarray(edges, dtype=np.float64))
            groups = [np.sort(e[index == b]) for b in range(len(edges) + 1)]
            if keep is not None:
                groups = [_thin(r, keep) for r in groups]
            self.residuals.append(groups)

    def to_state(self) -> dict:
        """Plain lists (JSON-serialisable); :meth:`from_state` rebuilds the object."""
        return {
            "reach": self.reach,
            "edges": [e.tolist() for e in self.edges],
            "residuals": [[r.tolist() for r in groups] for groups in self.residuals],
        }

    @classmethod
    def from_state(cls, state: dict) -> BinnedEmpirical:
        """The object :meth:`to_state` described."""
        out = cls.__new__(cls)
        out.reach = state.get("reach")  # None in files from before it was kept
        out.edges = [np.asarray(e, dtype=np.float64) for e in state["edges"]]
        out.residuals = [
            [np.asarray(r, dtype=np.float64) for r in groups] for groups in state["residuals"]
        ]
        return out

    def _groups(self, feature: int, gaps: np.ndarray):
        """Bin of each gap; an empty bin (or feature) borrows the nearest non-empty one."""
        index = np.searchsorted(self.edges[feature], gaps, side="right")
        filled = [b for b, r in enumerate(self.residuals[feature]) if len(r)]
        if not filled:
            return None
        nearest = np.asarray(filled)[np.abs(np.subtract.outer(index, filled)).argmin(-1)]
        return nearest

    def quantiles(self, feature: int, gaps: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Quantiles at each gap: array of shape (len(gaps), len(levels)); zeros where the
        feature has no examples."""
        out = np.zeros((len(gaps), len(levels)))
        groups = self._groups(feature, gaps)
        if groups is None:
            return out
        for b in np.unique(groups):
            # plotting positions q (n + 1): a new value exchangeable with the examples falls
            # below the q quantile with probability q (split conformal's finite-sample rule)
            out[groups == b] = np.quantile(self.residuals[feature][b], levels, method="weibull")
        return out

    def draw(self, feature: int, gaps: np.ndarray, n: int, rng) -> np.ndarray:
        """Values drawn with replacement at each gap: array of shape (n, len(gaps)); zeros
        where the feature has no examples."""
        out = np.zeros((n, len(gaps)))
        groups = self._groups(feature, gaps)
        if groups is None:
            return out
        for b in np.unique(groups):
            pool = self.residuals[feature][b]
            cols = np.flatnonzero(groups == b)
            out[:, cols] = pool[rng.integers(0, len(pool), size=(n, len(cols)))]
        return out


def _thin(sorted_values: np.ndarray, keep: int) -> np.ndarray:
    if len(sorted_values) <= keep:
        return sorted_values
    return sorted_values[np.linspace(0, len(sorted_values) - 1, keep).round().astype(int)]
