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
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from zlib import error as zlib_error

__all__ = [
    "DownloadError",
    "UnsafeArchiveError",
    "data_home",
    "download",
    "safe_extract",
    "sha256_file",
]

_CHUNK = 1 << 20
#: Default limits of :func:`safe_extract` on what one archive may unpack to.
MAX_EXTRACT_BYTES = 1 << 30
MAX_EXTRACT_MEMBERS = 200_000
MAX_EXTRACT_RATIO = 100.0
_RATIO_FROM = 16 << 20  # archives unpacking to less are never refused for their ratio


class DownloadError(OSError):
    """A file could not be fetched, or what was fetched is not the published file."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder, is not a plain file, or
    the archive unpacks to more than the limits allow."""


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


def safe_extract(
    archive,
    dest,
    *,
    max_bytes: int = MAX_EXTRACT_BYTES,
    max_members: int = MAX_EXTRACT_MEMBERS,
    max_ratio: float = MAX_EXTRACT_RATIO,
) -> list[Path]:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing unsafe members.

    Every member is checked before anything is written: absolute names, ``..`` components,
    symbolic or hard links, device files and FIFOs, two members with one name, a member whose
    place in ``dest`` is already taken by a link or by something of the other kind (a file
    where a folder goes), and archives that unpack to more than ``max_bytes``, to more than
    ``max_ratio`` times their own size (beyond 16 MiB), or hold more than ``max_members``
    members make the whole archive refused. Bytes are counted again while
    writing, so a member longer than its header says is cut off and refused too.

    Parameters
    ----------
    archive : str or path-like
    dest : str or path-like
        Target folder (created if missing).
    max_bytes : int, default 1 GiB
        Most bytes the archive may unpack to; raise it for a larger trusted archive (the data
        sets of this library unpack to far less).
    max_members : int, default 200000
        Most members (files and folders) the archive may hold.
    max_ratio : float, default 100
        Most bytes unpacked per byte of archive, once it unpacks to more than 16 MiB (a
        compression bomb's mark; text data compresses about 5-20 times).

    Returns
    -------
    list of Path
        The extracted regular files.

    Raises
    ------
    UnsafeArchiveError
        Naming the first offending member, or the limit exceeded; nothing is extracted (for
        a member found too long while writing: the files written are removed).
    ValueError
        The file is not a tar or zip archive, or is damaged.
    """
    archive, dest = Path(archive), Path(dest)
    for name, value in (("max_bytes", max_bytes), ("max_members", max_members)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}.")
    if not (isinstance(max_ratio, (int, float)) and max_ratio >= 1):
        raise ValueError(f"max_ratio must be a number of at least 1; got {max_ratio!r}.")
    limits = (max_bytes, max_members, max_ratio)
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                entries = _tar_entries(tar, archive)
                return _write(entries, archive, dest, limits)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                entries = _zip_entries(zf, archive)
                return _write(entries, archive, dest, limits)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib_error) as err:
        raise ValueError(f"{archive} is damaged or truncated ({err}); fetch it again.") from None
    raise ValueError(f"{archive} is not a tar or zip archive.")


def _tar_entries(tar, archive: Path) -> list:
    entries = []
    for m in tar:
        name = _check_name(m.name, archive)
        if not (m.isfile() or m.isdir()):
            kind = "link" if (m.issym() or m.islnk()) else "special file"
            raise UnsafeArchiveError(
                f"{archive}: member {m.name!r} is a {kind}; only regular files and folders "
                "are extracted, so the archive was not extracted."
            )
        entries.append((name, m.isdir(), m.size, functools.partial(tar.extractfile, m)))
    return entries


def _zip_entries(zf, archive: Path) -> list:
    entries = []
    for info in zf.infolist():
        name = _check_name(info.filename, archive)
        mode = info.external_attr >> 16
        if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
            raise UnsafeArchiveError(
                f"{archive}: member {info.filename!r} is a link or special file; the "
                "archive was not extracted."
            )
        entries.append((name, info.is_dir(), info.file_size, functools.partial(zf.open, info)))
    return entries


def _plan(entries, archive: Path, dest: Path, limits) -> None:
    """Refuse an archive whose members clash, exceed the limits, or would land on a link."""
    max_bytes, max_members, max_ratio = limits
    if len(entries) > max_members:
        raise UnsafeArchiveError(
            f"{archive} holds {len(entries)} members, more than max_members={max_members}; "
            "nothing was extracted (raise max_members if you trust it)."
        )
    total = sum(size for _, is_dir, size, _ in entries if not is_dir)
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive} unpacks to {total} bytes, more than max_bytes={max_bytes}; nothing was "
            "extracted (raise max_bytes if you trust it)."
        )
    packed = max(archive.stat().st_size, 1)
    if total > _RATIO_FROM and total > max_ratio * packed:
        raise UnsafeArchiveError(
            f"{archive} unpacks to {total} bytes, {total / packed:.0f} times its size (more "
            f"than max_ratio={max_ratio:g}); nothing was extracted (raise max_ratio if you "
            "trust it)."
        )
    files, folders = set(), set()
    for name, is_dir, _, _ in entries:
        parts = name.parts
        folders.update(PurePosixPath(*parts[:k]) for k in range(1, len(parts)))
        if is_dir:
            folders.add(name)
        elif name in files:
            raise UnsafeArchiveError(
                f"{archive}: two members are named {str(name)!r}; nothing was extracted."
            )
        else:
            files.add(name)
    clash = sorted(files & folders)
    if clash:
        raise UnsafeArchiveError(
            f"{archive}: {str(clash[0])!r} is both a file and a folder in the archive; nothing "
            "was extracted."
        )
    for name in sorted(files | folders):
        target = dest.joinpath(*name.parts)
        if target.is_symlink():
            raise UnsafeArchiveError(
                f"{archive}: member {str(name)!r} would be written through the link {target} "
                "already in the target folder; nothing was extracted (remove the link)."
            )
        if target.exists() and target.is_dir() != (name in folders):
            kind = "a folder" if target.is_dir() else "a file"
            raise UnsafeArchiveError(
                f"{archive}: member {str(name)!r} would replace {kind} already at {target}; "
                "nothing was extracted."
            )


def _write(entries, archive: Path, dest: Path, limits) -> list[Path]:
    """Write checked ``(relative path, is folder, size, opener)`` entries below ``dest``."""
    _plan(entries, archive, dest, limits)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = []
    try:
        for name, is_dir, size, opener in entries:
            target = dest.joinpath(*name.parts)
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.parent.resolve().is_relative_to(root):  # a link made meanwhile
                raise UnsafeArchiveError(
                    f"{archive}: member {str(name)!r} would be written outside {dest}."
                )
            with opener() as source, open(target, "wb") as out:
                written.append(target)
                left = size
                for chunk in iter(lambda: source.read(_CHUNK), b""):
                    left -= len(chunk)
                    if left < 0:
                        raise UnsafeArchiveError(
                            f"{archive}: member {str(name)!r} holds more than the {size} bytes "
                            "its header declares; the extracted files were removed."
                        )
                    out.write(chunk)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
