"""Data-parallel training over several processes with ``torch.distributed``.

Launched by ``torchrun --nproc_per_node N script.py``, each process runs the same script on the
same data; ``LatentODE.fit`` then joins the process group (gloo on CPU, NCCL on CUDA), and
every mini-batch of ``batch_size`` series is split between the processes. Each process
computes the ELBO gradient of its share, weighted by its share of the batch, and the gradients
are summed across processes before the optimiser step: every process takes the step a single
process would take on the whole batch, so the parameters stay identical everywhere. Only the
process of rank 0 writes checkpoints, logs and shows progress.

What differs from one process on the same global batch is only the Monte Carlo noise: each
process draws its own ``z0`` samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DataParallel"]


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a ``torch.distributed`` group, and the collective steps.

    Attributes
    ----------
    rank : int
        This process's rank, ``0 <= rank < world_size``.
    world_size : int
        Number of processes, at least 2.
    device : torch.device
        Where collective tensors live (CUDA for NCCL, the CPU for gloo).
    """

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def from_environment(cls, device: torch.device) -> DataParallel | None:
        """The group this process belongs to, joining it if ``torchrun`` started us.

        Returns None for a single process: no group initialised and no ``WORLD_SIZE`` above 1
        in the environment. When ``torchrun`` set ``WORLD_SIZE`` (and ``RANK``,
        ``MASTER_ADDR``, ``MASTER_PORT``) and no group exists yet, one is initialised with the
        NCCL backend on CUDA and gloo otherwise; a group the caller initialised is used as is.

        Parameters
        ----------
        device : torch.device
            The device training runs on.
        """
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            return cls(dist.get_rank(), world, cls._comm_device(device)) if world > 1 else None
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        if not dist.is_available():  # pragma: no cover - builds without distributed support
            raise RuntimeError(
                f"WORLD_SIZE={world} asks for distributed training, but this PyTorch build has "
                "no torch.distributed; run a single process (unset WORLD_SIZE)."
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), dist.get_world_size(), cls._comm_device(device))

    @staticmethod
    def _comm_device(device: torch.device) -> torch.device:
        return device if dist.get_backend() == "nccl" else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and logs."""
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's share of a global mini-batch of series indices.

        Parameters
        ----------
        idx : LongTensor of shape (batch,)

        Returns
        -------
        LongTensor of shape (about batch / world_size,)
            Every ``world_size``-th index from ``rank`` on (empty when the batch has fewer
            series than processes).
        """
        return idx[self.rank :: self.world_size]

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value``, on every process (e.g. a seed drawn at random)."""
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every process."""
        for tensor in [*module.parameters(), *module.buffers()]:
            data = tensor.data.to(self.device)
            dist.broadcast(data, src=0)
            tensor.data.copy_(data)

    def sum_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over the processes (in one call).

        Parameters without a gradient on a process count as zero there.

        Parameters
        ----------
        params : list of Tensor
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self.device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.device).clone()
            offset += n

    def sum(self, value: float) -> float:
        """``value`` summed over the processes."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is True on any (keeps decisions collective)."""
        return self.sum(1.0 if flag else 0.0) > 0
