"""The ``latentode`` command: fit, predict and plot irregular series from files.

    latentode fit data.csv --id-col patient --time-col hours --model model.pt
    latentode predict model.pt data.csv --id-col patient --time-col hours \\
        --horizon 24 --step 1 --output forecast.csv
    latentode plot model.pt data.csv --id-col patient --time-col hours --output plot.png
    latentode evaluate model.pt data.csv --id-col patient --time-col hours --last 24 \\
        --output scores.csv --plot reliability.png
    latentode demo

Input is a long table, one row per (series, time) and one column per feature (CSV, Parquet,
or NetCDF with those variables); it goes through the same validation gate as the Python API.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from ._query import long_times
from ._validation import integer, real
from .latent_ode import PARAMETERS
from .solvers import raised_error

__all__ = ["main"]

_ESTIMATOR = {c.name: c for c in PARAMETERS}
_SEED = integer("random_state", low=0)
#: The spiral benchmark's settings (forecast training, the data's noise fixed), for ``demo``.
#: The estimator's options the ``fit`` command offers, with their help.
_FIT_OPTIONS = {
    "max_epochs": "passes over the training series",
    "max_time": "training budget in seconds: stop before an epoch that would end past it "
    "(none: no limit)",
    "latent_dim": "size of the latent state z",
    "encoder": "recognition network run backwards over each series",
    "guide": "family of the posterior of z0",
    "importance_samples": "predictions: proposals of z0 reweighted toward each series' "
    "posterior (0: the encoder's own draws)",
    "ode_hidden_dim": "width of the dynamics network",
    "encoder_hidden_dim": "width of the encoder",
    "encoder_solver": "odernn encoder: steps between observations (euler: cheaper)",
    "decoder_hidden_dim": "width of the decoder",
    "anchor": "blend forecasts with each feature's nearest observations (see LatentODE); "
    "path: carry them along the decoded path first",
    "likelihood": "observation noise; student_t for data with gross entry errors",
    "noise_rank": "shared noise components across the features of one time (0: independent); "
    "predictions then lean on the other features observed at the same time",
    "condition_limit": "with noise_rank: conditioning on the values seen at the same time "
    "counts each at most this many noise scales from the model's mean (none: as they are)",
    "same_time_readout": "width of a learned readout of each feature from the others observed "
    "at the same time (0: none)",
    "heteroscedastic": "let each feature's noise scale vary with the latent state",
    "obs_std": "observation noise SD in data units: one number, one per feature "
    "(comma-separated), or none to learn it",
    "log_features": "model these features on a log scale, keeping them positive: auto (every "
    "feature never negative), names separated by commas, or none",
    "obs_weighting": "how observations are weighted in the likelihood",
    "poisson": "also model when observations are taken (Poisson process)",
    "encode_fraction": "below 1, train to forecast from the first part of each series (e.g. 0.5)",
    "hide_fraction": "share of values hidden from the encoder in training, to learn to impute",
    "batch_size": "series per optimisation step",
    "lr": "learning rate (Adam)",
    "lr_decay": "learning rate multiplier per epoch",
    "average_epochs": "average the parameters of this many last epochs",
    "average_from_best": "return the mean of the parameters from the best validated epoch on",
    "kl_anneal_epochs": "epochs over which the KL term's weight rises to 1",
    "elbo": "how the ELBO is estimated: the KL of z0 in closed form, or sampled",
    "clip_norm": "gradient norm clipping (none to turn off)",
    "subsample": "share of each series' observations used per step",
    "patience": "stop after this many epochs without a better validation loss (none: never)",
    "max_nfe": "cap on function evaluations per ODE solve (none: no cap)",
    "device": "where to fit: auto picks a GPU when there is one",
}
#: Most query times per series a horizon may ask for (each costs a decoder pass per draw).
MAX_QUERY_POINTS = 10_000
_DEMO_SETTINGS = dict(lr=0.02, lr_decay=0.997, encode_fraction=0.5, obs_std=0.1)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default."""


class CommandError(Exception):
    """A user error to report in one line, without a traceback."""


