"""Irregular series containers, validation, conversion and data sets."""

from ._batch import Batch, collate
from ._containers import IrregularDataset, IrregularSeries
from ._convert import as_dataset, from_arrays, from_pandas, from_xarray
from ._download import (
    DownloadError,
    UnsafeArchiveError,
    data_home,
    download,
    safe_extract,
    sha256_file,
)
from .activity import PersonActivity, load_person_activity
from .hopper import HOPPER_FEATURES, HopperData, make_hopper
from .parquet import ParquetSeries, StreamPlan, write_parquet
from .periodic import PeriodicData, make_periodic
from .physionet import PHYSIONET2012_FEATURES, PhysioNet2012, load_physionet2012
from .spirals import SpiralData, make_spirals

__all__ = [
    "Batch",
    "DownloadError",
    "HOPPER_FEATURES",
    "HopperData",
    "UnsafeArchiveError",
    "IrregularDataset",
    "IrregularSeries",
    "PHYSIONET2012_FEATURES",
    "ParquetSeries",
    "PeriodicData",
    "PersonActivity",
    "PhysioNet2012",
    "SpiralData",
    "StreamPlan",
    "as_dataset",
    "collate",
    "data_home",
    "download",
    "from_arrays",
    "from_pandas",
    "from_xarray",
    "load_person_activity",
    "make_hopper",
    "load_physionet2012",
    "make_periodic",
    "make_spirals",
    "safe_extract",
    "sha256_file",
    "write_parquet",
]
