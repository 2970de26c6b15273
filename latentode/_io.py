"""Safe reading and atomic writing of the library's files (fitted models and checkpoints).

Files are ``torch.save`` archives of a plain dict — tensors, numbers, strings, lists and dicts,
with the configuration as JSON text — read back with ``torch.load(..., weights_only=True)``,
so loading a file never runs code from it. Every file names its format and version; a file of
another format, a newer version, or a damaged file gives a :class:`ValueError` that says so.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "RESUMABLE_PARAMS",
    "content_digest",
    "data_fingerprint",
    "read_checkpoint",
    "read_model",
    "read_payload",
    "remove_stale_temporaries",
    "to_cpu",
    "write_atomic",
    "write_checkpoint",
    "write_model",
]

FORMAT_NAME = "latentode"
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "latentode-checkpoint"
CHECKPOINT_VERSION = 1
#: Parameters that may change between an interrupted fit and its resumption.
RESUMABLE_PARAMS = frozenset({"max_epochs", "max_time", "patience", "verbose", "device"})


logger = logging.getLogger(__name__)


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


def to_cpu(obj):
    """Copy of a nested structure of dicts, lists and tensors with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


# -- model files ---------------------------------------------------------------------------
def write_model(path, *, cls_name: str, params: str, fitted: str, state_dict: dict) -> None:
    """Write a fitted estimator's file atomically.

    Parameters
    ----------
    path : str or path-like
    cls_name : str
        The estimator's class name; :func:`read_model` checks it.
    params, fitted : str
        JSON of the estimator's parameters and of its fitted attributes.
    state_dict : dict of str to Tensor
        The fitted network's weights (copied to the CPU).
    """
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": cls_name,
        "params": params,
        "fitted": fitted,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    write_atomic(payload, path)


def read_model(path, *, cls_name: str) -> dict:
    """Read a file of :func:`write_model` for the estimator class ``cls_name``.

    Returns
    -------
    dict
        ``params`` and ``fitted`` as JSON text, ``state_dict`` as tensors on the CPU.

    Raises
    ------
    ValueError
        Not a model file, damaged, newer, or holding another class (the message names it).
    """
    what = "latentode model file"
    payload = read_payload(path, fmt=FORMAT_NAME, version=FORMAT_VERSION, what=what)
    if payload.get("class") != cls_name:
        raise ValueError(
            f"{path!s} holds a {payload.get('class')}, not a {cls_name}; load it with "
            f"{payload.get('class')}.load."
        )
    return payload


# -- checkpoints ---------------------------------------------------------------------------
def _comparable(params: dict) -> dict:
    params = json.loads(json.dumps(params))
    return {k: v for k, v in params.items() if k not in RESUMABLE_PARAMS}


def write_checkpoint(
    path, training: dict, *, cls_name: str, params: dict, fingerprint: str
) -> None:
    """Write a training state atomically, with what a resumption must match.

    Parameters
    ----------
    path : str or path-like
    training : dict
        The training loop's state (tensors are copied to the CPU).
    cls_name : str
    params : dict
        The estimator's parameters (JSON-serialisable); all but :data:`RESUMABLE_PARAMS`
        must be the same to resume.
    fingerprint : str
        Identifies the training data (:func:`data_fingerprint`).
    """
    write_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "class": cls_name,
            "params": json.dumps(_comparable(params)),
            "data_fingerprint": fingerprint,
            "training": to_cpu(training),
        },
        path,
    )


def read_checkpoint(path, *, cls_name: str, params: dict, fingerprint: str) -> dict | None:
    """The training state of a checkpoint, if it matches the fit about to resume.

    Temporary files of killed writers are removed first.

    Returns
    -------
    dict or None
        The training state (tensors on the CPU), or None when there is no file at ``path``.

    Raises
    ------
    ValueError
        The file is not a readable checkpoint, belongs to another class, was written with
        other parameters (naming them) or for other data.
    """
    remove_stale_temporaries(path)
    if not os.path.exists(os.fspath(path)):
        logger.info("no checkpoint at %s; starting afresh", path)
        return None
    payload = read_payload(
        path, fmt=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="latentode checkpoint"
    )
    if payload.get("class") != cls_name:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} belongs to a {payload.get('class')}, not a {cls_name}."
        )
    saved, current = json.loads(payload["params"]), _comparable(params)
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} was written with other values of {changed}; "
            "resume with the same parameters (only max_epochs, max_time, patience, verbose and "
            "device may change) or pass resume=False to start afresh."
        )
    if payload["data_fingerprint"] != fingerprint:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} was written for different training data; "
            "resume with the same X or pass resume=False to start afresh."
        )
    return payload["training"]
