"""Irregular series containers, validation, conversion and data sets."""

from ._containers import (
    Batch,
    IrregularDataset,
    IrregularSeries,
    as_dataset,
    collate,
    from_arrays,
    from_pandas,
)
from .spirals import SpiralData, make_spirals

__all__ = [
    "Batch",
    "IrregularDataset",
    "IrregularSeries",
    "SpiralData",
    "as_dataset",
    "collate",
    "from_arrays",
    "from_pandas",
    "make_spirals",
]
