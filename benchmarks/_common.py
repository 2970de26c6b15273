"""Helpers shared by the benchmark scripts: library versions and fresh-process workers."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ["latentode", "torch", "pyro-ppl", "torchdiffeq", "numpy", "dm-control", "mujoco"]


def versions() -> dict:
    """Python, the machine and the versions of the packages results depend on (None if absent)."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_worker(script: str, args: list[str]) -> dict:
    """Run ``script --worker ARGS`` in a fresh Python process; return the JSON it prints last.

    A fresh process per measurement keeps peak memory (``ru_maxrss``) and allocator state
    from leaking between configurations.
    """
    done = subprocess.run(
        [sys.executable, script, "--worker", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(out: Path, payload: dict) -> None:
    """Write a benchmark's results as JSON (with :func:`versions`) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload | {"versions": versions()}, indent=2))
    print(f"wrote {out}")
