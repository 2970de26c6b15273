"""Memory measurements for training steps: what autograd keeps, and the process's peak.

Used by the benchmarks and examples to show when the adjoint method pays: backpropagating
through a solver keeps every intermediate state of every step for the backward pass, the
adjoint keeps (almost) none.
"""

from __future__ import annotations

import contextlib
import resource
import sys

import torch

__all__ = ["SavedTensors", "peak_rss_mib"]


class SavedTensors(contextlib.AbstractContextManager):
    """Count the bytes autograd saves for the backward pass while the context is active.

    Each distinct storage is counted once (views of one tensor share it). This is the memory
    a forward pass holds until ``backward`` runs — the part that grows with the number of
    solver steps when backpropagating through a solver.

    Attributes
    ----------
    bytes : int
    n_tensors : int

    Examples
    --------
    >>> import torch
    >>> w = torch.ones(1000, requires_grad=True)
    >>> with SavedTensors() as saved:
    ...     loss = (w * w).sum()
    >>> saved.bytes
    4000
    """

    def __init__(self):
        self.bytes = 0
        self.n_tensors = 0
        self._seen: set = set()
        self._hooks = None

    @property
    def mib(self) -> float:
        """``bytes`` in MiB."""
        return self.bytes / 2**20

    def _pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.device)
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
            self.n_tensors += 1
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self._seen.clear()
        return False


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux and macOS).

    Returns
    -------
    float
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
