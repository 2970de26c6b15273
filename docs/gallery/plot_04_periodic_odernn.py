"""
ODE-RNN encoder, interpolation and the latent space
===================================================

The periodic toy set of Rubanova et al. (2019): sine waves of random frequency and phase, each
observed at 30 of 100 irregular time points. The recognition network here is the ODE-RNN —
its hidden state follows an ODE between observations and takes a GRU update at each — and the
task is interpolation: reconstruct all 100 points of held-out series from their 30.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from latentode import LatentODE
from latentode.datasets import make_periodic
from latentode.metrics import masked_mse
from latentode.plotting import plot_latent, plot_posterior, plot_training_curve

data = make_periodic(n_series=300, n_obs=30, noise_std=0.05, random_state=0)
train, val = data.train[:200], data.train[200:]
model = LatentODE(
    encoder="odernn",
    latent_dim=4,
    max_epochs=80,
    lr=0.01,
    lr_decay=0.98,
    random_state=0,
)
model.fit(train, validation_data=val)
print(f"best epoch {model.history_.best_epoch}, {np.mean(model.history_.seconds):.2f} s per epoch")

# %%
# Training curve: the negative ELBO per series on the training batches and on the validation
# series, whose best epoch's parameters are kept.
ax = plot_training_curve(model.history_)
plt.show()

# %%
# Interpolation error on the held-out series, over all 100 time points (70 of them never
# seen), against the variance of the signal:
mean = model.predict(data.test, times=data.times)
mse = masked_mse(data.test_values, mean.values)
print(f"interpolation MSE {mse:.3f}; variance of the series {data.test_values.var():.3f}")

# %%
# One held-out series: its 30 observed points, the posterior mean and bands over the window,
# and the noise-free signal.
import xarray as xr  # noqa: E402

show = data.test[:1]
draws = model.sample(show, times=data.times, n_samples=200, include_latent=True)
truth = xr.DataArray(
    data.test_truth[0],
    dims=("time", "feature"),
    coords={"time": data.times, "feature": data.test.feature_names},
)
fig = plot_posterior(draws, show, series=show.ids[0], truth=truth)
plt.show()

# %%
# The latent trajectories of four series in two of the latent dimensions: oscillations of
# different speed and phase become closed-ish orbits of the latent ODE.
draws4 = model.sample(data.test[:4], times=data.times, n_samples=20, include_latent=True)
ax = plot_latent(draws4, dims=(0, 1), n_draws=10)
plt.show()
