"""The training optimiser: torch's Adam and exponential decay, without torch.optim's start-up."""

import subprocess
import sys

import pytest
import torch

from latentode.inference._adam import Adam


def _grads(params, k):
    for j, p in enumerate(params):
        p.grad = torch.sin(torch.arange(p.numel(), dtype=p.dtype) * (k + 1) + j).view_as(p)


def test_the_same_steps_and_state_as_torch_adam_with_exponential_decay():
    ours = [torch.randn(3, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(4)]
    theirs = [p.clone() for p in ours]
    mine = Adam(ours, lr=0.05, decay=0.9)
    reference = torch.optim.Adam(theirs, lr=0.05)
    schedule = torch.optim.lr_scheduler.ExponentialLR(reference, gamma=0.9)
    for epoch in range(3):
        for k in range(4):
            _grads(ours, 4 * epoch + k)
            _grads(theirs, 4 * epoch + k)
            if k == 2:  # a parameter without a gradient is left alone
                ours[1].grad = theirs[1].grad = None
            mine.step()
            reference.step()
        mine.decay_step()
        schedule.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert mine.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])
    # checkpoints written by either load into the other and continue the same way
    back = Adam([p.clone() for p in ours], lr=1.0)
    back.load_state_dict(reference.state_dict())
    back.load_scheduler_state_dict(schedule.state_dict())
    fresh = torch.optim.Adam([p.clone() for p in theirs], lr=1.0)
    fresh.load_state_dict(mine.state_dict())
    assert back.epoch == 3 and back.param_groups[0]["lr"] == pytest.approx(0.05 * 0.9**3)
    _grads(back.params, 99)
    _grads(fresh.param_groups[0]["params"], 99)
    back.step()
    fresh.step()
    for a, b in zip(back.params, fresh.param_groups[0]["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="has 2 parameters; this model has 1"):
        Adam([torch.zeros(1)], lr=0.1).load_state_dict(mine.state_dict())


def test_a_first_fit_does_not_import_torch_dynamo():
    code = (
        "import sys\n"
        "from latentode import LatentODE\n"
        "from latentode.datasets import make_spirals\n"
        "d = make_spirals(n_series=20, n_obs=8, random_state=0)\n"
        "LatentODE(max_epochs=1, latent_dim=2).fit(d.train)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
