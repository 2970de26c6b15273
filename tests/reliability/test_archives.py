"""Untrusted archives: nothing is written outside the target folder, links are refused."""

import io
import tarfile
import zipfile
from pathlib import PurePosixPath

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


def test_a_link_already_in_the_destination_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "set-a").symlink_to(outside, target_is_directory=True)
    archive = make_tar(tmp_path / "a.tar.gz", [file_member("set-a/1.txt")])
    with pytest.raises(UnsafeArchiveError, match="through the link"):
        safe_extract(archive, dest)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "members, message",
    [
        ([file_member("set-a/1.txt"), file_member("set-a/1.txt", b"again")], "two members"),
        ([file_member("set-a"), file_member("set-a/1.txt")], "both a file and a folder"),
    ],
)
def test_name_clashes_refuse_the_archive_before_anything_is_written(tmp_path, members, message):
    archive = make_tar(tmp_path / "clash.tar.gz", [file_member("first.txt"), *members])
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_member_landing_on_an_existing_folder_is_refused(tmp_path):
    (tmp_path / "out" / "data.txt").mkdir(parents=True)
    archive = make_tar(tmp_path / "a.tar.gz", [file_member("new.txt"), file_member("data.txt")])
    with pytest.raises(UnsafeArchiveError, match="would replace a folder"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "new.txt").exists()


def test_size_count_and_ratio_limits(tmp_path):
    archive = make_tar(
        tmp_path / "a.tar.gz", [file_member(f"{i}.txt", b"0" * 1000) for i in range(5)]
    )
    with pytest.raises(UnsafeArchiveError, match="more than max_bytes=4000"):
        safe_extract(archive, tmp_path / "out", max_bytes=4000)
    with pytest.raises(UnsafeArchiveError, match="more than max_members=4"):
        safe_extract(archive, tmp_path / "out", max_members=4)
    assert not (tmp_path / "out").exists()
    assert len(safe_extract(archive, tmp_path / "out", max_bytes=5000, max_members=5)) == 5
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        safe_extract(archive, tmp_path / "out", max_bytes=-1)
    # 20 MiB of zeros packs into a few KB: a compression bomb's ratio
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.txt", b"\0" * (20 << 20))
    with pytest.raises(UnsafeArchiveError, match="times its size"):
        safe_extract(bomb, tmp_path / "bomb")
    assert not (tmp_path / "bomb").exists()


def test_a_member_longer_than_its_header_says_is_cut_off(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", [file_member("a.txt", b"0" * 100)])

    from latentode.datasets import _download

    # what a forged header would let through: more bytes than it declares
    entries = [(PurePosixPath("a.txt"), False, 100, lambda: io.BytesIO(b"0" * 10_000))]
    with pytest.raises(UnsafeArchiveError, match="more than the 100 bytes"):
        _download._write(entries, archive, tmp_path / "out", (10**9, 10, 100.0))
    assert not (tmp_path / "out" / "a.txt").exists()


def test_a_damaged_archive_says_so_with_its_name(tmp_path):
    archive = make_tar(
        tmp_path / "a.tar.gz", [file_member(f"{i}.txt", b"x" * 5000) for i in range(9)]
    )
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="a.tar.gz is damaged or truncated"):
        safe_extract(archive, tmp_path / "out")
