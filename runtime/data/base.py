"""Records of data sources: named loaders returning train/test arrays keyed by input name,
with the range of every numeric keyword and the size of the arrays a call would build (both
checked when the run configuration is read, before anything is generated)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ddm.library.op import Arg
from ddm.runtime.ranges import Range


@dataclass(frozen=True)
class Dataset:
    train: Mapping[str, np.ndarray]
    test: Mapping[str, np.ndarray]
    info: Mapping[str, Any] = field(default_factory=dict)  # description, baselines, dates …

    def n(self, split: str) -> int:
        arrays = getattr(self, split)
        return len(next(iter(arrays.values()))) if arrays else 0


@dataclass(frozen=True)
class Source:
    name: str
    kwargs: tuple[Arg, ...]
    load: Callable[..., Dataset]
    doc: str
    ranges: Mapping[str, Range] = field(default_factory=dict)  # keyword → its values
    # the bytes of the arrays ``load(**kwargs)`` returns (every keyword given), or None
    nbytes: Callable[..., int] | None = None
    # a file source: keywords beyond ``kwargs`` map the program's inputs to columns or arrays,
    # and ``load`` takes the inputs' declared shapes (``runtime/data/files.py``)
    maps_inputs: bool = False
    # rows(split, start, stop, **kwargs): rows [start, stop) of a split, exactly as ``load``
    # gives them, without building the rest — a source that can, streams (runtime/streaming.py)
    rows: Callable[..., dict] | None = None
    # info(**kwargs): ``load``'s ``Dataset.info`` without building the arrays; with ``rows``, the
    # processes of a run each build their own training rows (runtime/train.py)
    info: Callable[..., dict] | None = None

    def n_rows(self, split: str, spec: Mapping[str, Any]) -> int:
        """The rows of ``split`` a source with ``rows`` builds for the call ``spec``."""
        return int(spec[f"n_{split}"])


def dataset_digest(data: Dataset) -> str:
    """SHA-256 of a dataset's arrays (names, shapes, dtypes, bytes of both splits): what
    identifies arrays given from Python and an experiment's market data on a resume."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        arrays = getattr(data, split)
        for k in sorted(arrays):
            a = np.ascontiguousarray(arrays[k])
            h.update(f"{split}/{k}{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
    return h.hexdigest()
