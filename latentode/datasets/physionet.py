"""PhysioNet/Computing in Cardiology Challenge 2012: ICU stays, 48 hours of irregular records.

Source: https://physionet.org/content/challenge-2012/1.0.0/ (sets A, B and C of 4000 stays
each, with outcome files for all three since the challenge ended).
License: Open Data Commons Attribution License v1.0 (ODC-By).
Cite: I. Silva, G. Moody, D. J. Scott, L. A. Celi, R. G. Mark. Predicting in-hospital mortality
of ICU patients: the PhysioNet/Computing in Cardiology Challenge 2012. Computing in Cardiology
39:245-248, 2012.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from zlib import error as zlib_error

import numpy as np
import pandas as pd

from .._validation import integer, real
from ._containers import IrregularDataset
from ._convert import from_pandas
from ._download import data_home
from ._download import download as fetch

__all__ = ["PHYSIONET2012_FEATURES", "PhysioNet2012", "load_physionet2012"]

BASE_URL = "https://physionet.org/files/challenge-2012/1.0.0/"

#: The 37 time series of the challenge, in the order of the returned features.
PHYSIONET2012_FEATURES = (
    "ALP", "ALT", "AST", "Albumin", "BUN", "Bilirubin", "Cholesterol", "Creatinine",
    "DiasABP", "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "MAP",
    "MechVent", "Mg", "NIDiasABP", "NIMAP", "NISysABP", "Na", "PaCO2", "PaO2", "Platelets",
    "RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT", "Urine", "WBC", "Weight",
    "pH",
)  # fmt: skip

#: General descriptors recorded once at admission (time 00:00); -1 marks "unknown".
DESCRIPTORS = ("Age", "Gender", "Height", "ICUType", "Weight")

#: Default limits on what is read: record files are under 30 KB, sets hold 4000 of them.
MAX_RECORD_BYTES = 1 << 20
MAX_RECORDS = 100_000
#: Records cover the first 48 hours of a stay.
MAX_HOURS = 48.0

# SHA-256 of the files this loader was developed against (set A and its outcomes).
SHA256 = {
    "set-a.tar.gz": "d5678acf9945b3ff4554d3e3aa0c3fa8d0de20c7541fc0ca5ed64a1b0a9861ed",
    "Outcomes-a.txt": "2613ea60ccda29f87571a7d6b09ad130858a8ccd66325bd073365925026883c2",
}


@dataclass
class PhysioNet2012:
    """The challenge data as irregular series with static covariates and outcomes.

    Attributes
    ----------
    data : IrregularDataset
        One series per ICU stay (id = RecordID), times in hours since admission, the 37
        features of :data:`PHYSIONET2012_FEATURES` (NaN = not measured). Values measured more
        than once at the same (quantised) time are averaged.
    static : DataFrame
        Indexed by RecordID, columns Age, Gender, Height, ICUType, Weight (at admission), NaN
        where the file says -1.
    outcomes : DataFrame
        Indexed by RecordID: SAPS-I, SOFA, Length_of_stay, Survival, In-hospital_death.
    y : ndarray of shape (series,)
        In-hospital death (0 or 1) of each series of ``data``, in its order.
    excluded : list of int
        Stays whose files hold descriptors only (no time series); not in ``data``.
    """

    data: IrregularDataset
    static: pd.DataFrame
    outcomes: pd.DataFrame
    y: np.ndarray
    excluded: list = field(default_factory=list)


def load_physionet2012(
    path=None,
    *,
    sets=("a",),
    download: bool = False,
    quantization: float | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
    max_records: int = MAX_RECORDS,
) -> PhysioNet2012:
    """Load the PhysioNet 2012 challenge records in their raw format.

    Parameters
    ----------
    path : str or path-like, optional
        Folder holding, for each set ``s``, either ``set-s.tar.gz`` (read directly, nothing is
        extracted) or the unpacked folder ``set-s/`` of ``<RecordID>.txt`` files, and
        ``Outcomes-s.txt``. Default ``<data_home()>/physionet2012``.
    sets : sequence of {"a", "b", "c"}, default ("a",)
    download : bool, default False
        Fetch missing files from PhysioNet (checksummed). Without it, or without network, a
        missing file raises ``FileNotFoundError`` saying where to put it.
    quantization : float, optional
        Round observation times to multiples of this many hours (e.g. ``0.1`` for six
        minutes); values that then share a time are averaged per feature. Default: the files'
        one-minute resolution.
    max_record_bytes : int, default 1 MiB
        Largest record file read (the published ones are under 30 KB); a larger one is refused
        before it is read.
    max_records : int, default 100000
        Most record files read per set (the published sets hold 4000 each).

    Returns
    -------
    PhysioNet2012

    Raises
    ------
    FileNotFoundError
        A file is missing (the message says where to put it).
    ValueError
        A file is not in the published format: not a readable archive, a record over the
        limits, a RecordID twice, times outside 00:00-48:00 (naming the file and line).

    Examples
    --------
    With ``set-a.tar.gz`` and ``Outcomes-a.txt`` in ``data/physionet2012``::

        ds = load_physionet2012("data/physionet2012")
        ds.data.n_features  # 37
        ds.y.mean()  # 0.1386, in-hospital mortality of the 3997 stays with time series
    """
    real("quantization", low=0, low_open=True, none=True, hint="(in hours)").check(quantization)
    integer("max_record_bytes", low=1).check(max_record_bytes)
    integer("max_records", low=1).check(max_records)
    sets = [sets] if isinstance(sets, str) else list(sets)
    unknown = [s for s in sets if s not in ("a", "b", "c")]
    if unknown or not sets:
        raise ValueError(f"sets must be a non-empty selection of 'a', 'b', 'c'; got {sets!r}.")
    root = Path(path) if path is not None else data_home() / "physionet2012"
    records, outcomes, members = [], [], []
    for s in sets:
        source = _locate(root, f"set-{s}", download, archive=True)
        frame, found = _read_records(source, max_record_bytes, max_records)
        records.append(frame)
        members.append(found)
        outcomes.append(_read_outcomes(_locate(root, f"Outcomes-{s}.txt", download)))
    long = pd.concat(records, ignore_index=True)
    _refuse_repeats(members)
    outcomes = pd.concat(outcomes).sort_index()
    return _assemble(long, outcomes, quantization)


def _locate(root: Path, name: str, download: bool, *, archive: bool = False) -> Path:
    candidates = [root / f"{name}.tar.gz", root / name] if archive else [root / name]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    remote = candidates[0].name
    if download:
        if remote not in SHA256:
            raise FileNotFoundError(
                f"{remote} has no pinned checksum in this version of latentode, so it is not "
                f"downloaded automatically; fetch it from {BASE_URL}{remote} and place it in "
                f"{root}."
            )
        return fetch(BASE_URL + remote, root / remote, sha256=SHA256[remote])
    raise FileNotFoundError(
        f"PhysioNet 2012: {remote} not found in {root}. Pass download=True, or fetch it from "
        f"{BASE_URL}{remote} and place it (or its unpacked folder) there."
    )


def _read_records(source: Path, max_bytes: int, max_records: int) -> tuple[pd.DataFrame, dict]:
    """All ``Time,Parameter,Value`` rows of one set, with the RecordID from the file name, and
    which member or file each RecordID came from."""
    texts = []

    def admit(label: str, size: int) -> None:
        if size > max_bytes:
            raise ValueError(
                f"{source}: {label} is {size} bytes, more than max_record_bytes={max_bytes}; "
                "it is not a PhysioNet 2012 record (raise max_record_bytes if you trust it)."
            )
        if len(texts) >= max_records:
            raise ValueError(
                f"{source} holds more than max_records={max_records} record files; raise "
                "max_records if you trust it."
            )

    if source.is_dir():
        for file in sorted(source.glob("*.txt")):
            admit(file.name, file.stat().st_size)
            texts.append((file.stem, file.name, file.read_bytes()[: max_bytes + 1]))
    else:
        try:
            with tarfile.open(source) as tar:
                for member in tar:
                    name = PurePosixPath(member.name)
                    if member.isfile() and name.suffix == ".txt":
                        admit(member.name, member.size)
                        data = tar.extractfile(member).read(max_bytes + 1)
                        texts.append((name.stem, member.name, data))
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib_error) as err:
            raise ValueError(
                f"{source} is not a readable tar.gz archive of PhysioNet records ({err}); "
                "fetch it again, or pass download=True."
            ) from None
    if not texts:
        raise ValueError(f"{source} holds no <RecordID>.txt record files.")
    lines, members = [], {}
    for stem, label, raw in texts:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise ValueError(f"{source}: {label} is not text.") from None
        head, _, body = text.partition("\n")
        if head.strip() != "Time,Parameter,Value":
            raise ValueError(
                f"{source}: {label} does not start with the header Time,Parameter,Value."
            )
        if not stem.isdigit():
            raise ValueError(f"{source}: {label} is not named <RecordID>.txt.")
        record = int(stem)
        if record in members:
            raise ValueError(
                f"{source}: RecordID {record} appears twice ({members[record]} and {label}); "
                "each stay must be one file, so nothing was merged."
            )
        members[record] = label
        body = body.replace("\r", "").strip()
        if body:  # "HH:MM" becomes two columns; prefix every line with the RecordID
            lines.append(f"{stem}," + body.replace(":", ",").replace("\n", f"\n{stem},"))
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(lines)),
            names=["RecordID", "HH", "MM", "Parameter", "Value"],
            dtype={"RecordID": np.int64, "HH": np.int64, "MM": np.int64, "Parameter": str},
        )
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(
            f"{source}: a record line is not HH:MM,Parameter,Value ({str(err).splitlines()[0]})."
        ) from None
    values = pd.to_numeric(frame["Value"], errors="coerce")
    wrong = values.isna() & frame["Value"].notna() | np.isinf(values)
    if wrong.any():
        row = frame[wrong].iloc[0]
        raise ValueError(
            f"{source}: {members[int(row.RecordID)]} has the value {row.Value} for "
            f"{row.Parameter}, not a finite number ({int(wrong.sum())} such lines); fix or "
            "remove the record."
        )
    frame["Value"] = values
    bad = (frame["HH"] < 0) | (frame["MM"] < 0) | (frame["MM"] > 59)
    hours = frame["HH"] + frame["MM"] / 60.0
    bad |= hours > MAX_HOURS
    if bad.any():
        row = frame[bad].iloc[0]
        raise ValueError(
            f"{source}: {members[int(row.RecordID)]} has the time {row.HH}:{row.MM:02d}, outside "
            f"00:00-{MAX_HOURS:g}:00 ({int(bad.sum())} such lines); fix or remove the record."
        )
    return frame.drop(columns=["HH", "MM"]).assign(hours=hours), members


def _refuse_repeats(member_maps: list) -> None:
    seen = {}
    for members in member_maps:
        for record, label in members.items():
            if record in seen:
                raise ValueError(
                    f"PhysioNet 2012: RecordID {record} is in two sets ({seen[record]} and "
                    f"{label}); load each set once."
                )
            seen[record] = label


def _read_outcomes(source: Path) -> pd.DataFrame:
    frame = pd.read_csv(source)
    expected = {"RecordID", "In-hospital_death"}
    if not expected <= set(frame.columns):
        raise ValueError(f"{source} lacks the columns {sorted(expected - set(frame.columns))}.")
    return frame.set_index("RecordID")


def _assemble(long: pd.DataFrame, outcomes: pd.DataFrame, quantization) -> PhysioNet2012:
    long = long.dropna(subset=["Parameter", "Value"])
    at_admission = long["hours"] == 0
    # descriptors: the 00:00 lines; Weight's first 00:00 line only, later ones are a series
    weight = at_admission & (long["Parameter"] == "Weight")
    first_weight = weight & (long[weight].groupby("RecordID").cumcount() == 0).reindex(
        long.index, fill_value=False
    )
    is_static = (at_admission & long["Parameter"].isin(DESCRIPTORS[:-1])) | first_weight
    static = (
        long[is_static]
        .pivot_table(index="RecordID", columns="Parameter", values="Value", aggfunc="first")
        .reindex(columns=list(DESCRIPTORS))
        .replace(-1.0, np.nan)
    )
    series = long[~is_static & long["Parameter"].isin(PHYSIONET2012_FEATURES)]
    if quantization is not None:
        series = series.assign(hours=np.round(series["hours"] / quantization) * quantization)
    wide = series.pivot_table(
        index=["RecordID", "hours"], columns="Parameter", values="Value", aggfunc="mean"
    ).reindex(columns=list(PHYSIONET2012_FEATURES))
    wide.columns.name = None
    all_ids = sorted(set(long["RecordID"]))
    with_series = set(wide.index.get_level_values(0))
    excluded = [r for r in all_ids if r not in with_series]
    if excluded:
        warnings.warn(
            f"PhysioNet 2012: {len(excluded)} stays have descriptors only and no time series; "
            "they are left out of .data (listed in .excluded).",
            stacklevel=3,
        )
    data = from_pandas(wide.reset_index(), id_col="RecordID", time_col="hours")
    missing = sorted(set(data.ids) - set(outcomes.index))
    if missing:
        raise ValueError(
            f"PhysioNet 2012: no outcome for RecordID {missing[0]} (and {len(missing) - 1} "
            "more); pass the Outcomes file of every set you load."
        )
    y = outcomes.loc[data.ids, "In-hospital_death"].to_numpy().astype(int)
    static = static.reindex(all_ids)
    static.index.name = "RecordID"
    static.columns.name = None
    return PhysioNet2012(data=data, static=static, outcomes=outcomes, y=y, excluded=excluded)