def _read_table(path: str) -> pd.DataFrame:
    file = Path(path)
    if not file.exists():
        raise CommandError(f"{path}: no such file.")
    suffix = file.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            return pd.read_csv(file)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(file)
        if suffix in (".nc", ".netcdf"):
            import xarray as xr

            with xr.open_dataset(file) as ds:
                return ds.to_dataframe().reset_index()
    except ImportError as err:
        needed = err.name or {".parquet": "pyarrow", ".pq": "pyarrow"}.get(suffix, "netCDF4")
        raise CommandError(
            f"{path}: reading {suffix} files needs the package {needed} (pip install {needed})."
        ) from None
    raise CommandError(f"{path}: unknown file type {suffix!r}; use .csv, .parquet or .nc.")


def _load_data(args):
    from .datasets import from_pandas

    frame = _read_table(args.data)
    for option, column in (("--id-col", args.id_col), ("--time-col", args.time_col)):
        if column not in frame.columns:
            raise CommandError(
                f"{args.data}: {option} {column!r} is not a column; columns are "
                f"{list(frame.columns)}."
            )
    time_unit = args.time_unit
    if time_unit is not None:
        frame = _elapsed(frame, args)
    elif not pd.api.types.is_numeric_dtype(frame[args.time_col]):
        raise CommandError(
            f"{args.data}: --time-col {args.time_col!r} holds {frame[args.time_col].dtype} "
            f"values such as {frame[args.time_col].iloc[0]!r}, not numbers; for dates and "
            "times pass --time-unit (e.g. h) to count time from each series' first observation "
            "(or from --time-origin)."
        )
    data = from_pandas(
        frame,
        id_col=args.id_col,
        time_col=args.time_col,
        value_cols=args.value_cols or None,
        time_unit=time_unit,
    )
    return data if args.static is None else data.with_static(_static_table(args))


def _static_table(args) -> pd.DataFrame:
    """The --static table indexed by series id, text columns as categories."""
    table = _read_table(args.static)
    if args.id_col not in table.columns:
        raise CommandError(
            f"{args.static}: --id-col {args.id_col!r} is not a column; columns are "
            f"{list(table.columns)}."
        )
    table = table.set_index(args.id_col)
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c].dtype)]
    text = [c for c in text if table[c].dtype != bool]
    return table.astype({c: "category" for c in text})


def _elapsed(frame: pd.DataFrame, args) -> pd.DataFrame:
    """Dates/times of ``--time-col`` as timedeltas from each series' first observation or
    from ``--time-origin``; numbers are taken as already counted in ``--time-unit``."""
    column = frame[args.time_col]
    if pd.api.types.is_numeric_dtype(column):
        return frame
    try:
        stamps = pd.to_datetime(column, format="mixed")
    except (ValueError, TypeError) as err:
        raise CommandError(
            f"{args.data}: --time-col {args.time_col!r} is neither numbers nor dates/times "
            f"({str(err).splitlines()[0]})."
        ) from None
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise CommandError(f"{args.data}: --time-col {args.time_col!r} is empty in row {row}.")
    if args.time_origin == "series":
        origin = stamps.groupby(frame[args.id_col]).transform("min")
    else:
        try:
            origin = pd.Timestamp(args.time_origin)
        except (ValueError, TypeError):
            raise CommandError(
                f"--time-origin {args.time_origin!r}: give 'series' or a date/time."
            ) from None
        if (stamps.dt.tz is None) != (origin.tz is None):
            raise CommandError(
                f"--time-origin {args.time_origin!r} and --time-col {args.time_col!r}: one has "
                "a time zone and the other not; give both with or both without."
            )
    return frame.assign(**{args.time_col: stamps - origin})


def _query_times(args) -> np.ndarray | None:
    """The common grid of ``--times``, if given."""
    if not args.times:
        return None
    try:
        return np.asarray([float(t) for t in args.times.split(",")])
    except ValueError:
        raise CommandError(f"--times {args.times!r}: give numbers separated by commas.") from None


