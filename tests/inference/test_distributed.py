"""Data-parallel training under ``torchrun`` with two CPU processes (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentode import LatentODE
from latentode.datasets import make_spirals

WORKER = Path(__file__).with_name("ddp_worker.py")
sys.path.insert(0, str(WORKER.parent))
from ddp_worker import CONFIG  # noqa: E402


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_processes_step_together_and_only_rank0_writes(two_processes):
    r0, r1 = (torch.load(two_processes / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["state"].keys() == r1["state"].keys()
    for key, value in r0["state"].items():  # identical after four epochs of summed gradients
        assert torch.equal(value, r1["state"][key]), key
    assert (two_processes / "checkpoint_rank0.pt").exists()
    assert not (two_processes / "checkpoint_rank1.pt").exists()


@pytest.mark.slow
def test_summed_share_weighted_gradients_equal_the_whole_batch_gradient(two_processes):
    gen = torch.Generator().manual_seed(1)
    x, y, w = (
        torch.randn(10, 3, generator=gen),
        torch.randn(10, generator=gen),
        torch.randn(3, generator=gen),
    )
    w.requires_grad_(True)
    ((x @ w - y) ** 2).mean().backward()
    for r in (0, 1):
        grad = torch.load(two_processes / f"rank{r}.pt")["grad"]
        assert torch.allclose(grad, w.grad, atol=1e-6)


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batches(two_processes):
    data = make_spirals(n_series=96, n_obs=20, random_state=0)
    one = LatentODE(**CONFIG).fit(data.train)
    two_loss = json.loads((two_processes / "history.json").read_text())["loss"]
    two_score = json.loads((two_processes / "score.json").read_text())
    # same start, same shuffles; only the z0 noise differs: each epoch's loss within 10%
    for a, b in zip(one.history_.loss, two_loss, strict=True):
        assert abs(a - b) < 0.1 * abs(a)
    assert two_loss[-1] < 0.8 * two_loss[0]  # and it trains
    # held-out ELBO: the gap to one process is small next to what three more epochs bring
    short = LatentODE(**{**CONFIG, "max_epochs": 1}).fit(data.train)
    one_score, short_score = one.score(data.test), short.score(data.test)
    assert abs(two_score - one_score) < 0.25 * abs(one_score - short_score)


@pytest.mark.slow
def test_streamed_processes_read_their_own_blocks_and_step_together(two_processes):
    r0, r1 = (torch.load(two_processes / f"streamed{r}.pt") for r in (0, 1))
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    # each epoch, each process read its own blocks (77 spirals in 20 blocks), none twice
    assert len(r0["read"]) == len(r1["read"]) == 2
    for mine, theirs in zip(r0["read"], r1["read"], strict=True):
        assert len(set(mine)) == len(mine) and len(set(theirs)) == len(theirs)
        assert not set(mine) & set(theirs)
        assert len(mine) + len(theirs) >= 18
    assert r0["read"][0] != r0["read"][1]  # a new shuffle of the blocks
    assert r0["loss"] == r1["loss"] and r0["loss"][1] < r0["loss"][0]
