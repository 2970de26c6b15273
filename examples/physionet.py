"""ICU records: mortality and posterior extrapolation of vital signs (PhysioNet 2012, set A).

Fits a :class:`latentode.LatentODEClassifier` (ODE-RNN encoder by default, in-hospital death
as a label of ``z0``, optionally the Poisson process of observation times) on 80% of the stays
of the PhysioNet/CinC Challenge 2012 set A, and on the other 20% reports:

- mortality AUC (area under the ROC curve of ``predict_proba``);
- interpolation MSE: condition on all of a stay's observations and reconstruct them;
- extrapolation MSE: condition on the first 24 hours, predict the observations of the next 24;

both MSEs on the scale of Rubanova et al. (2019), ``(x - min) / max`` with each channel's
minimum and maximum over the data set (their ``normalize_masked_data``; for most channels the
minimum is near 0 and this is close to [0, 1]). Each MSE is given twice: the posterior mean's
error over all observed values, and the aggregation of their reference code, under which the
paper's figures were computed — per posterior draw, the MSE of each (stay, channel) over its
observed times, averaged over all stays × channels with never-measured channels counting as
zero (:func:`latentode.metrics.series_feature_mse` with ``unobserved="zero"``). Their Latent
ODE (ODE encoder) scores interpolation 2.118e-3 and extrapolation 2.231e-3 on that scale;
their best mortality AUC is 0.833 (ODE-RNN). They fit separate models for the three tasks;
``--no-labels`` fits the reconstruction model (a :class:`latentode.LatentODE`) alone. Writes
a figure of a few vital signs of one held-out patient: the first 24 hours observed, the
posterior mean and bands over 48 hours, and the later measurements for comparison.

Needs ``set-a.tar.gz`` and ``Outcomes-a.txt`` in ``--path`` (see
:func:`latentode.datasets.load_physionet2012`; ``--download`` fetches them).

    python examples/physionet.py --help
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from latentode import LatentODE, LatentODEClassifier  # noqa: E402
from latentode.datasets import load_physionet2012  # noqa: E402
from latentode.metrics import series_feature_mse  # noqa: E402
from latentode.plotting import plot_posterior  # noqa: E402
from latentode.profiling import peak_rss_mib  # noqa: E402

VITALS = ["HR", "MAP", "Temp", "RespRate"]


def scaled_mse(model, condition, target, span, *, n_samples: int = 5) -> tuple[float, float]:
    """Errors at the target's observed points, divided by ``span`` (one per channel).

    Returns two aggregations. First, the MSE of the posterior mean over all observed entries.
    Second, the reference code's (Rubanova et al.; the scale of the paper's PhysioNet MSEs):
    each posterior draw's MSE per (stay, channel) over that channel's observed times, averaged
    over all stays × channels with the channels a stay never measured counting as zero
    error, then over the draws (:func:`latentode.metrics.series_feature_mse`).
    """
    total, count, reference = 0.0, 0, 0.0
    for k in range(0, len(target), 100):
        cond, tgt = condition[k : k + 100], target[k : k + 100]
        grid = tgt.to_xarray()
        # a classifier's predict gives classes; its series' posterior mean is predict_series
        predict = getattr(model, "predict_series", model.predict)
        pred = predict(cond, times=grid.time.values).values
        truth = grid.values
        err = ((pred - truth) / span) ** 2
        total += np.nansum(err)
        count += int(np.isfinite(err).sum())
        draws = model.sample(cond, times=grid.time.values, n_samples=n_samples)["mean"].values
        reference += len(tgt) * series_feature_mse(truth / span, draws / span, unobserved="zero")
    return total / count, reference / len(target)


def _config(args) -> dict:
    """The run's settings, without the file paths of the machine it ran on."""
    return {k: v for k, v in vars(args).items() if k not in ("output", "json", "path")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", help="folder with set-a.tar.gz and Outcomes-a.txt")
    parser.add_argument("--download", action="store_true", help="fetch missing files")
    parser.add_argument("--n-stays", type=int, help="use a random subset of the stays")
    parser.add_argument("--quantization", type=float, default=0.1, help="hours")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument(
        "--encoder",
        choices=["odernn", "gru"],
        default="odernn",
        help="recognition network (the GRU is several times faster on CPU)",
    )
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--lr-decay", type=float, default=0.99, help="per epoch")
    parser.add_argument(
        "--average-epochs",
        type=int,
        default=0,
        help="fit with the mean parameters of this many last epochs (see LatentODE)",
    )
    parser.add_argument(
        "--kl-anneal-epochs",
        type=int,
        default=0,
        help="epochs over which the KL weight rises to --kl-weight",
    )
    parser.add_argument(
        "--kl-weight",
        type=float,
        default=1.0,
        help="KL weight after annealing (1: the ELBO; see LatentODE)",
    )
    parser.add_argument(
        "--obs-weighting",
        choices=["point", "series_feature"],
        default="point",
        help="training weight of the observations: each value once, or each "
        "(stay, channel) pair the same in total as the paper's code and its "
        "MSE aggregation (see LatentODE)",
    )
    parser.add_argument("--label-weight", type=float, default=100.0)
    parser.add_argument("--poisson", action="store_true", help="model observation times too")
    parser.add_argument(
        "--no-labels",
        action="store_true",
        help="fit a LatentODE without the mortality label (the paper fits its "
        "interpolation and extrapolation models so); no AUC is reported",
    )
    parser.add_argument(
        "--obs-std",
        type=float,
        help="fix the observation noise at this fraction of each channel's "
        "maximum (the paper: 0.01 on its (x - min) / max scale); learned if "
        "omitted",
    )
    parser.add_argument(
        "--encode-fraction",
        type=float,
        default=1.0,
        help="train the encoder on random leading parts of each stay "
        "(see LatentODE); 0.5 prepares the model for extrapolation",
    )
    parser.add_argument(
        "--validation",
        type=float,
        default=0.0,
        help="share of the training stays held out to pick the best epoch",
    )
    parser.add_argument(
        "--patience", type=int, help="stop after this many epochs without validation improvement"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="physionet.png", help="figure to write")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--verbose", action="store_true", help="progress bar even off a terminal")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    icu = load_physionet2012(args.path, download=args.download, quantization=args.quantization)
    print(
        f"loaded {len(icu.data)} stays in {time.perf_counter() - start:.1f} s "
        f"({len(icu.excluded)} without time series left out)"
    )
    idx = np.arange(len(icu.data))
    if args.n_stays:
        rng = np.random.default_rng(args.seed)
        idx = np.sort(rng.choice(idx, size=min(args.n_stays, idx.size), replace=False))
    train_idx, test_idx = train_test_split(
        idx, test_size=0.2, random_state=args.seed, stratify=icu.y[idx]
    )
    fit_kwargs = {}
    if args.validation > 0:
        train_idx, val_idx = train_test_split(
            train_idx, test_size=args.validation, random_state=args.seed, stratify=icu.y[train_idx]
        )
        val = icu.data[val_idx]
        fit_kwargs["validation_data"] = val if args.no_labels else (val, icu.y[val_idx])
    train, test = icu.data[train_idx], icu.data[test_idx]

    # the metric's scale, as Rubanova et al.: (x - min) / max over the whole data set, so an
    # error divides by the channel's maximum (1 where that is 0)
    values = np.concatenate([s.values for s in icu.data])
    hi = np.nanmax(values, 0)
    span = np.where(hi != 0, hi, 1.0)
    params = dict(
        obs_std=None if args.obs_std is None else [float(x) for x in args.obs_std * span],
        encoder=args.encoder,
        latent_dim=args.latent_dim,
        poisson=args.poisson,
        encode_fraction=args.encode_fraction,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        average_epochs=args.average_epochs,
        kl_anneal_epochs=args.kl_anneal_epochs,
        kl_weight=args.kl_weight,
        patience=args.patience,
        obs_weighting=args.obs_weighting,
        validation_fraction=0.0,  # the paper's protocol: every training series
        random_state=args.seed,
        verbose="force" if args.verbose else True,  # a progress bar in a terminal
    )
    start = time.perf_counter()
    if args.no_labels:
        model = LatentODE(**params).fit(train, **fit_kwargs)
    else:
        model = LatentODEClassifier(label_weight=args.label_weight, **params)
        model.fit(train, icu.y[train_idx], **fit_kwargs)
    fit_seconds = time.perf_counter() - start

    early, late = test.split_at(24.0)
    interp, interp_reference = scaled_mse(model, test, test, span)
    extrap, extrap_reference = scaled_mse(model, early, late, span)
    results = {
        "mortality_auc": None
        if args.no_labels
        else float(roc_auc_score(icu.y[test_idx], model.predict_proba(test)[:, 1])),
        "interpolation_mse": float(interp),
        "extrapolation_mse": float(extrap),
        "interpolation_mse_reference_scale": float(interp_reference),
        "extrapolation_mse_reference_scale": float(extrap_reference),
        "fit_seconds": fit_seconds,
        "n_train": len(train),
        "best_epoch": model.history_.best_epoch,
        "n_test": len(test),
        "peak_rss_mib": peak_rss_mib(),
    }
    print(f"fitted {len(train)} stays in {fit_seconds:.0f} s; on {len(test)} held-out stays:")
    if results["mortality_auc"] is not None:
        print(f"  mortality AUC       {results['mortality_auc']:.3f}   (paper, best: 0.833)")
    print(
        f"  interpolation MSE   {results['interpolation_mse']:.3e} over observed values; "
        f"{results['interpolation_mse_reference_scale']:.3e} on the paper's scale "
        "(paper: 2.118e-3)"
    )
    print(
        f"  extrapolation MSE   {results['extrapolation_mse']:.3e} over observed values; "
        f"{results['extrapolation_mse_reference_scale']:.3e} on the paper's scale "
        "(paper: 2.231e-3)"
    )

    # one held-out patient: first 24 h observed, 48 h of posterior
    counts = [
        sum(np.isfinite(s.values[:, early.feature_names.index(v)]).sum() for v in VITALS)
        for s in early
    ]
    patient = early[[int(np.argmax(counts))]]
    sid = patient.ids[0]
    draws = model.sample(patient, times=np.linspace(0, 48, 97), n_samples=200)
    fig, axes = plt.subplots(len(VITALS), 1, figsize=(8, 2.2 * len(VITALS)), sharex=True)
    plot_posterior(draws, patient, series=sid, features=VITALS, axes=axes)
    later = late[late.ids.index(sid)]
    for ax, v in zip(axes, VITALS, strict=True):
        col = later.values[:, late.feature_names.index(v)]
        ax.scatter(later.times, col, s=12, color="C3", marker="x", label="later measurements")
    axes[0].legend(fontsize="small", ncol=3, loc="upper left")
    fig.suptitle(f"stay {sid}: conditioned on 24 hours")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    if args.json:
        record = {"config": _config(args), "results": results}
        Path(args.json).write_text(json.dumps(record, indent=2))
    return results


if __name__ == "__main__":
    main()
