"""The 2-D spiral data set of Chen et al. (2018), section 5.1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_params, integer, real
from ._containers import IrregularDataset
from ._synthetic import split_and_observe

__all__ = ["SpiralData", "make_spirals", "spiral_trajectory"]


_PARAMETERS = (
    integer("n_obs", low=1, high="n_steps"),
    integer("n_series", low=2),
    real("test_size", low=0, low_open=True, high=1, high_open=True),
    real("noise_std", low=0),
)


@dataclass
class SpiralData:
    """Output of :func:`make_spirals`.

    Attributes
    ----------
    train, test : IrregularDataset
        The observed points: ``n_obs`` noisy points per series drawn without replacement from
        the observation window.
    times : ndarray of shape (n_steps,)
        The observation window's equally spaced grid.
    test_extrapolation_times : ndarray of shape (n_extrapolation,)
        The grid that follows the observation window.
    test_extrapolation_values : ndarray of shape (n_test, n_extrapolation, 2)
        Noisy observations at ``test_extrapolation_times``.
    test_extrapolation_truth : ndarray of shape (n_test, n_extrapolation, 2)
        Noise-free spiral positions at ``test_extrapolation_times``.
    train_truth, test_truth : ndarray of shape (n_series, n_steps + n_extrapolation, 2)
        Noise-free trajectories over both windows.
    clockwise_train, clockwise_test : ndarray of bool, shape (n_series,)
        Direction of each spiral.
    noise_std : float
        Standard deviation of the Gaussian observation noise.
    """

    train: IrregularDataset
    test: IrregularDataset
    times: np.ndarray
    test_extrapolation_times: np.ndarray
    test_extrapolation_values: np.ndarray
    test_extrapolation_truth: np.ndarray
    train_truth: np.ndarray
    test_truth: np.ndarray
    clockwise_train: np.ndarray
    clockwise_test: np.ndarray
    noise_std: float


def spiral_trajectory(phi: np.ndarray, *, clockwise: bool, a: float, b: float, centre: float):
    """Points of an Archimedean spiral ``r = a + b * phi``.

    Parameters
    ----------
    phi : ndarray of shape (n,)
        Polar angles (radians) along the spiral, increasing with time.
    clockwise : bool
        Counter-clockwise spirals turn around ``(+centre, 0)``; clockwise ones are their mirror
        image around ``(-centre, 0)``.
    a, b, centre : float
        Spiral offset, growth per radian, and distance of its centre from the origin.

    Returns
    -------
    ndarray of shape (n, 2)
    """
    r = a + b * phi
    if clockwise:
        return np.stack([-centre + r * np.cos(phi), -r * np.sin(phi)], axis=-1)
    return np.stack([centre + r * np.cos(phi), r * np.sin(phi)], axis=-1)


def make_spirals(
    n_series: int = 1000,
    n_obs: int = 30,
    *,
    n_steps: int = 100,
    n_extrapolation: int = 100,
    t_max: float = 5.0,
    noise_std: float = 0.1,
    turn_per_window: float = 0.3,
    phi_range: tuple[float, float] = (0.6 * np.pi, 4.8 * np.pi),
    a: float = 0.0,
    b: float = 0.3,
    centre: float = 5.0,
    test_size: float = 0.2,
    random_state: int | None = None,
) -> SpiralData:
    """Generate noisy, irregularly observed 2-D spirals (Chen et al. 2018, section 5.1).

    Half of the spirals turn clockwise and half counter-clockwise; each starts from its own
    point along its spiral. Every series is observed on ``n_steps`` equally spaced times over
    ``[0, t_max)`` with Gaussian noise, of which ``n_obs`` points are drawn at random without
    replacement; the ``n_extrapolation`` grid points that follow are the extrapolation targets.

    Parameters
    ----------
    n_series : int, default 1000
        Number of spirals (train and test together).
    n_obs : int, default 30
        Observed points per series, drawn from the ``n_steps`` grid (the paper uses 30, 50, 100).
    n_steps : int, default 100
        Grid points in the observation window.
    n_extrapolation : int, default 100
        Grid points after the window, for extrapolation.
    t_max : float, default 5.0
        Length of the observation window in time units; the grid step is ``t_max / n_steps``.
    noise_std : float, default 0.1
        Standard deviation of the additive Gaussian noise on each coordinate. Chen et al. do not
        state theirs; the spirals span about ±10 units.
    turn_per_window : float, default 0.3
        Fraction of a full turn travelled during one observation window.
    phi_range : (float, float), default (0.6 pi, 4.8 pi)
        Range of the starting polar angle, drawn uniformly per series. With the defaults the
        geometry is that of the reference implementation accompanying the paper: spirals of
        three turns (polar angle up to 6 pi, radius ``0.3 * phi``), windows of 0.6 pi, and
        every series' window and extrapolation lying on that stretch.
    a, b, centre : float
        Spiral shape ``r = a + b * phi``, centred at ``(±centre, 0)``.
    test_size : float, default 0.2
        Fraction of the series held out as ``test``.
    random_state : int, optional
        Seed for NumPy's generator.

    Returns
    -------
    SpiralData
    """
    check_params(
        dict(
            n_obs=n_obs,
            n_steps=n_steps,
            n_series=n_series,
            test_size=test_size,
            noise_std=noise_std,
        ),
        _PARAMETERS,
    )
    rng = np.random.default_rng(random_state)
    dt = t_max / n_steps
    all_times = np.arange(n_steps + n_extrapolation) * dt
    omega = 2 * np.pi * turn_per_window / t_max
    clockwise = np.arange(n_series) % 2 == 1
    rng.shuffle(clockwise)
    phi0 = rng.uniform(*phi_range, size=n_series)
    truth = np.stack(
        [
            spiral_trajectory(
                phi0[i] + omega * all_times, clockwise=bool(clockwise[i]), a=a, b=b, centre=centre
            )
            for i in range(n_series)
        ]
    )
    noisy = truth + rng.normal(scale=noise_std, size=truth.shape)

    train, test, train_idx, test_idx = split_and_observe(
        rng, all_times[:n_steps], noisy, n_obs=n_obs, test_size=test_size, feature_names=["x", "y"]
    )
    return SpiralData(
        train=train,
        test=test,
        times=all_times[:n_steps],
        test_extrapolation_times=all_times[n_steps:],
        test_extrapolation_values=noisy[test_idx, n_steps:],
        test_extrapolation_truth=truth[test_idx, n_steps:],
        train_truth=truth[train_idx],
        test_truth=truth[test_idx],
        clockwise_train=clockwise[train_idx],
        clockwise_test=clockwise[test_idx],
        noise_std=float(noise_std),
    )
