"""Fetching data set files: checksummed downloads and safe archive extraction.

Downloads go to a temporary file and are renamed into place only after their SHA-256 matches
the published value, so a partial or tampered file is never used. Archives are extracted only
after every member has been checked: nothing may land outside the target folder (absolute
names, ``..``, links pointing out), and only regular files and folders are written.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

__all__ = [
    "DownloadError",
    "UnsafeArchiveError",
    "data_home",
    "download",
    "safe_extract",
    "sha256_file",
]

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be fetched, or what was fetched is not the published file."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder, or is not a plain file."""


def data_home(path=None) -> Path:
    """Folder where data sets are kept.

    ``path`` if given, else the environment variable ``LATENTODE_DATA``, else
    ``~/.cache/latentode``. Created if missing.
    """
    if path is None:
        path = os.environ.get("LATENTODE_DATA") or Path.home() / ".cache" / "latentode"
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path) -> str:
    """Hexadecimal SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, path, *, sha256: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``path`` unless a file with the right checksum is already there.

    Parameters
    ----------
    url : str
    path : str or path-like
        Destination file.
    sha256 : str
        Published SHA-256 of the file (hexadecimal).
    timeout : float, default 60
        Seconds to wait for the server.

    Returns
    -------
    Path
        ``path``, holding a verified copy.

    Raises
    ------
    DownloadError
        The server could not be reached (the message says where to put a copy fetched by
        hand), or the fetched file's checksum differs (it is deleted, nothing is kept).
    """
    path = Path(path)
    if path.exists() and sha256_file(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(
                f"could not download {url} ({err}). Without network access, fetch the file by "
                f"hand and place it at {path}."
            ) from err
        if digest.hexdigest() != sha256:
            raise DownloadError(
                f"the file downloaded from {url} has SHA-256 {digest.hexdigest()}, not the "
                f"published {sha256}; it was discarded. Try again later, or check the source."
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _check_name(name: str, archive) -> PurePosixPath:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and ":" in pure.parts[0]) or ".." in pure.parts:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written outside the target folder; the "
            "archive was not extracted."
        )
    return pure


def safe_extract(archive, dest) -> list[Path]:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing unsafe members.

    Every member is checked before anything is written: absolute names, ``..`` components,
    symbolic or hard links, device files and FIFOs make the whole archive refused.

    Parameters
    ----------
    archive : str or path-like
    dest : str or path-like
        Target folder (created if missing).

    Returns
    -------
    list of Path
        The extracted regular files.

    Raises
    ------
    UnsafeArchiveError
        Naming the first offending member; nothing is extracted.
    ValueError
        The file is not a tar or zip archive.
    """
    archive, dest = Path(archive), Path(dest)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, dest)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, dest)
    raise ValueError(f"{archive} is not a tar or zip archive.")


def _extract_tar(archive: Path, dest: Path) -> list[Path]:
    with tarfile.open(archive) as tar:
        entries = []
        for m in tar.getmembers():
            name = _check_name(m.name, archive)
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "special file"
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a {kind}; only regular files and folders "
                    "are extracted, so the archive was not extracted."
                )
            entries.append((name, m.isdir(), functools.partial(tar.extractfile, m)))
        return _write(entries, dest)


def _extract_zip(archive: Path, dest: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        entries = []
        for info in zf.infolist():
            name = _check_name(info.filename, archive)
            mode = info.external_attr >> 16
            if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                raise UnsafeArchiveError(
                    f"{archive}: member {info.filename!r} is a link or special file; the "
                    "archive was not extracted."
                )
            entries.append((name, info.is_dir(), functools.partial(zf.open, info)))
        return _write(entries, dest)


def _write(entries, dest: Path) -> list[Path]:
    """Write checked ``(relative path, is folder, opener)`` entries below ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, is_dir, opener in entries:
        target = dest.joinpath(*name.parts)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
        written.append(target)
    return written
