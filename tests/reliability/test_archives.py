"""Untrusted archives: nothing is written outside the target folder, links are refused."""

import io
import tarfile
import zipfile

import pytest

from latentode.datasets import UnsafeArchiveError, safe_extract


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name, data=b"Time,Parameter,Value\n"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_a_benign_archive_extracts_its_files(tmp_path):
    archive = make_tar(
        tmp_path / "ok.tar.gz", [file_member("set-a/1.txt"), file_member("set-a/2.txt", b"x")]
    )
    written = safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in written) == ["1.txt", "2.txt"]
    assert (tmp_path / "out" / "set-a" / "2.txt").read_bytes() == b"x"


@pytest.mark.parametrize(
    "member, message",
    [
        (file_member("../escaped.txt"), "outside the target folder"),
        (file_member("set-a/../../escaped.txt"), "outside the target folder"),
        (file_member("/srv/escaped-absolute.txt"), "outside the target folder"),
        (link_member("set-a/link", "/etc/passwd", tarfile.SYMTYPE), "is a link"),
        (link_member("set-a/hard", "../../outside", tarfile.LNKTYPE), "is a link"),
        (link_member("set-a/fifo", "", tarfile.FIFOTYPE), "special file"),
        (link_member("set-a/dev", "", tarfile.CHRTYPE), "special file"),
    ],
)
def test_unsafe_tar_members_refuse_the_whole_archive(tmp_path, member, message):
    archive = make_tar(tmp_path / "bad.tar.gz", [file_member("set-a/1.txt"), member])
    out = tmp_path / "sandbox" / "out"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, out)
    assert not out.exists()  # checked before anything was written
    assert not (tmp_path / "sandbox" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_path_traversal_in_a_zip_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/ok.txt", "fine")
        zf.writestr("../../escaped.txt", "evil")
    with pytest.raises(UnsafeArchiveError, match="'../../escaped.txt'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("ConfLongDemo_JSI.txt", "A01,010-000-024-033,633790226051280329,...")
    assert [p.name for p in safe_extract(good, tmp_path / "out")] == ["ConfLongDemo_JSI.txt"]


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not an archive")
    with pytest.raises(ValueError, match="not a tar or zip archive"):
        safe_extract(junk, tmp_path / "out")
