"""
Your own CSV: from the command line and from Python
===================================================

A newcomer's path: a CSV file of irregular, partly missing readings in long format, fitted and
forecast with the ``latentode`` command, then the same from Python.

The file here is generated — 120 people wearing a sensor that logs heart rate and skin
temperature at irregular times over two days, each channel sometimes missing — but nothing
below depends on how it was made: replace it with your own file.
"""

# %%
# A CSV in long format
# --------------------
# One row per (subject, time); a column of ids, a column of times (hours since the start of
# the recording), one column per feature; empty cells where a channel was not read.
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
rows = []
for k in range(120):
    amp_hr, amp_temp = rng.uniform(5, 12), rng.uniform(0.3, 0.8)
    phase = rng.uniform(0, 24)
    hours = np.unique(rng.uniform(0, 48, size=rng.integers(25, 45)).round(2))
    cycle = np.sin(2 * np.pi * (hours - phase) / 24)
    lagged = np.sin(2 * np.pi * (hours - phase - 3) / 24)
    hr = 66 + amp_hr * cycle + rng.normal(0, 1.5, hours.size)
    temp = 33.6 + amp_temp * lagged + rng.normal(0, 0.1, hours.size)
    hr[rng.random(hours.size) < 0.3] = np.nan
    temp[rng.random(hours.size) < 0.3] = np.nan
    for t, h, c in zip(hours, hr, temp, strict=True):
        rows.append((f"s{k:03d}", t, h, c))
frame = pd.DataFrame(rows, columns=["subject", "hours", "heart_rate", "skin_temp"])
frame = frame.dropna(subset=["heart_rate", "skin_temp"], how="all")

workdir = Path(tempfile.mkdtemp())
csv = workdir / "vitals.csv"
frame.to_csv(csv, index=False, float_format="%.2f")
print(csv.read_text().splitlines()[:6])
print(
    f"{len(frame)} rows, {frame.subject.nunique()} subjects, "
    f"{frame[['heart_rate', 'skin_temp']].isna().mean().round(2).to_dict()} missing"
)

# %%
# Fit, forecast and plot with the command line
# --------------------------------------------
# ``latentode fit`` trains and saves the model; ``predict`` writes quantiles for the 24
# hours after the last reading in the file; ``plot`` draws posterior bands for chosen
# subjects to a PNG.
# (Here run through ``python -m latentode``, the same program as the ``latentode`` command.)


def latentode(*args):
    done = subprocess.run(
        [sys.executable, "-m", "latentode", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    if done.returncode:  # the command's message says what was wrong
        raise RuntimeError(done.stderr)
    print(done.stdout.strip())


columns = ["--id-col", "subject", "--time-col", "hours"]
latentode("fit", csv, *columns, "--model", "vitals.pt", "--epochs", 150)
latentode("predict", "vitals.pt", csv, *columns, "--horizon", 24, "--output", "forecast.csv")
latentode(
    "plot",
    "vitals.pt",
    csv,
    *columns,
    "--horizon",
    24,
    "--series",
    "s000",
    "s001",
    "--output",
    "vitals.png",
)

forecast = pd.read_csv(workdir / "forecast.csv")
print(forecast.head())

# %%
# The PNG written by ``latentode plot``: observed points, posterior mean, 50% and 90% bands,
# and a dashed line where each subject's observations end.
fig, ax = plt.subplots(figsize=(9, 6))
ax.imshow(plt.imread(workdir / "vitals.png"))
ax.set_axis_off()
plt.show()

# %%
# The same from Python
# --------------------
# ``from_pandas`` turns the long frame into the library's data set; the saved model loads
# with ``LatentODE.load``; forecasts come back as xarray objects and pandas frames.
from latentode import LatentODE  # noqa: E402
from latentode.datasets import from_pandas  # noqa: E402
from latentode.plotting import plot_posterior_grid  # noqa: E402

data = from_pandas(pd.read_csv(csv), id_col="subject", time_col="hours")
model = LatentODE.load(workdir / "vitals.pt")
times = np.linspace(0, 72, 97)
draws = model.sample(data[2:4], times=times, n_samples=200)
print(draws)
fig = plot_posterior_grid(draws, data[2:4])
plt.show()

# %%
# Quantiles as a long table, one row per (subject, time), like sktime's forecasters:
print(model.predict_quantiles(data[:2], times=[50.0, 60.0, 70.0], q=[0.1, 0.5, 0.9]))
