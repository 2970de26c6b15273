"""Property-based tests of the validation gate on ragged, messy input.

Every generated input either comes back exactly as an independent reference normalisation
says it should (sorted, duplicate times merged per feature, fully missing rows dropped), or
fails with the documented error type naming the offending series — never anything else.
"""

import re
import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from latentode.datasets import as_dataset, from_arrays, from_pandas

TIMES = st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.0, -1.0, 10.0])  # few values: duplicates happen
VALUES = st.sampled_from([0.0, 1.0, -2.5, 3.25, np.nan, np.nan])
BAD_TIMES = st.sampled_from([np.nan, np.inf, -np.inf])
BAD_VALUES = st.sampled_from([np.inf, -np.inf])


@st.composite
def messy_series(draw, n_features):
    n = draw(st.integers(0, 6))
    times = [draw(TIMES) for _ in range(n)]
    values = [[draw(VALUES) for _ in range(n_features)] for _ in range(n)]
    if n and draw(st.integers(0, 9)) == 0:
        times[draw(st.integers(0, n - 1))] = draw(BAD_TIMES)
    if n and draw(st.integers(0, 9)) == 0:
        values[draw(st.integers(0, n - 1))][0] = draw(BAD_VALUES)
    return np.asarray(times, dtype=float), np.asarray(values, dtype=float).reshape(n, n_features)


@st.composite
def messy_data(draw):
    n_features = draw(st.integers(1, 3))
    n_series = draw(st.integers(1, 4))
    return [draw(messy_series(n_features)) for _ in range(n_series)]


def reference(times, values):
    """The documented normalisation of one series, or the reason it must be refused."""
    if not np.all(np.isfinite(times)):
        return "non-finite time"
    if np.isinf(values).any():
        return "infinite value"
    keep = ~np.isnan(values).all(axis=1)
    times, values = times[keep], values[keep]
    if times.size == 0:
        return "no observed value"
    out_t = sorted(set(times.tolist()))
    out_v = np.full((len(out_t), values.shape[1]), np.nan)
    for t, row in zip(times, values, strict=True):
        slot = out_t.index(t)
        for d, x in enumerate(row):
            if np.isnan(x):
                continue
            if not np.isnan(out_v[slot, d]) and out_v[slot, d] != x:
                return "two different values"
            out_v[slot, d] = x
    return np.asarray(out_t), out_v


def check(pairs, build):
    expected = [reference(t, v) for t, v in pairs]
    first_bad = next((i for i, e in enumerate(expected) if isinstance(e, str)), None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = build(pairs)
    except (ValueError, TypeError) as err:
        assert first_bad is not None, f"valid input refused: {err}"
        message = str(err)
        assert re.search(rf"series {first_bad}\b", message), message
        assert expected[first_bad] in message, message
        return
    assert first_bad is None, f"invalid input accepted: {expected[first_bad]}"
    assert data.ids == list(range(len(pairs)))
    for series, (t, v) in zip(data, expected, strict=True):
        assert np.array_equal(series.times, t)
        assert np.array_equal(series.values, v, equal_nan=True)
    was_unsorted = any(np.any(np.diff(t[~np.isnan(v).all(1)]) < 0) for t, v in pairs)
    sorting_warnings = [w for w in caught if "unsorted times" in str(w.message)]
    assert len(sorting_warnings) == (1 if was_unsorted else 0)
    # and the result round-trips exactly through the panel convention
    again = as_dataset(data.to_pandas())
    for a, b in zip(data, again, strict=True):
        assert np.array_equal(a.times, b.times)
        assert np.array_equal(a.values, b.values, equal_nan=True)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(messy_data())
def test_from_arrays_normalises_or_names_the_bad_series(pairs):
    check(pairs, lambda p: from_arrays(p))


@FAST
@given(messy_data())
def test_long_frames_normalise_or_name_the_bad_series(pairs):
    def build(p):
        frames = [
            pd.DataFrame(v, columns=[f"f{j}" for j in range(v.shape[1])]).assign(id=i, t=t)
            for i, (t, v) in enumerate(p)
        ]
        return from_pandas(pd.concat(frames, ignore_index=True), id_col="id", time_col="t")

    assume(all(len(t) for t, _ in pairs))  # a series without rows cannot appear in a frame
    check(pairs, build)


@FAST
@given(messy_data(), st.data())
def test_estimator_gate_accepts_the_same_and_rejects_the_same(pairs, extra):
    """The estimators' gate (``as_dataset``) gives the same answer and names the argument."""
    name = extra.draw(st.sampled_from(["X", "validation_data"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the sorting notice is checked above
        try:
            expected = from_arrays(pairs)
        except (ValueError, TypeError) as err:
            try:
                as_dataset(pairs, name=name)
            except type(err) as again:
                assert str(again).startswith(f"{name}: ")
                assert str(again).split(": ", 1)[1] == str(err).split(": ", 1)[1]
            else:
                raise AssertionError("the gate accepted what from_arrays refused") from None
            return
        got = as_dataset(pairs, name=name)
    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a.values, b.values, equal_nan=True)