def _own_times(args, data) -> dict | None:
    """Each series' query times from ``--times-file`` (rows of id and time), if given."""
    if not args.times_file:
        return None
    if args.times or args.horizon is not None:
        raise CommandError("--times-file: give it alone, without --times or --horizon.")
    frame = _read_table(args.times_file)
    missing = [c for c in (args.id_col, args.time_col) if c not in frame.columns]
    if missing:
        raise CommandError(
            f"{args.times_file}: no column {missing[0]!r}; give one row per query time with the "
            f"--id-col {args.id_col!r} and --time-col {args.time_col!r} columns."
        )
    if not pd.api.types.is_numeric_dtype(frame[args.time_col]):
        raise CommandError(
            f"{args.times_file}: --time-col {args.time_col!r} must hold numbers, counted as in "
            "the data (for dates, the elapsed time in --time-unit from the same origin)."
        )
    wanted = {str(i) for i in data.ids}
    unknown = sorted({str(i) for i in frame[args.id_col]} - wanted)
    if unknown:
        raise CommandError(
            f"{args.times_file}: series {unknown[:5]} are not in {args.data}; ids there are "
            f"e.g. {data.ids[:5]}."
        )
    times = frame[[args.id_col, args.time_col]].dropna()
    if times.empty:
        raise CommandError(f"{args.times_file}: no query times (every row is empty).")
    times = times.assign(**{args.id_col: times[args.id_col].astype(str)})
    return long_times(times)  # the library's own reading of an (id, time) table


def _n_points(args) -> int:
    """Query times per series of ``--horizon`` / ``--step`` (refused beyond the limit)."""
    n_points = math.ceil(args.horizon / args.step - 1e-9) if args.step else 20
    if n_points > MAX_QUERY_POINTS:
        raise CommandError(
            f"--horizon {args.horizon:g} with --step {args.step:g} asks for {n_points} times per "
            f"series, more than {MAX_QUERY_POINTS}; use a larger --step."
        )
    return n_points


def _ahead(args, data) -> np.ndarray | None:
    """Each series' ``--horizon`` grid after its own last observation, united."""
    if args.horizon is None or args.times:
        return None
    step = args.horizon / _n_points(args)
    ahead = np.arange(step, args.horizon + step / 2, step)
    return np.unique(np.concatenate([s.times[-1] + ahead for s in data]))


def _fit(args) -> None:
    from . import LatentODE

    _writable("--model", args.model)
    if args.checkpoint:
        _writable("--checkpoint", args.checkpoint)
    if args.stream:
        data = train = _streamed(args)
        validation = None
    else:
        data = _load_data(args)
        train, validation = _split_validation(data, args.validation_fraction, args.seed)
    options = {name: getattr(args, name) for name in _FIT_OPTIONS}
    model = LatentODE(
        **options,
        validation_fraction=0.0,  # the command holds out --validation-fraction itself
        random_state=args.seed,
        verbose="force" if args.progress else not args.quiet,
    )
    model.fit(train, validation_data=validation, checkpoint=args.checkpoint, resume=args.resume)
    try:
        model.save(args.model)
    except OSError as err:  # keep hours of training: write it where we can, and say where
        rescue = Path(tempfile.gettempdir()) / f"latentode-fitted-{os.getpid()}.pt"
        model.save(rescue)
        raise CommandError(
            f"--model {args.model}: could not be written ({err}); the fitted model was saved "
            f"to {rescue} instead."
        ) from err
    held = f" ({len(validation)} held out for validation)" if validation is not None else ""
    print(
        f"fitted {len(data)} series{held} × {len(data.feature_names)} features in "
        f"{len(model.history_.loss)} epochs (final loss {model.history_.loss[-1]:.4g}); "
        f"wrote {args.model}"
    )


