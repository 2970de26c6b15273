"""Imputation on PhysioNet 2012 beside PyPOTS's BRITS and SAITS, at equal training time.

    pip install pypots  # a benchmark extra, not a dependency of latentode
    python benchmarks/pypots_imputation.py --physionet-path DIR [--budget 480] [--configs ...]
        [--times hourly|raw] [--pypots BRITS SAITS]

Set A on an hourly grid (times rounded to the hour, 49 steps of 0-48 h, 37 channels), or with
``--times raw`` at the stays' own minute-resolution times. BRITS and SAITS need a grid: there
each stay becomes the sequence of its own observation times (hidden values' times included,
padded to the longest stay's number of times), with the time as one more input, and each hidden
value is read at its time's step; latentode reads the stays as they are. The
stays are split 70/10/20 into training, (unused) and test stays; 10% of the observed values of
the test stays are hidden at random (:func:`latentode.evaluation.hold_out`), every model reads
the rest and imputes them. Each learned model gets the same training time, ``--budget``
seconds: every fit stops before an epoch that would end past it (latentode's ``max_time``;
the same rule applied to BRITS's and SAITS's training loops). Errors are
pooled over the hidden values on the scale of the training stays' per-channel standard
deviation (the usual PyPOTS convention) and in the data's units, pooled and per channel
(``mae_by_channel``, standardised). latentode's imputations are
read two ways: the median of ``--samples`` posterior predictive draws, and ``predict``'s
posterior mean (the ``, posterior mean`` rows; no observation noise in its Monte Carlo
error). With correlated noise (``noise_rank``) the same fit's posterior mean is also read with
the conditioning on each time's seen values exact (``condition_limit=None``; the ``, exact
conditioning`` rows) beside the default, which limits a gross seen value's pull. Writes
``benchmarks/results/pypots_imputation.json`` (``pypots_imputation_raw.json`` at raw times).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from latentode import LastValue, LatentODE, LinearInterpolation  # noqa: E402
from latentode.datasets import load_physionet2012  # noqa: E402
from latentode.evaluation import hold_out  # noqa: E402

STEPS = 49  # hours 0..48

#: latentode configurations, each given the same training time as BRITS and SAITS. The
#: second is the configuration the docs suggest for imputing many channels: a latent state
#: of 16 for 37 channels, Student-t noise (its location is robust to the gross values that
#: dominate an absolute error) and imputation training (``hide_fraction``). The fourth and
#: fifth let the channels of one hour share noise components (``noise_rank``), so a hidden
#: value leans on the channels observed in the same hour; the sixth makes that joint noise
#: Student-t, so that gross values (a monitor's 0) do not blur what ties the channels. The
#: seventh and eighth add to it a learned readout of each hidden value from the channels
#: seen in its hour (``same_time_readout``), which can learn relations the linear
#: conditional cannot; the eighth trains it on values hidden from the encoder
#: (``hide_fraction``), as at prediction; the ninth is the eighth without the readout.
LATENT_CONFIGS = {
    "latentode (anchored)": dict(anchor=True),
    "latentode (anchored, Student-t, latent 16)": dict(
        anchor=True, likelihood="student_t", latent_dim=16
    ),
    "latentode (anchored, imputation settings)": dict(
        anchor=True, likelihood="student_t", latent_dim=16, hide_fraction=0.2
    ),
    "latentode (anchored, correlated noise of rank 4, latent 16)": dict(
        anchor=True, noise_rank=4, latent_dim=16
    ),
    "latentode (anchored, correlated noise of rank 8, latent 16)": dict(
        anchor=True, noise_rank=8, latent_dim=16
    ),
    "latentode (anchored, Student-t correlated noise of rank 8, latent 16)": dict(
        anchor=True, noise_rank=8, likelihood="student_t", latent_dim=16
    ),
    "latentode (anchored, Student-t correlated noise of rank 8, same-time readout, latent 16)": (
        dict(anchor=True, noise_rank=8, likelihood="student_t", latent_dim=16, same_time_readout=64)
    ),
    "latentode (anchored, Student-t correlated noise of rank 8, same-time readout, imputation "
    "training, latent 16)": dict(
        anchor=True,
        noise_rank=8,
        likelihood="student_t",
        latent_dim=16,
        same_time_readout=64,
        hide_fraction=0.2,
    ),
    "latentode (anchored, Student-t correlated noise of rank 8, imputation training, latent 16)": (
        dict(anchor=True, noise_rank=8, likelihood="student_t", latent_dim=16, hide_fraction=0.2)
    ),
}


def grid(data, mean, scale) -> np.ndarray:
    """Series on the hourly grid, standardised: array (series, 49, features), NaN unobserved."""
    out = np.full((len(data), STEPS, data.n_features), np.nan, dtype=np.float32)
    for i, s in enumerate(data):
        out[i, np.round(s.times).astype(int)] = (s.values - mean) / scale
    return out


def sequences(data, mean, scale, slots: dict, length: int) -> np.ndarray:
    """Series as sequences of their own observation times, for models that need a grid.

    Each series fills one step per time of ``slots[series id]`` (its times, hidden values'
    included), padded with NaN to ``length`` steps; one more feature holds the time itself
    (hours / 48), so a model that reads steps as equally spaced still sees the gaps. Returns
    an array (series, length, features + 1), standardised, NaN unobserved.
    """
    out = np.full((len(data), length, data.n_features + 1), np.nan, dtype=np.float32)
    for i, s in enumerate(data):
        own = slots[s.id]
        out[i, np.searchsorted(own, s.times), :-1] = (s.values - mean) / scale
        out[i, : own.size, -1] = own / 48.0
    return out


def targets(target, mean, scale):
    """Hidden entries: series positions, times, features and standardised values."""
    rows, times, feats, values = [], [], [], []
    for i, s in enumerate(target):
        r, f = np.nonzero(~np.isnan(s.values))
        rows.append(np.full(r.size, i))
        times.append(s.times[r])
        feats.append(f)
        values.append((s.values[r, f] - mean[f]) / scale[f])
    return tuple(np.concatenate(x) for x in (rows, times, feats, values))


def fit_within(model, fit, budget: float) -> tuple[int, float]:
    """Fit a PyPOTS ``model`` (made with more epochs than can fit) and stop it before an
    epoch that would end past ``budget`` seconds, as latentode's ``max_time`` stops: after
    each epoch the time of the last one is compared with what is left. Returns the epochs
    run and the seconds taken.

    PyPOTS has no time limit; its training loop calls ``_auto_save_model_if_necessary``
    once per epoch, just before it checks ``patience``, so the stop sets ``patience`` to 0
    there. (Epochs set from a timed short fit missed by 40% either way: PyPOTS's epochs are
    not steady.)
    """
    save, start = model._auto_save_model_if_necessary, time.perf_counter()
    ends = [start]

    def after_epoch(*args, **kwargs):
        save(*args, **kwargs)
        ends.append(time.perf_counter())
        if ends[-1] + (ends[-1] - ends[-2]) - start > budget:
            model.patience = 0

    model._auto_save_model_if_necessary = after_epoch
    try:
        fit(model)
    finally:
        model._auto_save_model_if_necessary = save
    return len(ends) - 1, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--physionet-path", required=True, help="folder with set-a.tar.gz")
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds each")
    parser.add_argument("--n-series", type=int, help="a random subset of the stays")
    parser.add_argument("--samples", type=int, default=100, help="latentode draws per value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--times",
        choices=["hourly", "raw"],
        default="hourly",
        help="the hourly grid, or the stays' own (minute) times",
    )
    parser.add_argument(
        "--configs",
        nargs="*",
        type=int,
        help="latentode configurations to run, by position in LATENT_CONFIGS (default all; "
        "none: the PyPOTS models and the simple baselines only)",
    )
    parser.add_argument(
        "--pypots",
        nargs="*",
        choices=["BRITS", "SAITS"],
        default=["BRITS", "SAITS"],
        help="PyPOTS models to run beside latentode (default both; none: leave them out)",
    )
    parser.add_argument("--output", help="JSON to write (default in benchmarks/results)")
    args = parser.parse_args(argv)
    try:
        from pypots.imputation import BRITS, SAITS
    except ImportError:
        parser.exit(1, "this benchmark needs PyPOTS: pip install pypots\n")
    default = "pypots_imputation.json" if args.times == "hourly" else "pypots_imputation_raw.json"
    out = Path(args.output or Path(__file__).parent / "results" / default)

    hourly = args.times == "hourly"
    data = load_physionet2012(args.physionet_path, quantization=1.0 if hourly else None).data
    order = np.random.default_rng(args.seed).permutation(len(data))
    if args.n_series:
        data = data[np.sort(order[: args.n_series])]
        order = np.random.default_rng(args.seed).permutation(len(data))
    n_train = int(0.7 * len(data))
    train, test = data[order[:n_train]], data[order[int(0.8 * len(data)) :]]
    context, target = hold_out(test, fraction=0.1, random_state=args.seed)
    values = np.concatenate([s.values for s in train])
    mean, scale = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    rows, times, feats, truth = targets(target, mean, scale)
    print(f"{len(train)} training stays; {len(target)} test stays, {truth.size} hidden values")

    results, point = {}, {}
    if hourly:
        x_train, x_context = grid(train, mean, scale), grid(context, mean, scale)
        steps = np.round(times).astype(int)
    else:  # each stay a sequence of its own times (the hidden values' times kept as steps)
        slots = {s.id: s.times for s in train} | {s.id: s.times for s in test}
        length = max(t.size for t in slots.values())
        x_train = sequences(train, mean, scale, slots, length)
        x_context = sequences(context, mean, scale, slots, length)
        steps = np.array(
            [np.searchsorted(slots[target[i].id], t) for i, t in zip(rows, times, strict=True)]
        )
    n_steps, n_inputs = x_train.shape[1:]
    for name, cls, kwargs in (
        ("BRITS", BRITS, dict(rnn_hidden_size=108)),
        ("SAITS", SAITS, dict(n_layers=2, d_model=256, n_heads=4, d_k=64, d_v=64, d_ffn=128)),
    ):
        if name not in args.pypots:
            continue

        model = cls(
            n_steps=n_steps,
            n_features=n_inputs,
            epochs=100_000,  # stopped by the budget
            batch_size=32,
            verbose=False,
            **kwargs,
        )
        epochs, seconds = fit_within(model, lambda m: m.fit(train_set={"X": x_train}), args.budget)
        imputed = model.predict({"X": x_context})["imputation"]
        point[name] = np.asarray(imputed)[rows, steps, feats]
        results[name] = {"epochs": epochs, "fit_seconds": seconds, "settings": kwargs}
        print(f"{name}: {epochs} epochs in {seconds:.0f} s", flush=True)

    rules = {}
    chosen = list(LATENT_CONFIGS.items())
    if args.configs is not None:
        chosen = [chosen[i] for i in args.configs]
    for name, settings in chosen:
        # the budget is the estimator's own max_time: its epochs slow down as the dynamics
        # sharpen, so an epoch count timed on the first epoch would overrun
        model = LatentODE(
            **settings,
            max_epochs=100_000,
            max_time=args.budget,
            validation_fraction=0.0,  # every training stay, as BRITS and SAITS get
            random_state=args.seed,
            verbose=False,
        )
        start = time.perf_counter()
        rules[name] = model.fit(train)
        epochs, seconds = len(model.history_.loss), time.perf_counter() - start
        results[name] = {"epochs": epochs, "fit_seconds": seconds, "settings": settings}
        print(f"{name}: {epochs} epochs in {seconds:.0f} s", flush=True)
    own = {s.id: s.times for s in target}
    rules["last value"] = LastValue(random_state=args.seed).fit(train)
    rules["linear interpolation"] = LinearInterpolation(random_state=args.seed).fit(train)
    # each hidden value's (stay, own step, feature) in predictions at the stays' own times
    own_step = [np.searchsorted(target[i].times, t) for i, t in zip(rows, times, strict=True)]
    at = (rows, np.array(own_step), feats)
    for name, model in rules.items():
        draws = {"n_samples": args.samples} if isinstance(model, LatentODE) else {}
        table = model.predict_quantiles(context, times=own, q=[0.5], **draws)
        medians = table.xs(0.5, axis=1, level="quantile")
        lookup = {sid: medians.loc[sid] for sid in own}
        predicted = np.array(
            [
                lookup[target[i].id].iloc[np.searchsorted(target[i].times, t)].iloc[f]
                for i, t, f in zip(rows, times, feats, strict=True)
            ]
        )
        point[name] = (predicted - mean[feats]) / scale[feats]
        results.setdefault(name, {})
        if not isinstance(model, LatentODE):
            continue
        # the point imputation of the API, the posterior mean; with correlated noise also the
        # same fit conditioning on gross seen values as they are
        limit = model.model_.condition_limit
        readouts = [("", limit, "predict (posterior mean)")]
        if model.noise_rank:
            readouts.append(
                (", exact conditioning", None, "predict (posterior mean), condition_limit=None")
            )
        for suffix, cap, readout in readouts:
            model.model_.condition_limit = cap
            means = model.predict(context, times=own).sel(series=target.ids).values
            point[f"{name}, posterior mean{suffix}"] = (means[at] - mean[feats]) / scale[feats]
            results[f"{name}, posterior mean{suffix}"] = {"readout": readout}
        model.model_.condition_limit = limit

    names = list(data.feature_names)
    for name, guess in point.items():
        error = guess - truth
        raw = error * scale[feats]
        results[name].update(
            mae=float(np.mean(np.abs(error))),
            mse=float(np.mean(error**2)),
            mae_raw=float(np.mean(np.abs(raw))),
            mse_raw=float(np.mean(raw**2)),
            # standardised MAE per channel, where the pooled figure's gaps come from
            mae_by_channel={
                names[f]: float(np.mean(np.abs(error[feats == f]))) for f in np.unique(feats)
            },
        )
    print(f"\n{'model':42s} {'MAE':>7s} {'MSE':>7s} {'MAE raw':>9s} {'MSE raw':>10s}")
    for name, r in results.items():
        print(
            f"{name:42s} {r['mae']:7.4f} {r['mse']:7.4f} {r['mae_raw']:9.3f} {r['mse_raw']:10.1f}"
        )
    payload = {
        # file names only: results must not carry this machine's paths
        "configuration": vars(args)
        | {"output": out.name, "physionet_path": Path(args.physionet_path).name},
        "stays": {"train": len(train), "test": len(target)},
        "hidden_values": int(truth.size),
        "hidden_by_channel": {names[f]: int(np.sum(feats == f)) for f in np.unique(feats)},
        "results": results,
    }
    write_results(out, payload)


if __name__ == "__main__":
    main()
