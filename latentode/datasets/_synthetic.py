"""Shared step of the synthetic generators: split into train/test and draw observed points."""

from __future__ import annotations

import numpy as np

from ._containers import IrregularDataset, IrregularSeries


def split_and_observe(
    rng: np.random.Generator,
    times: np.ndarray,
    noisy: np.ndarray,
    *,
    n_obs: int,
    test_size: float,
    feature_names: list[str],
):
    """Hold out ``test_size`` of the series and observe ``n_obs`` random points of each.

    Parameters
    ----------
    rng : numpy.random.Generator
    times : ndarray of shape (n_grid,)
        Grid the points are drawn from (the first ``n_grid`` columns of ``noisy``).
    noisy : ndarray of shape (n_series, >= n_grid, features)
    n_obs : int
    test_size : float
    feature_names : list of str

    Returns
    -------
    train, test : IrregularDataset
    train_idx, test_idx : ndarray of int
        Sorted row numbers of ``noisy`` in each part; series ids are these row numbers.
    """
    n_series = noisy.shape[0]
    n_test = max(1, int(round(test_size * n_series)))
    perm = rng.permutation(n_series)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])

    def observed(indices):
        out = []
        for i in indices:
            keep = np.sort(rng.choice(times.shape[0], size=n_obs, replace=False))
            out.append(IrregularSeries(int(i), times[keep], noisy[i, keep]))
        return IrregularDataset(out, feature_names)

    train, test = observed(train_idx), observed(test_idx)
    return train, test, train_idx, test_idx