def _streamed(args):
    """``fit --stream``: the Parquet file or folder of ``data`` opened for reading in blocks."""
    from .datasets import ParquetSeries

    path = Path(args.data)
    if not path.exists():
        raise CommandError(f"{args.data}: no such file or folder.")
    if path.is_file() and path.suffix.lower() not in (".parquet", ".pq"):
        raise CommandError(
            f"{args.data}: --stream reads Parquet (a .parquet file or a folder of them); "
            "convert the table, or fit without --stream to load it in memory."
        )
    for option, given in (("--static", args.static is not None), ("--time-unit", args.time_unit)):
        if given:
            raise CommandError(
                f"{option} is not available with --stream; give elapsed times as numbers and "
                "fit without static covariates, or fit in memory without --stream."
            )
    if args.validation_fraction > 0:
        print(
            "--stream: no series are held out for validation (the last epoch is kept and the "
            "bands stay uncalibrated); calibrate later on other series with "
            "LatentODE.calibrate.",
            file=sys.stderr,
        )
    try:
        return ParquetSeries(
            path,
            id_col=args.id_col,
            time_col=args.time_col,
            value_cols=args.value_cols or None,
            workers=args.workers,
        )
    except ImportError:
        raise CommandError("--stream needs the package pyarrow (pip install pyarrow).") from None
    except ValueError as err:
        raise CommandError(f"{args.data}: {err}") from None


def _split_validation(data, fraction: float, seed: int):
    """Whole series held out at random for validation, or None when too few would be."""
    n_val = int(round(fraction * len(data)))
    if n_val < 1 or len(data) - n_val < 1:
        return data, None
    order = np.random.default_rng(seed).permutation(len(data))
    return data[np.sort(order[n_val:])], data[np.sort(order[:n_val])]


def _obs_std(text: str):
    """``--obs-std``: ``none``, one number, or one per feature separated by commas."""
    if text.strip().lower() == "none":
        return None
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = None
    value = None if values is None else (values[0] if len(values) == 1 else values)
    check = _ESTIMATOR["obs_std"]
    if values is None or not check.ok(value):
        raise argparse.ArgumentTypeError(check.requirement(text))
    return value


def _log_features(text: str):
    """``--log-features``: ``none``, ``auto``, or feature names separated by commas."""
    text = text.strip()
    if text.lower() == "none":
        return None
    if text.lower() == "auto":
        return "auto"
    names = [f.strip() for f in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"--log-features {text!r}: an empty feature name.")
    return names


def _anchor(text: str):
    """``--anchor`` values: ``level`` (the same as ``--anchor`` alone) or ``path``."""
    if text not in ("level", "path"):
        raise argparse.ArgumentTypeError(
            f"--anchor {text!r}: give level (the default of --anchor) or path."
        )
    return True if text == "level" else "path"


def _estimator_option(parser, name: str, help_text: str) -> None:
    """``--name`` for the LatentODE parameter ``name``: its check, its default."""
    from . import LatentODE

    default = inspect.signature(LatentODE).parameters[name].default
    flag = "--epochs" if name == "max_epochs" else "--" + name.replace("_", "-")
    constraint = _ESTIMATOR.get(name)
    if name == "anchor":  # --anchor (the level blend), --anchor path, --no-anchor
        parser.add_argument(
            flag, dest=name, nargs="?", const=True, default=default, type=_anchor, help=help_text
        )
        parser.add_argument("--no-anchor", dest=name, action="store_false", help="no anchor")
        return
    if isinstance(default, bool):
        parser.add_argument(
            flag, dest=name, action=argparse.BooleanOptionalAction, default=default, help=help_text
        )
        return
    kwargs = {}
    if name == "obs_std":
        kwargs["type"] = _obs_std
    elif name == "log_features":
        kwargs["type"] = _log_features
    elif name == "device":
        kwargs["choices"] = ["auto", "cpu", "cuda"]
    elif constraint.kind == "choice":
        kwargs["choices"] = list(constraint.choices)
    else:
        kwargs["type"] = constraint.parse
    parser.add_argument(flag, dest=name, default=default, help=help_text, **kwargs)


def _writable(option: str, value, suffixes: tuple[str, ...] | None = None) -> Path:
    """The output path of ``option``, checked before any work: a known suffix (if any are
    given), an existing folder, not a folder itself."""
    path = Path(value)
    if suffixes and path.suffix.lower() not in suffixes:
        raise CommandError(f"{option} {value}: write {' or '.join(suffixes)}.")
    if path.is_dir():
        raise CommandError(f"{option} {value} is a folder; give a file name in it.")
    if not path.resolve().parent.is_dir():
        raise CommandError(
            f"{option} {value}: the folder {path.resolve().parent} does not exist; create it first."
        )
    return path


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(frame):
    """Text cells a spreadsheet would run as formulas (``=cmd|...``), quoted with a leading
    apostrophe (OWASP's advice for CSV injection); numbers and other text unchanged."""

    def safe(value):
        if isinstance(value, str) and value.startswith(_FORMULA_START):
            try:
                float(value)
            except ValueError:
                return "'" + value
        return value

    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(safe)
    return out


