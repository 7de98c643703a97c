"""Records of data sources: named loaders returning train/test arrays keyed by input name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ddm.library.op import Arg


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
