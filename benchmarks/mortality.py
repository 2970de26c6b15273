"""In-hospital mortality on PhysioNet 2012 beside a summary logistic regression and GRU-D.

    python benchmarks/mortality.py --physionet-path DIR [--seeds 0 1 2]
        [--configs default log log-averaged] [--static] [--summaries] [--members K]
    pip install pypots  # optional: adds PyPOTS's GRU-D (a benchmark extra, not a dependency)

Set A, for each seed a stratified split of the stays into 80% training and 20% test; 10% of
the training stays validate (early stopping of the learned models). On the same split:

- ``summary logistic regression`` (:class:`~latentode.SummaryLogisticRegression`: first,
  last, min, max, mean and count of every channel; its penalty chosen by cross-validation on
  the training stays, its default);
- :class:`~latentode.LatentODEClassifier` in the configurations of ``--configs``
  (see ``CONFIGS``);
- PyPOTS GRU-D on the hourly grid (49 steps, standardised with the training stays), when
  ``pypots`` is installed.

With ``--static`` the logistic regression and the Latent ODE classifiers also read the
admission descriptors as static covariates (age, gender, height, weight, ICU type as one
indicator per type; ``IrregularDataset.with_static``); GRU-D reads the series only. With
``--summaries`` the Latent ODE classifiers also read each stay's summaries — the logistic
regression's first, last, min, max, mean and log count of every channel — as static
covariates beside the latent state (the logistic regression reads them as before, once).

With ``--members K`` each configuration is fitted K times (``random_state`` the split's seed
plus 10 k) and two more rows are scored: the K classifiers' soft vote (their mean
probability, what :class:`sklearn.ensemble.VotingClassifier` with ``voting="soft"``
computes) and the same vote with the logistic regression as one more member. The single
classifier's row is the first member's.

Reports the ROC-AUC and PR-AUC on the test stays for each seed, their mean, and for each
model the mean AUC difference to the logistic regression with a paired bootstrap 95%
interval (stays resampled within each split). Writes ``benchmarks/results/mortality.json``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from latentode import LatentODEClassifier, SummaryLogisticRegression  # noqa: E402
from latentode.datasets import load_physionet2012  # noqa: E402

#: LatentODEClassifier configurations; every one with a latent state of 20, batches of 50,
#: the label weighted 100 against the ELBO, and early stopping on the validation stays.
BASE = dict(latent_dim=20, batch_size=50, label_weight=100.0, max_epochs=40, patience=8)
CONFIGS = {
    "default": {},
    "log": dict(log_features="auto"),
    # the same, returning the mean of the parameters from the best validated epoch to the
    # early stop (the best epoch and the ``patience`` epochs after it)
    "log-averaged": dict(log_features="auto", average_from_best=True),
}
STEPS = 49


def with_summaries(stays):
    """``stays`` with each one's summaries as static covariates beside any it has: per
    channel its first, last, min, max, mean and log(1 + count) (NaN where never observed)."""
    import pandas as pd

    table = SummaryLogisticRegression.summaries(stays)[:, : 6 * stays.n_features]
    stats = ("first", "last", "min", "max", "mean", "log_count")
    columns = [f"{f}_{stat}" for f in stays.feature_names for stat in stats]
    frame = pd.DataFrame(table, index=stays.ids, columns=columns)
    if stays.n_static:
        frame = pd.concat([stays.static, frame], axis=1)
    return stays.with_static(frame)


def hourly(data, mean, scale) -> np.ndarray:
    """Stays on the hourly grid, standardised: array (stays, 49, channels), NaN unobserved."""
    out = np.full((len(data), STEPS, data.n_features), np.nan, dtype=np.float32)
    for i, s in enumerate(data):
        rows = np.clip(np.round(s.times).astype(int), 0, STEPS - 1)
        for row, v in zip(rows, (s.values - mean) / scale, strict=True):
            seen = np.isfinite(v)
            out[i, row, seen] = v[seen]  # the hour's last value of each channel
    return out


def grud_scores(train, y_train, val, y_val, test, seed: int) -> np.ndarray | None:
    """GRU-D's probability of death for the test stays, or None without pypots."""
    try:
        from pypots.classification import GRUD
    except ImportError:
        return None
    import torch

    torch.manual_seed(seed)
    values = np.concatenate([s.values for s in train])
    mean, scale = np.nanmean(values, 0), np.nanstd(values, 0)
    scale = np.where(scale > 0, scale, 1.0)
    model = GRUD(
        n_steps=STEPS,
        n_features=train.n_features,
        n_classes=2,
        rnn_hidden_size=64,
        batch_size=64,
        epochs=40,
        patience=8,
        verbose=False,
    )
    model.fit(
        {"X": hourly(train, mean, scale), "y": y_train},
        {"X": hourly(val, mean, scale), "y": y_val},
    )
    return np.asarray(model.predict_proba({"X": hourly(test, mean, scale)}))[:, 1]


def paired_bootstrap(y, a, b, *, rng, rounds: int = 2000) -> tuple[float, float]:
    """95% interval of AUC(a) - AUC(b) over stays resampled with replacement."""
    diffs = []
    n = len(y)
    while len(diffs) < rounds:
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        diffs.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
    return tuple(float(x) for x in np.percentile(diffs, [2.5, 97.5]))