def _load_model(path):
    from . import LatentODE

    if not Path(path).exists():
        raise CommandError(f"{path}: no such model file.")
    return LatentODE.load(path)


def _predict(args) -> None:
    output = _writable("--output", args.output, (".csv", ".nc", ".netcdf"))
    model, data = _load_model(args.model), _load_data(args)
    q = [float(x) for x in args.quantiles.split(",")]
    own = _own_times(args, data)
    if own is not None:
        data = data[[k for k, sid in enumerate(data.ids) if str(sid) in own]]
        own = {sid: own[str(sid)] for sid in data.ids}
        table = model.predict_quantiles(data, times=own, q=q, n_samples=args.samples)
    elif args.horizon is not None and not args.times:  # each series from its own last time
        n_points = _n_points(args)
        table = model.predict_quantiles(
            data, horizon=args.horizon, n_points=n_points, q=q, n_samples=args.samples
        )
    else:
        times = _query_times(args)
        table = model.predict_quantiles(data, times=times, q=q, n_samples=args.samples)
    table.columns = [f"{feature}_q{level:g}" for feature, level in table.columns]
    if output.suffix.lower() in (".nc", ".netcdf"):
        table.to_xarray().to_netcdf(output)
    else:
        _csv_safe(table.reset_index()).to_csv(output, index=False)
    print(f"wrote {len(table)} rows ({len(data)} series) to {output}")


def _plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")

    from .plotting import plot_posterior_grid

    _writable("--output", args.output, (".png", ".pdf", ".svg"))
    model, data = _load_model(args.model), _load_data(args)
    chosen = args.series or data.ids[: args.max_series]
    missing = [s for s in chosen if str(s) not in {str(i) for i in data.ids}]
    if missing:
        raise CommandError(f"--series {missing} not in {args.data}; ids are e.g. {data.ids[:5]}.")
    index = {str(i): k for k, i in enumerate(data.ids)}
    subset = data[[index[str(s)] for s in chosen]]
    # a fine grid over the observed window, then the requested times, or each plotted
    # series' horizon after its own last observation (as predict counts it)
    window = np.linspace(subset.t_min, subset.t_max, 100)
    extra = _query_times(args)
    extra = _ahead(args, subset) if extra is None else extra
    own = _own_times(args, data)
    if own is not None:
        extra = np.concatenate([own.get(str(s), []) for s in chosen] + [window[:0]])
    times = window if extra is None else np.unique(np.concatenate([window, extra]))
    draws = model.sample(subset, times=times, n_samples=args.samples)
    unit = f" ({args.time_unit})" if args.time_unit else ""
    fig = plot_posterior_grid(
        draws, subset, time_label=f"{args.time_col}{unit}", series_label=args.id_col
    )
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


