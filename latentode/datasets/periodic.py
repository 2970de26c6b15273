"""Irregularly sampled periodic series, after the toy data set of Rubanova et al. (2019)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_params, integer, real
from ._containers import IrregularDataset
from ._synthetic import split_and_observe

__all__ = ["PeriodicData", "make_periodic"]


_PARAMETERS = (
    integer("n_series", low=2),
    integer("n_obs", low=1, high="n_times"),
    real("noise_std", low=0),
    real("test_size", low=0, low_open=True, high=1, high_open=True),
)


@dataclass
class PeriodicData:
    """Output of :func:`make_periodic`.

    Attributes
    ----------
    train, test : IrregularDataset
        ``n_obs`` noisy points per series, drawn without replacement from ``times``.
    times : ndarray of shape (n_times,)
        The irregular time points shared by all series, sorted.
    train_values, test_values : ndarray of shape (n_series, n_times, 1)
        Noisy values at every time point (the reconstruction targets).
    train_truth, test_truth : ndarray of shape (n_series, n_times, 1)
        Noise-free values.
    frequency_train, frequency_test, phase_train, phase_test : ndarray of shape (n_series,)
        Each series is ``amplitude * sin(2 pi frequency t + phase)``.
    noise_std : float
    """

    train: IrregularDataset
    test: IrregularDataset
    times: np.ndarray
    train_values: np.ndarray
    test_values: np.ndarray
    train_truth: np.ndarray
    test_truth: np.ndarray
    frequency_train: np.ndarray
    frequency_test: np.ndarray
    phase_train: np.ndarray
    phase_test: np.ndarray
    noise_std: float


def make_periodic(
    n_series: int = 1000,
    n_obs: int = 50,
    *,
    n_times: int = 100,
    t_max: float = 5.0,
    frequency_range: tuple[float, float] = (0.2, 1.0),
    amplitude: float = 1.0,
    noise_std: float = 0.01,
    test_size: float = 0.2,
    random_state: int | None = None,
) -> PeriodicData:
    """Generate sine waves of random frequency and phase at irregular times.

    Following the toy set of Rubanova et al. (2019), section 4.1: 1000 periodic trajectories
    of variable frequency and equal amplitude, each starting from a random point of its cycle,
    with Gaussian noise, on 100 irregularly spaced time points; training sees ``n_obs`` of them
    per series, and the task is to reconstruct all 100 (interpolation) or, conditioning on the
    first part of the window, the rest (extrapolation). Frequency range and noise level are
    this generator's choices, given as parameters.

    Parameters
    ----------
    n_series : int, default 1000
    n_obs : int, default 50
        Observed points per series, drawn from the ``n_times`` points.
    n_times : int, default 100
        Irregular time points, drawn uniformly on ``[0, t_max]`` once and shared by all series.
    t_max : float, default 5.0
    frequency_range : (float, float), default (0.2, 1.0)
        Frequencies (cycles per time unit), uniform per series.
    amplitude : float, default 1.0
    noise_std : float, default 0.01
    test_size : float, default 0.2
    random_state : int, optional

    Returns
    -------
    PeriodicData
    """
    check_params(dict(n_series=n_series, n_obs=n_obs, n_times=n_times), _PARAMETERS)
    low, high = frequency_range
    if not 0 < low <= high:
        raise ValueError(f"frequency_range must satisfy 0 < low <= high; got {frequency_range}.")
    check_params(dict(noise_std=noise_std, test_size=test_size), _PARAMETERS)
    rng = np.random.default_rng(random_state)
    times = np.sort(rng.uniform(0.0, t_max, size=n_times))
    frequency = rng.uniform(low, high, size=n_series)
    phase = rng.uniform(0.0, 2 * np.pi, size=n_series)
    truth = amplitude * np.sin(2 * np.pi * frequency[:, None] * times + phase[:, None])[..., None]
    noisy = truth + rng.normal(scale=noise_std, size=truth.shape)
    train, test, train_idx, test_idx = split_and_observe(
        rng, times, noisy, n_obs=n_obs, test_size=test_size, feature_names=["value"]
    )
    return PeriodicData(
        train=train,
        test=test,
        times=times,
        train_values=noisy[train_idx],
        test_values=noisy[test_idx],
        train_truth=truth[train_idx],
        test_truth=truth[test_idx],
        frequency_train=frequency[train_idx],
        frequency_test=frequency[test_idx],
        phase_train=phase[train_idx],
        phase_test=phase[test_idx],
        noise_std=float(noise_std),
    )
