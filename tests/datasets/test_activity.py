import numpy as np
import pytest

from latentode.datasets import load_person_activity
from latentode.datasets.activity import FEATURES

# rows in the upstream format: sequence, tag, .NET ticks, date, x, y, z, activity
ROWS = """A01,010-000-024-033,633790226051280329,27.05.2009 14:03:25:127,4.06,1.89,0.50,walking
A01,020-000-033-111,633790226051820913,27.05.2009 14:03:25:183,4.29,1.78,1.34,walking
A01,020-000-032-221,633790226052091205,27.05.2009 14:03:25:210,4.36,1.77,1.04,walking
A01,010-000-030-096,633790226052361498,27.05.2009 14:03:25:237,4.18,1.91,0.35,walking
A01,010-000-024-033,633790226051280329,27.05.2009 14:03:25:127,4.10,1.91,0.52,walking
A01,020-000-033-111,633790226062361498,27.05.2009 14:03:26:237,4.30,1.70,1.30,sitting
B02,010-000-024-033,633793123456780000,30.05.2009 10:29:05:678,1.00,2.00,0.10,lying
B02,020-000-032-221,633793123466780000,30.05.2009 10:29:06:678,1.10,2.10,0.90,lying
"""


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "ConfLongDemo_JSI.txt"
    path.write_text(ROWS)
    return tmp_path


def test_recordings_become_series_with_per_time_labels(raw):
    ds = load_person_activity(raw)
    assert ds.data.ids == ["A01", "B02"] and ds.data.feature_names == FEATURES
    a01 = ds.data[0]
    assert np.allclose(a01.times, [0.0, 0.0540584, 0.0810876, 0.1081169, 1.1081169])
    ankle_x = FEATURES.index("ankle_left_x")
    assert a01.values[0, ankle_x] == pytest.approx(4.08)  # two readings at one time: averaged
    assert np.isnan(a01.values[0, FEATURES.index("chest_x")])  # another tag, another time
    assert ds.labels[0].tolist() == ["walking"] * 4 + ["sitting"]
    assert ds.labels[1].tolist() == ["lying", "lying"]
    assert ds.activities.tolist() == ["lying", "sitting", "walking"]


def test_quantization_merges_times_and_takes_the_commonest_label(raw):
    ds = load_person_activity(raw / "ConfLongDemo_JSI.txt", quantization=1.0)
    assert ds.data[0].times.tolist() == [0.0, 1.0]
    assert ds.labels[0].tolist() == ["walking", "sitting"]
    assert np.isfinite(ds.data[0].values[0]).all()  # all four tags read within the first second


def test_missing_file_and_unknown_tags(tmp_path, raw):
    with pytest.raises(FileNotFoundError, match="download https://archive.ics.uci.edu"):
        load_person_activity(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no checksum is pinned"):
        load_person_activity(tmp_path / "nowhere", download=True)
    bad = raw / "bad.txt"
    bad.write_text(ROWS.replace("020-000-032-221", "999-999-999-999"))
    with pytest.raises(ValueError, match="unknown tag ids"):
        load_person_activity(bad)