def _evaluate(args) -> None:
    from . import FeatureMean, LastValue, LinearInterpolation
    from .evaluation import RELIABILITY_LEVELS, evaluate, hold_out, reliability

    output = _writable("--output", args.output, (".csv",))
    if args.plot:
        _writable("--plot", args.plot, (".png", ".pdf", ".svg"))
    model, data = _load_model(args.model), _load_data(args)
    holdout = {
        k: v
        for k, v in dict(last=args.last, after=args.after, n_last=args.n_last).items()
        if v is not None
    }
    if args.fraction is not None:
        holdout = {"fraction": args.fraction, "random_state": args.seed}
    context, target = hold_out(data, **holdout)
    # the baselines learn their bands from the context: what the model reads too
    models = {
        "latentode": model,
        "last value": LastValue(random_state=args.seed).fit(context),
        "interpolation": LinearInterpolation(random_state=args.seed).fit(context),
        "mean": FeatureMean(random_state=args.seed).fit(context),
    }
    levels = [float(x) for x in args.levels.split(",")]
    if args.plot:  # one set of draws for the table and the diagram
        levels = sorted(set(levels) | set(RELIABILITY_LEVELS))
    table = evaluate(models, context, target, levels=levels, n_samples=args.samples)
    _csv_safe(table).to_csv(output, index=False)
    print(table[table.feature == "all"].drop(columns="feature").to_string(index=False))
    print(f"wrote {len(table)} rows ({len(target)} series held out) to {output}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from .plotting import plot_reliability

        plot_reliability(reliability(table)).figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")


def _demo(args) -> None:
    from . import LatentODE
    from .datasets import make_spirals

    data = make_spirals(n_series=args.n_series, n_obs=30, random_state=args.seed)
    model = LatentODE(
        **_DEMO_SETTINGS,
        max_epochs=args.epochs,
        random_state=args.seed,
        verbose="force" if args.progress else not args.quiet,
    ).fit(data.train)
    pred = model.predict(data.test, times=data.test_extrapolation_times)
    rmse = float(np.sqrt(np.mean((pred.values - data.test_extrapolation_truth) ** 2)))
    print(f"extrapolation RMSE on {len(data.test)} held-out spirals: {rmse:.4f}")


def _data_arguments(parser) -> None:
    parser.add_argument("data", help="long table: .csv, .parquet or .nc")
    parser.add_argument("--id-col", required=True, help="column of series ids")
    parser.add_argument("--time-col", required=True, help="column of observation times")
    parser.add_argument("--value-cols", nargs="+", help="feature columns (default: the rest)")
    parser.add_argument(
        "--static",
        metavar="TABLE",
        help="static covariates: a table with one row per series, the --id-col column and "
        "one column per covariate (text columns become one indicator per category)",
    )
    parser.add_argument(
        "--time-unit",
        help="unit to count dates/times of --time-col in (s, min, h, D, ...); a model "
        "remembers it and refuses data counted in another",
    )
    parser.add_argument(
        "--time-origin",
        default="series",
        help="with --time-unit: 'series' counts from each series' first observation, a "
        "date/time from that moment",
    )


def _progress_arguments(parser) -> None:
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="always show the progress bar (by default only when the output is a terminal)",
    )
    shown.add_argument("--quiet", action="store_true", help="never show the progress bar")


