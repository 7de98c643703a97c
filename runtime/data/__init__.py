"""Data a program's ``run`` trains on: named sources that return train/test arrays per input.

A source is a record (name, keyword arguments, loader, doc), like the library's ops; ``SOURCES``
is built once. Arrays are NumPy, one row per sample; names match the program's inputs.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from ddm.runtime.data import credit, files, path_ids, regimes, simulated, sp500
from ddm.runtime.data.base import Dataset, Source

SOURCES: Mapping[str, Source] = MappingProxyType(
    {
        s.name: s
        for s in (
            credit.SOURCE,
            sp500.SOURCE,
            simulated.GBM,
            simulated.HESTON,
            path_ids.SOURCE,
            regimes.SOURCE,
            files.CSV,
            files.NPZ,
            files.PARQUET,
        )
    }
)

__all__ = ["SOURCES", "Dataset", "Source"]