def score(row: dict, scores: dict, y_test, rng, key: str, p: np.ndarray, seconds: float):
    """Score one model's probabilities on the test stays; record and print the row."""
    scores[key] = p
    reference = next(iter(scores.values()))  # the logistic regression, scored first
    m = row["models"][key] = {
        "roc_auc": float(roc_auc_score(y_test, p)),
        "pr_auc": float(average_precision_score(y_test, p)),
        "seconds": seconds,
        "vs_logistic_95": paired_bootstrap(y_test, p, reference, rng=rng),
    }
    print(
        f"seed {row['seed']}  {key:38s} ROC-AUC {m['roc_auc']:.3f}  PR-AUC {m['pr_auc']:.3f}  "
        f"minus LR [{m['vs_logistic_95'][0]:+.3f}, {m['vs_logistic_95'][1]:+.3f}]  "
        f"{seconds:.0f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--physionet-path", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        help="Latent ODE classifiers per configuration, with their own seeds; with more than "
        "one, their soft vote (mean probability) and that vote with the logistic regression "
        "as one more member are scored too",
    )
    parser.add_argument("--no-grud", action="store_true", help="leave PyPOTS's GRU-D out")
    parser.add_argument(
        "--static", action="store_true", help="admission descriptors as static covariates"
    )
    parser.add_argument(
        "--summaries",
        action="store_true",
        help="the Latent ODE classifiers also read each stay's summaries as static covariates",
    )
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "mortality.json")
    )
    args = parser.parse_args()
    icu = load_physionet2012(args.physionet_path, quantization=0.1)
    y = np.asarray(icu.y)
    stays, tag = icu.data, ""
    if args.static:
        descriptors = icu.static.assign(ICUType=icu.static["ICUType"].astype("category"))
        stays, tag = icu.data.with_static(descriptors), " + descriptors"
    lr_stays, ode_stays, ode_tag = stays, stays, tag
    if args.summaries:
        ode_stays, ode_tag = with_summaries(stays), tag + " + summaries"
    runs = []
    for seed in args.seeds:
        idx = np.arange(len(icu.data))
        train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=seed, stratify=y)
        fit_idx, val_idx = train_test_split(
            train_idx, test_size=0.1, random_state=seed, stratify=y[train_idx]
        )
        train, val, test = ode_stays[fit_idx], ode_stays[val_idx], ode_stays[test_idx]
        y_test = y[test_idx]
        rng = np.random.default_rng(seed)
        row = {"seed": seed, "n_test": len(test_idx), "deaths": int(y_test.sum()), "models": {}}
        scores = {}

        record = functools.partial(score, row, scores, y_test, rng)
        start = time.perf_counter()
        lr = SummaryLogisticRegression().fit(lr_stays[train_idx], y[train_idx])
        p = lr.predict_proba(lr_stays[test_idx])[:, 1]
        lr_key = "summary logistic regression" + tag
        record(lr_key, p, time.perf_counter() - start)
        for name in args.configs:
            members, seconds = [], []
            for k in range(args.members):  # member k: random_state seed + 10 k
                start = time.perf_counter()
                model = LatentODEClassifier(
                    **BASE, **CONFIGS[name], random_state=seed + 10 * k, verbose=False
                )
                model.fit(train, y[fit_idx], validation_data=(val, y[val_idx]))
                members.append(model.predict_proba(test)[:, 1])
                seconds.append(time.perf_counter() - start)
            key = f"LatentODEClassifier ({name}){ode_tag}"
            record(key, members[0], seconds[0])
            if args.members > 1:  # soft voting, as sklearn.ensemble.VotingClassifier does
                vote = np.mean(members, axis=0)
                record(f"{args.members} x {key}", vote, sum(seconds))
                with_lr = (vote * args.members + scores[lr_key]) / (args.members + 1)
                record(f"{args.members} x {key} + logistic regression", with_lr, sum(seconds))
        if not args.no_grud:
            start = time.perf_counter()
            grud = grud_scores(
                stays[fit_idx], y[fit_idx], stays[val_idx], y[val_idx], stays[test_idx], seed
            )
            if grud is not None:
                record("PyPOTS GRU-D", grud, time.perf_counter() - start)
        runs.append(row)
        summarise(runs, args)  # after every split, so that an interrupted run keeps its part


def summarise(runs: list, args) -> None:
    """Print the mean AUCs over the splits so far and write the JSON."""
    summary = {}
    for key in runs[0]["models"]:
        auc = [r["models"][key]["roc_auc"] for r in runs]
        pr = [r["models"][key]["pr_auc"] for r in runs]
        summary[key] = {"roc_auc_mean": float(np.mean(auc)), "pr_auc_mean": float(np.mean(pr))}
        print(f"mean  {key:38s} ROC-AUC {np.mean(auc):.3f}  PR-AUC {np.mean(pr):.3f}")
    config = {
        **BASE,
        "seeds": [r["seed"] for r in runs],
        "configs": args.configs,
        "static": bool(args.static),
        "summaries": bool(args.summaries),
        "members": args.members,
    }
    write_results(Path(args.output), {"configuration": config, "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