def _time_arguments(parser) -> None:
    parser.add_argument("--times", help="comma-separated query times, the same for every series")
    parser.add_argument(
        "--times-file",
        help="CSV or Parquet file of each series' own query times: one row per time, with the "
        "--id-col and --time-col columns",
    )
    positive = real("horizon", low=0, low_open=True)
    parser.add_argument(
        "--horizon",
        type=positive.parse,
        help="forecast this far past each series' own last observation",
    )
    parser.add_argument(
        "--step",
        type=positive.parse,
        help="spacing of the horizon grid (default: the horizon in 20 steps)",
    )
    parser.add_argument(
        "--samples",
        type=integer("samples", low=1).parse,
        default=200,
        help="posterior draws",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``latentode`` command."""
    parser = argparse.ArgumentParser(
        prog="latentode", description="Latent ODEs for irregularly sampled time series."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="on failure, show the full traceback too"
    )

    fit = sub.add_parser(
        "fit", help="fit a Latent ODE and save it", parents=[common], formatter_class=_Help
    )
    _data_arguments(fit)
    fit.add_argument("--model", required=True, help="file to write the fitted model to")
    for name, help_text in _FIT_OPTIONS.items():
        _estimator_option(fit, name, help_text)
    fit.add_argument(
        "--validation-fraction",
        type=real("validation_fraction", low=0, high=1, high_open=True).parse,
        default=0.1,
        help="share of the series held out (at random, whole) to pick the best epoch, stop "
        "early with --patience and calibrate the bands; 0 trains on all",
    )
    fit.add_argument(
        "--stream",
        action="store_true",
        help="read a Parquet file or folder in blocks while training instead of loading it "
        "(data larger than memory; no validation split, no --static)",
    )
    fit.add_argument(
        "--workers",
        type=integer("workers", low=0).parse,
        default=0,
        help="with --stream: processes reading and collating while the model trains",
    )
    fit.add_argument("--seed", type=_SEED.parse, default=0)
    fit.add_argument("--checkpoint", help="checkpoint file, written during training")
    fit.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    _progress_arguments(fit)
    fit.set_defaults(run=_fit)

    predict = sub.add_parser(
        "predict",
        help="posterior quantiles at query times",
        description="Posterior quantiles of each series: at --times, at each series' own "
        "--times-file rows, over --horizon after each series' own last observation, or by "
        "default at each series' observation times.",
        parents=[common],
        formatter_class=_Help,
    )
    predict.add_argument("model", help="a file written by 'latentode fit'")
    _data_arguments(predict)
    _time_arguments(predict)
    predict.add_argument("--quantiles", default="0.05,0.5,0.95")
    predict.add_argument("--output", required=True, help=".csv or .nc")
    predict.set_defaults(run=_predict)

    plot = sub.add_parser(
        "plot",
        help="posterior bands for a few series, to PNG",
        parents=[common],
        formatter_class=_Help,
    )
    plot.add_argument("model", help="a file written by 'latentode fit'")
    _data_arguments(plot)
    _time_arguments(plot)
    plot.add_argument("--series", nargs="+", help="series ids (default: the first few)")
    plot.add_argument("--max-series", type=integer("max_series", low=1).parse, default=3)
    plot.add_argument("--output", required=True, help="PNG file")
    plot.set_defaults(run=_plot)

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common],
        formatter_class=_Help,
        help="hide part of each series, predict it with the model and the baselines, score",
        description="Hide part of each series (give one of --last, --after, --n-last, "
        "--fraction), predict it from the rest with the model and with last value carried "
        "forward, linear interpolation and the feature mean (fitted on the rest), and write "
        "MSE, MAE, CRPS and the coverage and width of central intervals per model and feature.",
    )
    evaluate.add_argument("model", help="a file written by 'latentode fit'")
    _data_arguments(evaluate)
    what = evaluate.add_mutually_exclusive_group(required=True)
    positive = real("last", low=0, low_open=True)
    what.add_argument("--last", type=positive.parse, help="hide each series' last window")
    what.add_argument("--after", type=real("after").parse, help="hide what follows this time")
    what.add_argument(
        "--n-last", type=integer("n_last", low=1).parse, help="hide the last N observation times"
    )
    what.add_argument(
        "--fraction",
        type=real("fraction", low=0, low_open=True, high=1, high_open=True).parse,
        help="hide this share of the observed values at random",
    )
    evaluate.add_argument("--levels", default="0.5,0.9", help="central interval levels")
    evaluate.add_argument("--samples", type=integer("samples", low=1).parse, default=200)
    evaluate.add_argument("--seed", type=_SEED.parse, default=0)
    evaluate.add_argument("--output", required=True, help="CSV of the scores")
    evaluate.add_argument("--plot", help="PNG of the reliability diagram")
    evaluate.set_defaults(run=_evaluate)

    demo = sub.add_parser(
        "demo",
        help="fit the spiral model and print its RMSE",
        parents=[common],
        formatter_class=_Help,
    )
    demo.add_argument(
        "--epochs",
        type=_ESTIMATOR["max_epochs"].parse,
        default=1000,
        help="training epochs",
    )
    demo.add_argument("--n-series", type=integer("n_series", low=5).parse, default=1000)
    demo.add_argument("--seed", type=_SEED.parse, default=0)
    _progress_arguments(demo)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    """Run the command; returns the exit status (0 success, 2 a user error, 1 a failure,
    130 interrupted). Failures are reported in one line; ``--debug`` adds the traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(f"latentode {args.command}: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        # the library's validation errors name the argument and say what to do
        user = isinstance(err, (CommandError, ValueError, TypeError, OSError, ArithmeticError))
        text = str(raised_error(err)).strip() or type(err).__name__
        if not user:
            text = f"failed ({type(err).__name__}: {text.splitlines()[0]})"
            if not args.debug:
                text += "; rerun with --debug for the traceback"
        print(f"latentode {args.command}: {text}", file=sys.stderr)
        return 2 if user else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
