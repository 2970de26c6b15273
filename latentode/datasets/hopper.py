"""MuJoCo Hopper trajectories, after the physics data set of Rubanova et al. (2019).

The Hopper of the DeepMind Control Suite (a planar one-legged robot: root x, z and pitch, and
the waist, hip, knee and ankle joints) is started from random positions and velocities and left
to move with no control; its 7 generalised positions and 7 velocities are recorded at every
simulator step. Physics only: nothing is rendered.

Needs the ``hopper`` extra (``pip install "latentode[hopper]"``: ``dm-control`` and
``mujoco`` < 4, whose API change breaks ``dm-control`` 1.0.x).
Software: MuJoCo (Apache-2.0), dm_control (Apache-2.0).
Cite: Y. Rubanova, R. T. Q. Chen, D. Duvenaud. Latent ODEs for irregularly-sampled time
series. NeurIPS 2019 (section 4.2, "MuJoCo physics simulation"); Y. Tassa et al. DeepMind
Control Suite, arXiv:1801.00690, 2018.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from .._validation import check_params, integer, real
from ._containers import IrregularDataset
from ._synthetic import split_and_observe

__all__ = ["HOPPER_FEATURES", "HopperData", "make_hopper"]

_JOINTS = ["rootx", "rootz", "rooty", "waist", "hip", "knee", "ankle"]
#: Feature names: the 7 generalised positions, then the 7 velocities, in MuJoCo's order.
HOPPER_FEATURES = [f"q_{j}" for j in _JOINTS] + [f"v_{j}" for j in _JOINTS]


_PARAMETERS = (
    integer("n_series", low=2),
    integer("n_times", low=2),
    integer("n_obs", low=1, high="n_times"),
    integer("steps_per_time", low=1),
    real("test_size", low=0, low_open=True, high=1, high_open=True),
)


@dataclass
class HopperData:
    """Output of :func:`make_hopper`.

    Attributes
    ----------
    train, test : IrregularDataset
        ``n_obs`` points per series drawn without replacement from ``times``, 14 features
        (:data:`HOPPER_FEATURES`), in the simulator's units (m, rad, m/s, rad/s).
    times : ndarray of shape (n_times,)
        Seconds of simulated time, shared by all series.
    train_values, test_values : ndarray of shape (n_series, n_times, 14)
        The whole trajectories (the reconstruction targets).
    data_min, data_max : ndarray of shape (14,)
        Each feature's minimum and maximum over all generated trajectories. Rubanova et al.
        report errors on ``(x - data_min) / data_max`` (their ``normalize_data``), so
        ``(error / data_max) ** 2`` puts a squared error on the scale of their tables.
    """

    train: IrregularDataset
    test: IrregularDataset
    times: np.ndarray
    train_values: np.ndarray
    test_values: np.ndarray
    data_min: np.ndarray
    data_max: np.ndarray


def _load_suite():
    """Import the Control Suite for physics only, or say how to install it."""
    if "dm_control" not in sys.modules:
        # nothing is rendered: keep dm_control from probing for a display (a warning otherwise)
        os.environ.setdefault("MUJOCO_GL", "disable")
    try:
        from dm_control import suite
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "make_hopper needs the DeepMind Control Suite and MuJoCo: "
            'pip install "latentode[hopper]" (dm-control with mujoco < 4).'
        ) from err
    return suite


def simulate_hopper(
    n_series: int, n_times: int, *, steps_per_time: int = 1, random_state=None
) -> tuple[np.ndarray, float]:
    """Raw Hopper trajectories from random initial states, no control.

    Initial states as in Rubanova et al.: root x and z uniform on [0, 0.5], the other
    positions uniform on [-2, 2], all velocities uniform on [-5, 5].

    Parameters
    ----------
    n_series : int
    n_times : int
        Recorded states per trajectory (the first is the initial state).
    steps_per_time : int, default 1
        Simulator steps between recorded states.
    random_state : int or numpy.random.Generator, optional

    Returns
    -------
    states : ndarray of shape (n_series, n_times, 14)
        Positions then velocities (:data:`HOPPER_FEATURES`).
    dt : float
        Seconds between recorded states.
    """
    suite = _load_suite()
    rng = np.random.default_rng(random_state)
    physics = suite.load("hopper", "stand").physics
    nq, nv = physics.data.qpos.shape[0], physics.data.qvel.shape[0]
    if nq + nv != len(HOPPER_FEATURES):  # pragma: no cover - a changed model file
        raise RuntimeError(f"unexpected Hopper model: {nq} positions and {nv} velocities.")
    states = np.empty((n_series, n_times, nq + nv))
    for i in range(n_series):
        with physics.reset_context():
            physics.data.qpos[:2] = rng.uniform(0.0, 0.5, size=2)
            physics.data.qpos[2:] = rng.uniform(-2.0, 2.0, size=nq - 2)
            physics.data.qvel[:] = rng.uniform(-5.0, 5.0, size=nv)
        for k in range(n_times):
            states[i, k, :nq] = physics.data.qpos
            states[i, k, nq:] = physics.data.qvel
            physics.step(steps_per_time)
    return states, float(physics.timestep()) * steps_per_time


def make_hopper(
    n_series: int = 10_000,
    n_obs: int | None = None,
    *,
    n_times: int = 100,
    steps_per_time: int = 1,
    test_size: float = 0.2,
    random_state: int | None = None,
) -> HopperData:
    """Simulate the MuJoCo Hopper from random states and observe each run at random times.

    Rubanova et al. (2019) simulate 10 000 runs of 100 regularly spaced time points and train
    on 10%, 20%, 30% or 50% of each run's points; the tasks are to reconstruct all points
    (interpolation) and, from the first half, the second half (extrapolation). ``n_obs``
    chooses how many points of each run are observed (``n_obs = 0.1 * n_times`` for 10%); the
    dense trajectories are returned as targets.

    Parameters
    ----------
    n_series : int, default 10000
        Runs to simulate (about 1.5 ms each at 100 points on one core).
    n_obs : int, optional
        Points observed per run, drawn without replacement; all ``n_times`` when omitted.
    n_times : int, default 100
    steps_per_time : int, default 1
        Simulator steps (5 ms each) between recorded points.
    test_size : float, default 0.2
    random_state : int, optional

    Returns
    -------
    HopperData

    Raises
    ------
    ImportError
        Without ``dm-control`` and ``mujoco``; the message says what to install.
    """
    n_obs = n_times if n_obs is None else n_obs
    check_params(
        dict(
            n_series=n_series,
            n_times=n_times,
            n_obs=n_obs,
            steps_per_time=steps_per_time,
            test_size=test_size,
        ),
        _PARAMETERS,
    )
    rng = np.random.default_rng(random_state)
    states, dt = simulate_hopper(n_series, n_times, steps_per_time=steps_per_time, random_state=rng)
    times = dt * np.arange(n_times)
    flat = states.reshape(-1, states.shape[-1])
    train, test, train_idx, test_idx = split_and_observe(
        rng, times, states, n_obs=n_obs, test_size=test_size, feature_names=HOPPER_FEATURES
    )
    return HopperData(
        train=train,
        test=test,
        times=times,
        train_values=states[train_idx],
        test_values=states[test_idx],
        data_min=flat.min(axis=0),
        data_max=flat.max(axis=0),
    )
