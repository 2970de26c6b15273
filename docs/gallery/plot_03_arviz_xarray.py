"""
Posterior draws in xarray and ArviZ
===================================

The outputs of a fitted model are labelled arrays: xarray objects with your series ids, times
and feature names as coordinates, and ArviZ's container with the groups ArviZ's diagnostics
expect. This example fits a small spiral model and hands its posterior to both.
"""

# %%
import warnings

import matplotlib.pyplot as plt

from latentode import LatentODE
from latentode.datasets import make_spirals

data = make_spirals(n_series=250, n_obs=30, random_state=1)
settings = dict(lr=0.02, lr_decay=0.997, encode_fraction=0.5, obs_std=0.1)  # spiral benchmark
model = LatentODE(**settings, max_epochs=120, random_state=0).fit(data.train)

# %%
# xarray: select, reduce, export
# ------------------------------
# ``sample`` returns an :class:`xarray.Dataset`; with ``include_latent=True`` it also holds the
# draws of ``z0`` and the latent trajectories ``z``.
future = data.test_extrapolation_times
draws = model.sample(data.test[:5], times=future, n_samples=300, include_latent=True)
print(draws)

first = draws.series.values[0]
spread = draws.obs.sel(series=first).quantile([0.05, 0.5, 0.95], dim="sample")
print(spread.sel(feature="x").isel(time=[0, 50, 99]).to_pandas())

# %%
# The spread of the forecast grows with the horizon: the posterior uncertainty about ``z0``
# is carried forward by the ODE. Width of the 90% interval, averaged over the five series:
width = draws.obs.quantile(0.95, "sample") - draws.obs.quantile(0.05, "sample")
fig, ax = plt.subplots(figsize=(6, 3.5))
width.mean(("series", "feature")).plot(ax=ax)
ax.set_xlabel("time (after the observation window)")
ax.set_ylabel("width of the 90% interval")
ax.set_title("")
fig.tight_layout()
plt.show()

# %%
# ArviZ: groups and coordinates
# -----------------------------
# ``to_inference_data`` puts the posterior of ``z0`` (one chain of draws from the variational
# posterior), the posterior predictive and the observed data (NaN where not observed) into
# ArviZ's container.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az  # noqa: F401  (the container's own library)

idata = model.to_inference_data(data.test, n_samples=200)
print(idata)
print(idata.posterior["z0"].dims)

# %%
# ArviZ's ``loo`` and ``waic`` would need a ``log_likelihood`` group. It is added only on request
# (``log_likelihood=True``), with a warning: every series has its own ``z0`` drawn from the
# variational posterior, so PSIS-LOO's importance weights do not estimate held-out fit. To
# compare models, score them on values they did not see -- here each test spiral's last
# stretch of time, beside carrying the last value forward:
from latentode import LastValue  # noqa: E402
from latentode.evaluation import evaluate, hold_out  # noqa: E402

context, target = hold_out(data.test, last=1.0)
table = evaluate({"latent ODE": model, "LOCF": LastValue().fit(data.train)}, context, target)
print(table.loc[table.feature == "all", ["model", "mse", "crps", "coverage_90"]])

# %%
# The posterior of ``z0`` of a few series, from the ``posterior`` group with plain xarray:
z0 = idata.posterior["z0"]
fig, ax = plt.subplots(figsize=(5, 5))
for k, sid in enumerate(z0.series.values[:4]):
    pts = z0.sel(series=sid).stack(s=("chain", "draw"))
    ax.scatter(
        pts.sel(latent=0), pts.sel(latent=1), s=6, alpha=0.4, color=f"C{k}", label=f"spiral {sid}"
    )
ax.set_xlabel("z0[0]")
ax.set_ylabel("z0[1]")
ax.legend(fontsize="small")
ax.set_title("posterior draws of z0")
fig.tight_layout()
plt.show()
