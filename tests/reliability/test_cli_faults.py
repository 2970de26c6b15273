"""The command line on bad numbers and failures: one line on stderr, an exit status, never a
traceback unless --debug asks for it; every number checked as the estimator checks it."""

import argparse

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentode import LatentODE
from latentode.cli import build_parser, main
from latentode.latent_ode import PARAMETERS


@pytest.fixture(scope="module")
def table(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("cli-faults")
    frame = data.train.to_pandas(id_name="id", time_name="t").reset_index()
    frame.to_csv(folder / "data.csv", index=False)
    return folder


def fit_args(folder, *extra):
    data = str(folder / "data.csv")
    return [
        "fit",
        data,
        "--id-col",
        "id",
        "--time-col",
        "t",
        "--model",
        str(folder / "m.pt"),
        *extra,
    ]


def test_a_diverging_fit_is_one_line_without_traceback(table, capsys):
    with pytest.warns(RuntimeWarning, match="retrying with learning rate"):
        status = main(fit_args(table, "--epochs", "2", "--lr", "1e6", "--latent-dim", "2"))
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err and err.count("\n") == 1
    assert "training failed" in err and "lower lr" in err
    assert not (table / "m.pt").exists()  # nothing half-made is written


def test_an_internal_failure_points_at_debug(table, capsys, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("something inside broke\nwith detail on a second line")

    monkeypatch.setattr(LatentODE, "fit", broken)
    assert main(fit_args(table, "--epochs", "1")) == 1
    err = capsys.readouterr().err
    assert err == (
        "latentode fit: failed (RuntimeError: something inside broke); rerun with --debug for "
        "the traceback\n"
    )
    assert main(fit_args(table, "--epochs", "1", "--debug")) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "something inside broke" in err


def test_a_horizon_asking_for_millions_of_times_is_refused(table, capsys):
    assert main(fit_args(table, "--epochs", "1", "--latent-dim", "2")) == 0
    common = [str(table / "m.pt"), str(table / "data.csv"), "--id-col", "id", "--time-col", "t"]
    out = str(table / "f.csv")
    status = main(["predict", *common, "--horizon", "2", "--step", "1e-6", "--output", out])
    assert status == 2
    assert "asks for 2000000 times per series, more than 10000" in capsys.readouterr().err
    status = main(
        ["plot", *common, "--horizon", "2", "--step", "1e-6", "--output", str(table / "p.png")]
    )
    assert status == 2 and "use a larger --step" in capsys.readouterr().err


def test_a_missing_reader_names_the_package(table, capsys, monkeypatch):
    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine")  # pandas gives no module name

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    path = table / "data.parquet"
    path.write_bytes(b"PAR1")
    args = ["fit", str(path), "--id-col", "id", "--time-col", "t", "--model", str(table / "x.pt")]
    assert main(args) == 2
    assert "needs the package pyarrow (pip install pyarrow)" in capsys.readouterr().err


def test_fit_options_reach_the_estimator_and_help_shows_defaults(table, capsys):
    extra = ["--epochs", "2", "--latent-dim", "2", "--obs-std", "0.1,0.2", "--patience", "none"]
    extra += ["--batch-size", "7", "--average-epochs", "1", "--validation-fraction", "0.25"]
    assert main(fit_args(table, *extra)) == 0
    assert "(12 held out for validation)" in capsys.readouterr().out
    fitted = LatentODE.load(table / "m.pt")
    assert (fitted.obs_std, fitted.patience, fitted.batch_size) == ([0.1, 0.2], None, 7)
    assert fitted.average_epochs == 1
    with pytest.raises(SystemExit):
        main(fit_args(table, "--obs-std", "-1"))
    assert "--obs-std" in capsys.readouterr().err
    text = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    assert "(default: 0.01)" in text and "(default: gru)" in text
    # the spirals' coordinates are signed: auto logs none of them, naming one is refused
    assert main(fit_args(table, "--epochs", "1", "--log-features", "auto")) == 0
    fitted = LatentODE.load(table / "m.pt")
    assert fitted.log_features == "auto" and np.isnan(fitted.value_shift_).all()
    capsys.readouterr()
    assert main(fit_args(table, "--epochs", "1", "--log-features", "x")) == 2
    assert "feature 'x' has negative values" in capsys.readouterr().err


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([c for c in PARAMETERS if c.kind in ("int", "real")]),
    st.one_of(
        st.text(max_size=8),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(10**20), 10**20).map(str),
        st.sampled_from(["none", "None", "inf", "-inf", "nan", "1e309", "0", "-0", " 3 "]),
    ),
)
def test_every_number_the_cli_reads_is_checked_like_the_estimator(constraint, text):
    """Any text either parses to a value the estimator accepts, or is refused by argparse."""
    try:
        value = constraint.parse(text)
    except argparse.ArgumentTypeError as err:
        assert "must be" in str(err)
        return
    assert constraint.ok(value) or (value is None and constraint.none)
