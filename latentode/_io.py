"""Safe reading and atomic writing of the library's files (fitted models and checkpoints).

Files are ``torch.save`` archives of a plain dict — tensors, numbers, strings, lists and dicts,
with the configuration as JSON text — read back with ``torch.load(..., weights_only=True)``,
so loading a file never runs code from it. Every file names its format and version; a file of
another format, a newer version, or a damaged file gives a :class:`ValueError` that says so.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os

import numpy as np
import torch

__all__ = [
    "content_digest",
    "data_fingerprint", "read_payload", "remove_stale_temporaries", "write_atomic"]


def _temporary(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def content_digest(obj) -> str:
    """SHA-256 over a nested structure of dicts, lists, tensors and plain values.

    Tensors contribute their dtype, shape and bytes; dict entries are taken in key order.
    Stored in every file, it detects damage that would otherwise load silently (a flipped
    byte inside a tensor's data).
    """
    digest = hashlib.sha256()

    def visit(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            digest.update(b"{")
            for k in sorted(x, key=repr):
                digest.update(repr(k).encode())
                visit(x[k])
            digest.update(b"}")
        elif isinstance(x, (list, tuple)):
            digest.update(b"[")
            for v in x:
                visit(v)
            digest.update(b"]")
        else:
            digest.update(repr(x).encode())

    visit(obj)
    return digest.hexdigest()


def write_atomic(payload: dict, path) -> None:
    """Write ``payload`` with ``torch.save`` to a temporary file, then rename it to ``path``.

    A ``"sha256"`` entry (:func:`content_digest` of the rest) is added so that
    :func:`read_payload` detects damaged files. A write interrupted at any point (exception,
    ``KeyboardInterrupt``, or the process being killed) leaves any earlier file at ``path``
    intact.
    """
    payload = {**payload, "sha256": content_digest(payload)}
    path = os.fspath(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporaries(path) -> list[str]:
    """Delete temporary files left next to ``path`` by writes of processes that were killed.

    Returns
    -------
    list of str
        The removed paths.
    """
    removed = []
    for tmp in glob.glob(glob.escape(os.fspath(path)) + ".tmp-*"):
        pid = tmp.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            os.remove(tmp)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_payload(path, *, fmt: str, version: int, what: str) -> dict:
    """Read a file written by :func:`write_atomic` and check its format.

    Parameters
    ----------
    path : str or path-like
    fmt : str
        Expected value of the file's ``"format"`` entry.
    version : int
        Newest ``"format_version"`` this library reads.
    what : str
        How to call the file in messages, e.g. ``"latentode model file"``.

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is damaged or truncated (its content no longer matches its checksum), of
        another format, or from a newer version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} at {path!r}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path!r} is not a readable {what}: it is damaged, truncated or of another kind "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path!r} is not a {what} (its format is {found!r}, not {fmt!r}).")
    found_version = payload.get("format_version", math.inf)
    if not isinstance(found_version, int) or found_version > version:
        raise ValueError(
            f"{path!r} was written by a newer latentode (format version {found_version!r}; this "
            f"version reads up to {version}); upgrade latentode to read it."
        )
    stored = payload.pop("sha256", None)
    if stored != content_digest(payload):
        raise ValueError(
            f"{path!r} is damaged: its content does not match the checksum written with it; "
            "use another copy (for a checkpoint, pass resume=False to start afresh)."
        )
    return payload


def data_fingerprint(data) -> str:
    """SHA-256 of a data set's ids, times and values, to recognise the same training data.

    Parameters
    ----------
    data : IrregularDataset

    Returns
    -------
    str
        Hexadecimal digest.
    """
    digest = hashlib.sha256()
    digest.update(repr(list(data.feature_names)).encode())
    for series in data:
        digest.update(repr(series.id).encode())
        digest.update(np.ascontiguousarray(series.times, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(series.values, dtype=np.float64).tobytes())
    return digest.hexdigest()
