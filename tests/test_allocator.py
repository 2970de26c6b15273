import json
import os
import subprocess
import sys

import pytest

from latentode import _allocator


class FakeLibc:
    """Records the allocator calls; ``mallopt`` answers ``status`` (glibc: 1 on success)."""

    def __init__(self, status=1):
        self.calls, self.status = [], status

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return self.status

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def fake(monkeypatch):
    def install(libc):
        monkeypatch.setattr(_allocator, "_state", {"libc": libc, "looked_up": True, "held": False})
        return libc

    monkeypatch.delenv("LATENTODE_MALLOC_TUNING", raising=False)
    return install


def test_hold_sets_both_thresholds_once_and_release_trims(fake):
    libc = fake(FakeLibc())
    assert _allocator.hold_freed_memory() is True
    assert libc.calls == [
        ("mallopt", -3, 32 << 20),  # M_MMAP_THRESHOLD, fixed at glibc's largest dynamic value
        ("mallopt", -1, 1 << 30),  # M_TRIM_THRESHOLD
    ]
    assert _allocator.hold_freed_memory() is True
    assert len(libc.calls) == 2  # idempotent
    _allocator.release_freed_memory()
    assert libc.calls[-1] == ("malloc_trim", 0)


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_environment_variable_leaves_the_allocator_alone(fake, monkeypatch, value):
    libc = fake(FakeLibc())
    monkeypatch.setenv("LATENTODE_MALLOC_TUNING", value)
    assert _allocator.hold_freed_memory() is False
    _allocator.release_freed_memory()
    assert libc.calls == []


def test_refused_setting_is_reported_and_not_released(fake):
    libc = fake(FakeLibc(status=0))
    assert _allocator.hold_freed_memory() is False
    _allocator.release_freed_memory()
    assert [c[0] for c in libc.calls] == ["mallopt", "mallopt"]


def test_without_glibc_nothing_happens(fake):
    fake(None)
    assert _allocator.hold_freed_memory() is False
    _allocator.release_freed_memory()  # no error


_HOLD = """
import ctypes, json
from latentode import _allocator


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = _allocator._glibc()
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
held = _allocator.hold_freed_memory()
base = libc.mallinfo2().fordblks
block = libc.malloc(16 << 20)  # below the fixed mmap threshold: taken from the heap
ctypes.memset(block, 1, 16 << 20)
libc.free(block)
kept = libc.mallinfo2().fordblks
_allocator.release_freed_memory()
after = libc.mallinfo2().fordblks
print(json.dumps({"held": held, "kept": kept - base, "after_release": after - base}))
"""


def _in_fresh_process(code: str, tuning: str) -> dict:
    env = {**os.environ, "LATENTODE_MALLOC_TUNING": tuning}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    _allocator._glibc() is None or not hasattr(_allocator._glibc(), "mallinfo2"),
    reason="the allocator settings are glibc's (mallinfo2: glibc 2.33+)",
)
def test_real_glibc_keeps_freed_memory_until_released():
    """With the real C library: 16 MiB freed while held stay in the process as free heap
    (beyond what was free before), and release hands them back; with the tuning off, glibc's
    own heuristics apply (the block is its own mapping and nothing is kept)."""
    tuned = _in_fresh_process(_HOLD, "1")
    assert tuned["held"] is True
    assert tuned["kept"] >= 15 << 20  # the block, give or take what it merged with
    assert tuned["after_release"] < 1 << 20  # counted from the free heap before the block
    untouched = _in_fresh_process(_HOLD, "0")
    assert untouched["held"] is False
    assert untouched["kept"] < 1 << 20


_FIT = """
import json
import numpy as np, torch
torch.set_num_threads(1)
from latentode import LatentODE, _allocator
from latentode.datasets import from_arrays
rng = np.random.default_rng(0)
t = np.linspace(0.0, 4.0, 20)
data = from_arrays([(t, np.sin(t + p)[:, None]) for p in rng.uniform(0, 6, size=20)])
LatentODE(latent_dim=2, encoder="rnn", max_epochs=1, random_state=0).fit(data)
print(json.dumps(_allocator._state["held"]))
"""


@pytest.mark.slow
@pytest.mark.skipif(_allocator._glibc() is None, reason="the allocator settings are glibc's")
@pytest.mark.parametrize("tuning, held", [("1", True), ("0", False)])
def test_fit_holds_freed_memory_unless_told_not_to(tuning, held):
    """``fit`` tunes the real allocator before its first step unless the environment says no.
    (What the tuning saves — page faults and time per step — depends on the machine, e.g. its
    transparent-huge-page mode, and is measured by ``benchmarks/allocator.py``.)"""
    assert _in_fresh_process(_FIT, tuning) is held
