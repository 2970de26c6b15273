import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from latentode.datasets import load_physionet2012
from latentode.datasets.physionet import PHYSIONET2012_FEATURES

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "physionet2012"

# three stays in the challenge's raw format: a typical one (with a repeated measurement and
# a Weight series), one with unknown descriptors, one with descriptors only
RECORDS = {
    "132539": """Time,Parameter,Value
00:00,RecordID,132539
00:00,Age,54
00:00,Gender,0
00:00,Height,-1
00:00,ICUType,4
00:00,Weight,80
00:07,HR,73
00:07,Temp,35.1
00:07,HR,75
00:37,HR,77
01:00,Weight,79.5
47:59,Urine,900
""",
    "132540": """Time,Parameter,Value
00:00,RecordID,132540
00:00,Age,76
00:00,Gender,1
00:00,Height,175.3
00:00,ICUType,2
00:00,Weight,-1
00:03,pH,7.41
""",
    "140501": """Time,Parameter,Value
00:00,RecordID,140501
00:00,Age,40
00:00,Gender,1
00:00,Height,-1
00:00,ICUType,3
00:00,Weight,-1
""",
}
OUTCOMES = """RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death
132539,6,1,5,-1,0
132540,16,8,8,-1,1
140501,10,3,2,-1,0
"""


@pytest.fixture
def raw(tmp_path):
    with tarfile.open(tmp_path / "set-a.tar.gz", "w:gz") as tar:
        for rid, text in RECORDS.items():
            data = text.encode()
            info = tarfile.TarInfo(f"set-a/{rid}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "Outcomes-a.txt").write_text(OUTCOMES)
    return tmp_path


def load(path, **kwargs):
    with pytest.warns(UserWarning, match="1 stays have descriptors only"):
        return load_physionet2012(path, **kwargs)


def test_raw_files_become_series_static_covariates_and_labels(raw):
    ds = load(raw)
    assert ds.data.ids == [132539, 132540] and ds.excluded == [140501]
    assert ds.data.feature_names == list(PHYSIONET2012_FEATURES)
    first = ds.data[0]
    hr, temp, weight, urine = (
        PHYSIONET2012_FEATURES.index(f) for f in ("HR", "Temp", "Weight", "Urine")
    )
    assert np.allclose(first.times, [7 / 60, 37 / 60, 1.0, 47 + 59 / 60])
    assert first.values[0, hr] == 74.0  # two readings at one time are averaged
    assert first.values[0, temp] == 35.1 and np.isnan(first.values[1, temp])
    assert first.values[2, weight] == 79.5  # the admission weight is a descriptor, not a reading
    assert first.values[3, urine] == 900.0
    assert np.isnan(first.values).sum() == first.values.size - 5
    assert ds.static.loc[132539].tolist()[:2] == [54.0, 0.0]
    assert np.isnan(ds.static.loc[132539, "Height"]) and ds.static.loc[132539, "Weight"] == 80.0
    assert np.isnan(ds.static.loc[132540, "Weight"])  # -1 means unknown
    assert 140501 in ds.static.index
    assert ds.y.tolist() == [0, 1]
    assert ds.outcomes.loc[132540, "SOFA"] == 8


def test_unpacked_folder_and_quantization(raw):
    with tarfile.open(raw / "set-a.tar.gz") as tar:
        tar.extractall(raw / "unpacked", filter="data")
    (raw / "unpacked" / "Outcomes-a.txt").write_text(OUTCOMES)
    packed, unpacked = load(raw), load(raw / "unpacked")
    for a, b in zip(packed.data, unpacked.data, strict=True):
        assert np.array_equal(a.times, b.times)
        assert np.array_equal(a.values, b.values, equal_nan=True)
    coarse = load(raw, quantization=1.0)  # times round to whole hours: 00:07 -> 0, 00:37 -> 1
    assert coarse.data[0].times.tolist() == [0.0, 1.0, 48.0]
    hr, weight = (PHYSIONET2012_FEATURES.index(f) for f in ("HR", "Weight"))
    assert coarse.data[0].values[0, hr] == 74.0
    assert coarse.data[0].values[1, [hr, weight]].tolist() == [77.0, 79.5]


def test_missing_files_and_bad_arguments(tmp_path, raw):
    with pytest.raises(FileNotFoundError, match="set-a.tar.gz not found.*download=True"):
        load_physionet2012(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="set-b.tar.gz has no pinned checksum"):
        load_physionet2012(raw, sets=("b",), download=True)
    with pytest.raises(ValueError, match="sets must be"):
        load_physionet2012(raw, sets=("d",))
    with pytest.raises(ValueError, match="quantization"):
        load_physionet2012(raw, quantization=0)
    (raw / "Outcomes-a.txt").write_text(OUTCOMES.replace("132540,16,8,8,-1,1\n", ""))
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="no outcome for RecordID 132540"),
    ):
        load_physionet2012(raw)


@pytest.mark.skipif(not SHARED.exists(), reason="the PhysioNet 2012 set A files are not present")
def test_the_real_set_a():
    with pytest.warns(UserWarning, match="3 stays have descriptors only"):
        ds = load_physionet2012(SHARED)
    assert len(ds.data) == 3997 and ds.data.n_features == 37
    assert ds.y.sum() == 554 - sum(ds.outcomes.loc[ds.excluded, "In-hospital_death"])
    assert 0 <= ds.data.t_min and ds.data.t_max <= 48.0
    counts = np.array([s.n_obs for s in ds.data])
    assert 40 < np.median(counts) < 100  # about one observation time an hour or more
    assert ds.static["Age"].between(15, 90).all()
