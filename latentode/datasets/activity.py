"""Localization Data for Person Activity (UCI): 3-D positions of four body tags, per-time labels.

Source: https://archive.ics.uci.edu/dataset/196/localization+data+for+person+activity
(file ``ConfLongDemo_JSI.txt``: five people, five recordings each, tags on both ankles, the
chest and the belt, each row one tag's position with the activity at that moment).
License: Creative Commons Attribution 4.0 International (CC BY 4.0), as distributed by UCI.
Cite: B. Kaluža, V. Mirchevska, E. Dovgan, M. Luštrek, M. Gams. An agent-based approach to
care in independent living. International Joint Conference on Ambient Intelligence, 2010.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import real
from ._containers import IrregularDataset
from ._convert import from_pandas
from ._download import data_home

__all__ = ["PersonActivity", "load_person_activity"]

URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00196/ConfLongDemo_JSI.txt"
FILE = "ConfLongDemo_JSI.txt"

#: The four tags, in the order of the features (x, y, z of each).
TAGS = {
    "010-000-024-033": "ankle_left",
    "010-000-030-096": "ankle_right",
    "020-000-033-111": "chest",
    "020-000-032-221": "belt",
}
FEATURES = [f"{tag}_{axis}" for tag in TAGS.values() for axis in "xyz"]
_COLUMNS = ["sequence", "tag", "ticks", "date", "x", "y", "z", "activity"]
_TICKS_PER_SECOND = 10_000_000  # the timestamps are .NET ticks of 100 ns


@dataclass
class PersonActivity:
    """The recordings as irregular series with a label at every time point.

    Attributes
    ----------
    data : IrregularDataset
        One series per recording (id ``A01`` … ``E05``), times in seconds from the recording's
        first reading, 12 features (x, y, z of each tag; NaN where that tag was not read at
        that time). Readings of one tag at one time are averaged.
    labels : list of ndarray of str
        For each series, the activity at each of its times (shape ``(n_obs_i,)``).
    activities : ndarray of str
        The activity names, sorted.
    """

    data: IrregularDataset
    labels: list
    activities: np.ndarray


def load_person_activity(
    path=None, *, download: bool = False, quantization: float | None = None
) -> PersonActivity:
    """Load ``ConfLongDemo_JSI.txt`` in its original format.

    Parameters
    ----------
    path : str or path-like, optional
        The file, or a folder holding it. Default ``<data_home()>/person_activity``.
    download : bool, default False
        This version pins no checksum for the file, so it is not downloaded automatically:
        ``download=True`` says where to fetch it from and where to put it.
    quantization : float, optional
        Round times to multiples of this many seconds; readings that then share a time are
        averaged per feature and the label of the time is its most frequent one.

    Returns
    -------
    PersonActivity
    """
    real("quantization", low=0, low_open=True, none=True, hint="(in seconds)").check(quantization)
    file = Path(path) if path is not None else data_home() / "person_activity"
    if file.is_dir():
        file = file / FILE
    if not file.exists():
        action = "no checksum is pinned for it, so it is not fetched automatically; "
        action = action if download else ""
        raise FileNotFoundError(
            f"person activity: {file} not found; {action}download {URL} and place it there."
        )
    frame = pd.read_csv(file, header=None, names=_COLUMNS, dtype={"ticks": np.int64})
    unknown = sorted(set(frame["tag"]) - set(TAGS))
    if unknown:
        raise ValueError(f"{file}: unknown tag ids {unknown[:3]}; expected {sorted(TAGS)}.")
    first = frame.groupby("sequence")["ticks"].transform("min")
    frame["seconds"] = (frame["ticks"] - first) / _TICKS_PER_SECOND
    if quantization is not None:
        frame["seconds"] = np.round(frame["seconds"] / quantization) * quantization
    frame["tag"] = frame["tag"].map(TAGS)
    wide = frame.pivot_table(
        index=["sequence", "seconds"], columns="tag", values=["x", "y", "z"], aggfunc="mean"
    )
    wide.columns = [f"{tag}_{axis}" for axis, tag in wide.columns]
    wide = wide.reindex(columns=FEATURES).reset_index()
    data = from_pandas(wide, id_col="sequence", time_col="seconds", value_cols=FEATURES)
    # the label of a time: its most frequent activity (ties: the first in name order)
    counts = frame.groupby(["sequence", "seconds", "activity"]).size().rename("n").reset_index()
    counts = counts.sort_values(["sequence", "seconds", "n"], ascending=[True, True, False])
    label_at = counts.drop_duplicates(["sequence", "seconds"]).set_index(["sequence", "seconds"])[
        "activity"
    ]
    labels = [label_at.loc[s.id].reindex(s.times).to_numpy(dtype=str) for s in data]
    return PersonActivity(data=data, labels=labels, activities=np.unique(frame["activity"]))
