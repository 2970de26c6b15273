"""Estimator settings that the benchmark scripts share.

Benchmark configurations live here, beside the scripts that measure them, not in the
package: the package's defaults are chosen for users' data in general, these for one
published protocol each.
"""

from __future__ import annotations

#: ``LatentODE`` settings of the spiral extrapolation benchmark (``spirals_table2.py``,
#: noise 0.1, n_obs = 30): forecast training, the data's noise fixed, a slowly decaying
#: learning rate. ``examples/spirals.py``, the gallery's spiral figures and
#: ``latentode demo`` use the same values.
SPIRALS_LATENT_ODE = {
    "max_epochs": 1000,
    "lr": 0.02,
    "lr_decay": 0.997,
    "encode_fraction": 0.5,
    "obs_std": 0.1,
}
