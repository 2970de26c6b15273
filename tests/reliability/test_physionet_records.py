"""PhysioNet 2012 files that are not what they claim: refused with the file named, bounded."""

import io
import tarfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentode.datasets import load_physionet2012

HEAD = "Time,Parameter,Value\n00:00,RecordID,{rid}\n00:00,Age,54\n"
OUTCOMES = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n"


def write_set(folder, members, outcomes=(1, 2)):
    """``members``: (member name, text) pairs written into set-a.tar.gz."""
    with tarfile.open(folder / "set-a.tar.gz", "w:gz") as tar:
        for name, text in members:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = "".join(f"{r},1,1,1,-1,0\n" for r in outcomes)
    (folder / "Outcomes-a.txt").write_text(OUTCOMES + rows)
    return folder


def record(rid, *lines):
    return HEAD.format(rid=rid) + "".join(f"{line}\n" for line in lines)


def test_well_formed_records_load(tmp_path):
    write_set(
        tmp_path,
        [("set-a/1.txt", record(1, "00:30,HR,70")), ("set-a/2.txt", record(2, "48:00,HR,80"))],
    )
    ds = load_physionet2012(tmp_path)
    assert ds.data.ids == [1, 2]
    assert ds.data[1].times.tolist() == [48.0]


@pytest.mark.parametrize("time", ["-5:00", "99999:00", "12:75", "48:01"])
def test_times_outside_the_48_hours_are_refused(tmp_path, time):
    write_set(
        tmp_path,
        [("set-a/1.txt", record(1, "00:30,HR,70")), ("set-a/2.txt", record(2, f"{time},HR,80"))],
    )
    with pytest.raises(ValueError, match=r"set-a/2.txt has the time .* outside 00:00-48:00"):
        load_physionet2012(tmp_path)


def test_a_record_id_twice_is_refused_not_averaged(tmp_path):
    write_set(
        tmp_path,
        [("set-a/1.txt", record(1, "00:30,HR,73")), ("copy/1.txt", record(1, "00:30,HR,999"))],
        outcomes=(1,),
    )
    with pytest.raises(
        ValueError, match=r"RecordID 1 appears twice \(set-a/1.txt and copy/1.txt\)"
    ):
        load_physionet2012(tmp_path)


def test_an_oversized_member_is_refused_before_it_is_read(tmp_path):
    big = record(2, *["00:30,HR,70"] * 20_000)  # ~240 KB
    write_set(tmp_path, [("set-a/1.txt", record(1, "00:30,HR,70")), ("set-a/2.txt", big)])
    with pytest.raises(
        ValueError, match=r"set-a/2.txt is \d+ bytes, more than max_record_bytes=100000"
    ):
        load_physionet2012(tmp_path, max_record_bytes=100_000)
    assert len(load_physionet2012(tmp_path).data) == 2  # the default admits it
    with pytest.raises(ValueError, match="more than max_records=1 record files"):
        load_physionet2012(tmp_path, max_records=1)
    with pytest.raises(ValueError, match="max_record_bytes"):
        load_physionet2012(tmp_path, max_record_bytes=0)


@pytest.mark.parametrize(
    "content", [b"definitely not an archive", b"\x1f\x8b\x08\x00garbage after a gzip magic"]
)
def test_a_file_that_is_not_an_archive_is_named(tmp_path, content):
    write_set(tmp_path, [("set-a/1.txt", record(1, "00:30,HR,70"))])
    (tmp_path / "set-a.tar.gz").write_bytes(content)
    with pytest.raises(ValueError, match="set-a.tar.gz is not a readable tar.gz archive"):
        load_physionet2012(tmp_path)


def test_a_truncated_archive_is_named(tmp_path):
    members = [
        (f"set-a/{i}.txt", record(i, *[f"00:{m:02d},HR,{60 + m}" for m in range(60)]))
        for i in range(1, 40)
    ]
    write_set(tmp_path, members, outcomes=range(1, 40))
    data = (tmp_path / "set-a.tar.gz").read_bytes()
    (tmp_path / "set-a.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="set-a.tar.gz is not a readable tar.gz archive"):
        load_physionet2012(tmp_path)


def test_a_malformed_line_is_named(tmp_path):
    write_set(
        tmp_path,
        [("set-a/1.txt", record(1, "00:30,HR,70")), ("set-a/2.txt", record(2, "half past,HR,70"))],
    )
    with pytest.raises(ValueError, match="a record line is not HH:MM,Parameter,Value"):
        load_physionet2012(tmp_path)


LINE = st.one_of(
    st.tuples(
        st.integers(-3, 60), st.integers(-1, 70), st.sampled_from(["HR", "Temp", "Nope", ""])
    ).map(lambda x: f"{x[0]:02d}:{x[1]:02d},{x[2]},70"),
    st.sampled_from(["", "garbage", "00:10,HR,", "00:10,HR,abc", "1:2:3,HR,5", ",,"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(LINE, min_size=1, max_size=6))
def test_any_record_either_loads_within_48_hours_or_is_refused_by_name(tmp_path, lines):
    write_set(
        tmp_path, [("set-a/1.txt", record(1, "00:30,HR,70")), ("set-a/2.txt", record(2, *lines))]
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_physionet2012(tmp_path)
    except ValueError as err:
        assert "set-a" in str(err) or "PhysioNet" in str(err)
        return
    for series in ds.data:
        assert series.times.min() >= 0 and series.times.max() <= 48
        assert np.isfinite(series.values[~np.isnan(series.values)]).all()


@pytest.mark.parametrize("value", ["abc", "inf", "-inf"])
def test_a_value_that_is_not_a_finite_number_is_named(tmp_path, value):
    write_set(
        tmp_path,
        [
            ("set-a/1.txt", record(1, "00:30,HR,70")),
            ("set-a/2.txt", record(2, f"00:10,HR,{value}")),
        ],
    )
    with pytest.raises(ValueError, match=f"set-a/2.txt has the value {value} for HR, not a finite"):
        load_physionet2012(tmp_path)
