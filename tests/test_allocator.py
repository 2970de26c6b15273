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


_FIT = """
import json, resource, numpy as np, torch
torch.set_num_threads(1)
from latentode import LatentODE
from latentode.datasets import from_arrays
rng = np.random.default_rng(0)
t = np.linspace(0.0, 4.0, 100)
phase = rng.uniform(0, 6, size=(1000, 1, 1))
values = np.sin(t[None, :, None] + phase) + 0.1 * rng.normal(size=(1000, 100, 2))
data = from_arrays([(t, v) for v in values])
model = LatentODE(latent_dim=4, encoder="rnn", batch_size=1000, max_epochs=1, random_state=0)
model.fit(data)  # the first epoch faults its working set in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
model.set_params(max_epochs=12).fit(data)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


@pytest.mark.slow
@pytest.mark.skipif(_allocator._glibc() is None, reason="the allocator settings are glibc's")
def test_training_steps_stop_faulting_their_memory_back_in():
    """Each epoch of a full-batch fit frees and re-allocates the same tens of megabytes; held,
    they are not returned to the system and faulted back in at every step."""

    def faults(tuning: str) -> int:
        env = {**os.environ, "LATENTODE_MALLOC_TUNING": tuning}
        out = subprocess.run(
            [sys.executable, "-c", _FIT], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    held, default = faults("1"), faults("0")
    assert held < 0.5 * default, (held, default)
