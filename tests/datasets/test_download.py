import hashlib

import pytest

from latentode.datasets import DownloadError, data_home, download


def published(tmp_path, content=b"RecordID,In-hospital_death\n132539,0\n"):
    source = tmp_path / "server" / "Outcomes-a.txt"
    source.parent.mkdir()
    source.write_bytes(content)
    return source.as_uri(), hashlib.sha256(content).hexdigest(), content


def test_download_verifies_the_checksum_and_reuses_a_good_copy(tmp_path):
    url, sha, content = published(tmp_path)
    target = tmp_path / "cache" / "Outcomes-a.txt"
    assert download(url, target, sha256=sha) == target
    assert target.read_bytes() == content
    (tmp_path / "server" / "Outcomes-a.txt").unlink()  # a verified copy is not fetched again
    assert download(url, target, sha256=sha).read_bytes() == content


def test_a_tampered_download_is_discarded(tmp_path):
    url, _, _ = published(tmp_path)
    target = tmp_path / "cache" / "Outcomes-a.txt"
    with pytest.raises(DownloadError, match="not the published"):
        download(url, target, sha256="0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the file nor a partial one


def test_offline_error_says_where_to_put_the_file(tmp_path):
    target = tmp_path / "cache" / "set-a.tar.gz"
    with pytest.raises(DownloadError, match=r"fetch the file by hand and place it at .*set-a"):
        download("http://127.0.0.1:9/set-a.tar.gz", target, sha256="0" * 64, timeout=2)
    assert not target.exists()


def test_data_home_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTODE_DATA", str(tmp_path / "data"))
    assert data_home() == tmp_path / "data" and (tmp_path / "data").is_dir()
    assert data_home(tmp_path / "other") == tmp_path / "other"
