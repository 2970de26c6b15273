"""The declarative parameter constraints and the messages they give."""

import argparse
import math

import numpy as np
import pytest

from latentode import LatentODE, LatentODEClassifier, RNNBaseline
from latentode._validation import check_params, choice, custom, flag, integer, real


@pytest.mark.parametrize(
    "constraint, good, bad, message",
    [
        (
            integer("n", low=1),
            [1, 7, np.int64(3)],
            [0, -1, 1.5, True, "2", None],
            "a positive integer",
        ),
        (integer("n", low=0), [0, 4], [-1, 0.0], "a non-negative integer"),
        (integer("n", low=2), [2, 10], [1], "an integer of at least 2"),
        (integer("n", low=1, none=True), [None, 3], [0], "None or a positive integer"),
        (
            real("x", low=0, low_open=True),
            [1e-9, 2, 3.5],
            [0, -1, math.inf, math.nan, False],
            "positive",
        ),
        (real("x", low=0), [0, 0.0, 2], [-1e-9, math.inf], "non-negative"),
        (real("x", low=0, low_open=True, high=1), [1, 0.5], [0, 1.0001], "a number in (0, 1]"),
        (real("x", low=0, low_open=True, high=1, high_open=True), [0.5], [1, 0], "(0, 1)"),
        (choice("c", ("a", "b")), ["a", "b"], ["c", None, ["a"]], "c must be one of ['a', 'b']"),
        (flag("f"), [True, False, np.bool_(True)], [1, "yes", None], "True or False"),
    ],
)
def test_constraints_accept_and_reject_with_the_projects_message(constraint, good, bad, message):
    for value in good:
        constraint.check(value)
    for value in bad:
        with pytest.raises(ValueError) as err:
            constraint.check(value)
        text = str(err.value)
        assert text.startswith(constraint.name)  # the argument first
        assert message in text and repr(value) in text  # what it may be, and the value


def test_bounds_may_name_another_parameter_and_hints_say_what_to_do():
    table = (
        integer("window", low=0, high="epochs"),
        real("w", low=0, low_open=True, hint="1 is the usual."),
    )
    check_params({"window": 3, "epochs": 3, "w": 1.0}, table)
    with pytest.raises(ValueError, match=r"window must be an integer from 0 to epochs=3; got 4\."):
        check_params({"window": 4, "epochs": 3}, table)
    with pytest.raises(ValueError, match=r"w must be positive; got 0\. 1 is the usual\."):
        check_params({"w": 0}, table)
    check_params({"other": object()}, table)  # parameters without a constraint are not checked


def test_custom_constraints_treat_conversion_errors_as_not_allowed():
    stds = custom(
        "std", lambda v: np.all(np.asarray(v, dtype=float) > 0), "positive numbers", none=True
    )
    stds.check([0.1, 2.0])
    stds.check(None)
    for bad in ([0.1, -1.0], "abc", [object()]):
        with pytest.raises(ValueError, match="std must be None or positive numbers"):
            stds.check(bad)


def test_parse_converts_command_line_text_for_argparse():
    epochs = integer("max_epochs", low=1)
    assert epochs.parse("12") == 12
    for text, shown in (("0", "got 0."), ("1.5", "got '1.5'."), ("x", "got 'x'.")):
        with pytest.raises(argparse.ArgumentTypeError, match=shown) as err:
            epochs.parse(text)
        assert str(err.value).startswith("must be a positive integer")  # argparse names the flag
    with pytest.raises(argparse.ArgumentTypeError, match="got inf"):
        real("lr", low=0, low_open=True).parse("inf")


@pytest.mark.parametrize(
    "estimator, param, value",
    [
        (LatentODE, "lr", math.inf),
        (LatentODE, "lr", 0),
        (LatentODE, "batch_size", 2.5),
        (LatentODE, "clip_norm", 0.0),
        (LatentODE, "patience", 0),
        (LatentODE, "max_time", 0.0),
        (LatentODE, "condition_limit", -1.0),
        (LatentODE, "same_time_readout", -1),
        (LatentODE, "same_time_readout", 2.5),
        (LatentODE, "kl_anneal_epochs", -1),
        (LatentODE, "solver_backend", "scipy"),
        (LatentODE, "method", "rk45"),
        (LatentODEClassifier, "label_weight", 0),
        (LatentODEClassifier, "latent_dim", 0),
        (RNNBaseline, "hidden_dim", 0),
        (RNNBaseline, "lr_decay", 1.5),
    ],
)
def test_every_estimator_checks_its_table_before_touching_the_data(estimator, param, value):
    # the data are not even series: the parameters are refused first, naming the parameter
    with pytest.raises(ValueError, match=param):
        estimator(**{param: value}).fit("not data", [0, 1])


def test_the_cli_refuses_bad_options_before_reading_any_file(capsys):
    from latentode.cli import main

    for option, value in (("--epochs", "0"), ("--lr", "inf"), ("--latent-dim", "-2")):
        with pytest.raises(SystemExit) as exit_:
            main(
                [
                    "fit",
                    "missing.csv",
                    "--id-col",
                    "a",
                    "--time-col",
                    "t",
                    "--model",
                    "m.pt",
                    option,
                    value,
                ]
            )
        assert exit_.value.code == 2
        assert f"argument {option}: must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "predict",
                "m.pt",
                "missing.csv",
                "--id-col",
                "a",
                "--time-col",
                "t",
                "--output",
                "o.csv",
                "--horizon",
                "-3",
            ]
        )
    assert "argument --horizon: must be positive; got -3.0" in capsys.readouterr().err
