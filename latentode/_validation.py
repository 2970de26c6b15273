"""Declarative checks of parameters: one table per estimator, one wording everywhere.

A :class:`Constraint` names a parameter and what it may be (an integer or a real number in a
range, one of a few choices, a flag, optionally None); :func:`check_params` checks a mapping
of parameters against a table of them and raises ``ValueError`` with the project's message:
the argument, its value, and what to do. The estimators check their ``get_params()`` with it
in ``fit``, :class:`~latentode.solvers.SolverSettings` its fields at construction, and the
command line its options as argparse types (:meth:`Constraint.parse`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Constraint", "check_params", "integer", "real", "choice", "flag", "custom"]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def _fmt(x) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Constraint:
    """What one parameter may be.

    Parameters
    ----------
    name : str
        The parameter's name, as the user writes it.
    kind : {"int", "real", "choice", "flag", "custom"}
    low, high : float, str or None
        Bounds of an ``"int"`` or ``"real"``; a string names another parameter of the same
        mapping whose value is the bound (e.g. ``high="max_epochs"``).
    low_open, high_open : bool
        Whether the bound itself is excluded (reals; integers are always closed).
    choices : tuple
        The allowed values of a ``"choice"``.
    none : bool
        None is allowed too.
    hint : str
        What to do, appended to the message.
    test : callable, optional
        For ``"custom"``: ``test(value) -> bool``; ``expected`` then describes the values.
    expected : str
        Description of the allowed values for ``"custom"`` (e.g. "a positive number or a list
        of them").
    """

    name: str
    kind: str
    low: float | str | None = None
    high: float | str | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    none: bool = False
    hint: str = ""
    test: Callable[[object], bool] | None = None
    expected: str = ""

    # -- description ---------------------------------------------------------------------
    def _bounds(self, params: Mapping | None) -> tuple:
        def resolve(bound):
            if isinstance(bound, str):
                return None if params is None else params.get(bound)
            return bound

        return resolve(self.low), resolve(self.high)

    def describe(self, params: Mapping | None = None) -> str:
        """The allowed values in words, e.g. "a positive integer" or "a number in (0, 1]"."""
        if self.kind == "flag":
            text = "True or False"
        elif self.kind == "choice":
            text = f"one of {list(self.choices)}"
        elif self.kind == "custom":
            text = self.expected
        else:
            low, high = self._bounds(params)
            noun = "integer" if self.kind == "int" else "number"
            if high is None and low == 0 and self.low_open and self.kind == "real":
                text = "positive"
            elif high is None and low == 1 and self.kind == "int":
                text = "a positive integer"
            elif high is None and low == 0:
                text = "non-negative" if self.kind == "real" else "a non-negative integer"
            elif high is None and low is None:
                text = f"a finite {noun}"
            elif high is None and self.kind == "int":
                text = f"an integer of at least {_fmt(low)}"
            else:
                low_text = "-inf" if low is None else _fmt(low)
                high_text = "inf" if high is None else _fmt(high)
                if isinstance(self.high, str):
                    high_text = f"{self.high}={high_text}"
                if self.kind == "int":
                    text = f"an integer from {low_text} to {high_text}"
                else:
                    left = "(" if self.low_open or low is None else "["
                    right = ")" if self.high_open or high is None else "]"
                    text = f"a number in {left}{low_text}, {high_text}{right}"
        return f"None or {text}" if self.none else text

    # -- checks --------------------------------------------------------------------------
    def ok(self, value, params: Mapping | None = None) -> bool:
        """Whether ``value`` is allowed (``params`` resolves bounds named by parameter)."""
        if value is None:
            return self.none
        if self.kind == "flag":
            return isinstance(value, (bool, np.bool_))
        if self.kind == "choice":
            try:
                return value in self.choices
            except (TypeError, ValueError):  # e.g. an array, whose == is elementwise
                return False
        if self.kind == "custom":
            try:
                return bool(self.test(value))
            except (TypeError, ValueError):
                return False
        if not (_is_int(value) if self.kind == "int" else _is_real(value)):
            return False
        if not math.isfinite(float(value)):
            return False
        low, high = self._bounds(params)
        if low is not None and (value <= low if self.low_open else value < low):
            return False
        if high is not None and (value >= high if self.high_open else value > high):
            return False
        return True

    def requirement(self, value, params: Mapping | None = None) -> str:
        """What the value must be and what it is, without the name ("must be ...; got 0.")."""
        if self.kind == "choice":
            text = f"must be one of {list(self.choices)}; got {value!r}."
        else:
            text = f"must be {self.describe(params)}; got {value!r}."
        return f"{text} {self.hint}".rstrip()

    def message(self, value, params: Mapping | None = None) -> str:
        """The error message for a value that is not allowed."""
        if self.kind == "choice":
            text = (
                f"{self.name}={value!r} is not available; {self.name} must be one of "
                f"{list(self.choices)}."
            )
            return f"{text} {self.hint}".rstrip()
        return f"{self.name} {self.requirement(value, params)}"

    def check(self, value, params: Mapping | None = None) -> None:
        """Raise ``ValueError`` with :meth:`message` unless :meth:`ok`."""
        if not self.ok(value, params):
            raise ValueError(self.message(value, params))

    def parse(self, text: str):
        """Convert a command-line string and check it (an argparse ``type``).

        Raises
        ------
        argparse.ArgumentTypeError
            With :meth:`requirement`, which argparse prints after the option's name.
            ``"none"`` gives None where None is allowed.
        """
        value: object = text
        if self.none and text.strip().lower() == "none":
            return None
        try:
            if self.kind == "int":
                value = int(text)
            elif self.kind == "real":
                value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(self.requirement(text)) from None
        if not self.ok(value):
            raise argparse.ArgumentTypeError(self.requirement(value))
        return value


def integer(name: str, *, low=None, high=None, none: bool = False, hint: str = "") -> Constraint:
    """An integer in ``[low, high]`` (either may be None, or the name of another parameter)."""
    return Constraint(name, "int", low=low, high=high, none=none, hint=hint)


def real(
    name: str,
    *,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    none: bool = False,
    hint: str = "",
) -> Constraint:
    """A finite real number between ``low`` and ``high`` (open or closed at either end)."""
    return Constraint(
        name,
        "real",
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        none=none,
        hint=hint,
    )


def choice(name: str, choices: Iterable, *, hint: str = "") -> Constraint:
    """One of ``choices`` (compared with ``==``)."""
    return Constraint(name, "choice", choices=tuple(choices), hint=hint)


def flag(name: str) -> Constraint:
    """True or False."""
    return Constraint(name, "flag")


def custom(
    name: str, test: Callable[[object], bool], expected: str, *, none: bool = False, hint: str = ""
) -> Constraint:
    """A value for which ``test(value)`` is true; ``expected`` says which in words."""
    return Constraint(name, "custom", test=test, expected=expected, none=none, hint=hint)


def check_params(params: Mapping, constraints: Iterable[Constraint]) -> None:
    """Check every constrained parameter of ``params``; raise on the first one not allowed.

    Parameters
    ----------
    params : mapping of str to object
        E.g. an estimator's ``get_params(deep=False)``.
    constraints : iterable of Constraint
        Parameters not in ``params`` are skipped.

    Raises
    ------
    ValueError
        Naming the parameter, its value and what it may be.
    """
    for constraint in constraints:
        if constraint.name in params:
            constraint.check(params[constraint.name], params)
