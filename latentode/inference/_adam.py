"""Adam with an exponential learning-rate decay per epoch, without ``torch.optim``'s start-up.

``torch.optim.Adam.step`` imports ``torch._dynamo`` on its first call, a one-time cost of
seconds in a fresh process (more on a loaded machine) that a fit of a small model would spend
mostly waiting on. This optimiser performs the same update as ``torch.optim.Adam`` (the
single-tensor algorithm, no weight decay, no AMSGrad) and keeps its state — and that of
``torch.optim.lr_scheduler.ExponentialLR`` — in the layouts of their ``state_dict``, so that
checkpoints written with either load into the other.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Adam"]


class Adam:
    """Adam (Kingma & Ba 2015) over a list of parameters, with ``lr *= decay`` per epoch.

    Parameters
    ----------
    params : iterable of Tensor
        Parameters updated in place from their ``.grad`` (skipped where it is None).
    lr : float
        Initial learning rate.
    decay : float, default 1.0
        Factor applied to the rate by :meth:`decay_step` (once per epoch).
    betas : tuple of float, default (0.9, 0.999)
    eps : float, default 1e-8

    Attributes
    ----------
    param_groups : list of dict
        One group holding ``lr`` (changeable in place, as with ``torch.optim``), ``betas`` and
        ``eps``.
    """

    def __init__(self, params, *, lr: float, decay: float = 1.0, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.decay = float(decay)
        self.base_lr = float(lr)
        self.epoch = 0
        self.param_groups = [{"lr": float(lr), "betas": tuple(betas), "eps": float(eps)}]
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients (set them to None, or zero them)."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            state["step"] += 1
            step = state["step"].item()
            m, v, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad.conj(), value=1 - beta2)
            bias1, bias2 = 1 - beta1**step, 1 - beta2**step
            denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / bias1)

    def decay_step(self) -> None:
        """End of an epoch: multiply the learning rate by ``decay``."""
        self.epoch += 1
        self.param_groups[0]["lr"] *= self.decay

    # -- state in torch.optim's layouts ------------------------------------------------
    def state_dict(self) -> dict:
        """The state as ``torch.optim.Adam.state_dict`` lays it out."""
        group = self.param_groups[0]
        return {
            "state": {i: dict(s) for i, s in self.state.items()},
            "param_groups": [
                {
                    "lr": group["lr"],
                    "betas": group["betas"],
                    "eps": group["eps"],
                    "weight_decay": 0,
                    "amsgrad": False,
                    "maximize": False,
                    "foreach": None,
                    "capturable": False,
                    "differentiable": False,
                    "fused": None,
                    "initial_lr": self.base_lr,
                    "params": list(range(len(self.params))),
                }
            ],
        }

    def load_state_dict(self, saved: dict) -> None:
        """Take a state of :meth:`state_dict` or of ``torch.optim.Adam.state_dict``."""
        (group,) = saved["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(
                f"the saved optimiser state has {len(group['params'])} parameters; this model "
                f"has {len(self.params)}."
            )
        if group.get("weight_decay", 0) or group.get("amsgrad", False):
            raise ValueError("the saved optimiser state uses weight decay or AMSGrad.")
        self.param_groups[0].update(lr=group["lr"], betas=tuple(group["betas"]), eps=group["eps"])
        self.base_lr = group.get("initial_lr", self.base_lr)
        state = {}
        for key, s in saved["state"].items():
            p = self.params[group["params"].index(int(key))]
            state[int(key)] = {
                "step": torch.as_tensor(s["step"], dtype=torch.float32).clone().cpu(),
                "exp_avg": s["exp_avg"].to(p.device, p.dtype).clone(),
                "exp_avg_sq": s["exp_avg_sq"].to(p.device, p.dtype).clone(),
            }
        self.state = state

    def scheduler_state_dict(self) -> dict:
        """The decay's state as ``torch.optim.lr_scheduler.ExponentialLR`` lays it out."""
        return {
            "gamma": self.decay,
            "base_lrs": [self.base_lr],
            "last_epoch": self.epoch,
            "_step_count": self.epoch + 1,
            "_get_lr_called_within_step": False,
            "_last_lr": [self.param_groups[0]["lr"]],
        }

    def load_scheduler_state_dict(self, saved: dict) -> None:
        """Take a state of :meth:`scheduler_state_dict` or of ``ExponentialLR``."""
        self.epoch = int(saved["last_epoch"])
