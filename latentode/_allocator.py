"""Keep freed CPU memory in the process while training, and hand it back afterwards.

A training step allocates the same large activations (megabytes each: the decoder's hidden
layer over every observed time of a mini-batch, the solver's stages) and frees them all at
its end. With glibc's default heuristics the freed top of the heap is returned to the
operating system at the end of each step and faulted back in, page by page and zeroed, in
the next (``benchmarks/allocator.py`` measures how many faults and how much time that costs
on a machine; it differs between machines). :func:`hold_freed_memory` raises glibc's trim
threshold (and fixes its mmap threshold at its largest dynamic value, which the first
setting would otherwise reset to 128 KiB) for the rest of the process;
:func:`release_freed_memory` returns what is free at once (``malloc_trim``), so a fitted
model does not keep its training's peak resident.

Only glibc (Linux) has these settings; elsewhere both functions do nothing. Setting the
environment variable ``LATENTODE_MALLOC_TUNING=0`` before the first ``fit`` leaves the
allocator untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["hold_freed_memory", "release_freed_memory"]

#: ``mallopt`` parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: freed memory kept at the top of the heap before it is returned to the system
TRIM_THRESHOLD = 1 << 30
#: allocations at least this large get their own mapping (glibc's largest dynamic value)
MMAP_THRESHOLD = 32 << 20

_state: dict = {"libc": None, "looked_up": False, "held": False}


def _glibc():
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not _state["looked_up"]:
        _state["looked_up"] = True
        libc = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            except OSError:
                libc = None
            if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
                libc = None  # musl and other C libraries have neither
        _state["libc"] = libc
    return _state["libc"]


def _enabled() -> bool:
    return os.environ.get("LATENTODE_MALLOC_TUNING", "1").strip().lower() not in {
        "0",
        "false",
        "no",
        "off",
    }


def hold_freed_memory() -> bool:
    """Keep up to :data:`TRIM_THRESHOLD` bytes of freed heap memory in the process.

    Called by the training loop before its first step; idempotent.

    Returns
    -------
    bool
        True when the allocator is (now or already) tuned; False where it cannot be (not
        glibc) or must not be (``LATENTODE_MALLOC_TUNING=0``).
    """
    if _state["held"]:
        return True
    libc = _glibc()
    if libc is None or not _enabled():
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _state["held"] = ok
    return ok


def release_freed_memory() -> None:
    """Return the heap memory that is free now to the operating system (after training)."""
    libc = _glibc()
    if libc is not None and _state["held"]:
        libc.malloc_trim(0)
