"""Training and evaluation from Python: ``ddm.train`` and ``ddm.evaluate``.

``ddm.train(program, data, **settings)`` runs the same host loop as ``ddmc compile --run``
(:mod:`ddm.runtime.train`: the step factory, checkpoints, diagnostics, rule logs, compliance),
so the same program, data and settings give the same bits either way. ``data`` is one of:

- ``None``: the program's own ``run { data = … }``;
- a path ending in ``.csv``, ``.npz`` or ``.parquet``: that file with its default mapping (the
  last fifth of the samples for the test set);
- a source call as a dict, ``{"name": "csv", "path": "…", "X": "x*", "test_from": "…"}``;
- arrays: ``{"train": {input: array}, "test": {input: array}}`` or a
  :class:`~ddm.runtime.data.base.Dataset`.

``settings`` are the run settings of ``docs/language.md`` (``steps=``, ``batch=``,
``optimizer={"name": "adam", "lr": 3e-4}`` or ``optimizer="sgd"``, ``seed=`` …), checked as the
CLI checks them. The result is a :class:`~ddm.runtime.train.RunResult`: ``params``,
``history`` (the lines of ``log.jsonl``), ``metrics``, ``out_dir``.

``ddm.evaluate(program, params, data)`` scores params on data: the loss and every metric, per
split of a source, or on a mapping of arrays (one batch).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ddm.dsl.diagnostics import DdmError
from ddm.runtime.data.base import Dataset, Source, dataset_digest
from ddm.runtime.errors import ConfigDiagnostic

__all__ = ["train", "evaluate", "as_program", "source_of"]

FILE_KINDS = {".csv": "csv", ".npz": "npz", ".parquet": "parquet", ".pq": "parquet"}
ARRAYS = "arrays"  # the data setting's name for arrays given from Python


def as_program(program, x64: bool = False):
    """A :class:`~ddm.runtime.program.Program`, or the path of a ``.ddm`` file compiled."""
    from ddm.runtime.program import Program, load

    if isinstance(program, Program):
        return program
    if isinstance(program, (str, os.PathLike)):
        return load(os.fspath(program), x64=x64)
    raise TypeError(f"expected a Program or a .ddm path, got {type(program).__name__}")


def source_of(path: str, **mapping) -> dict[str, Any]:
    """The source call that reads ``path`` by its extension: ``{"name": "csv", "path": …}``."""
    kind = FILE_KINDS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ConfigDiagnostic(
            None,
            f"{path}: ddm reads .csv, .npz and .parquet files; this one's kind is unknown",
            hint='name the source: data={"name": "csv", "path": …}',
        )
    return {"name": kind, "path": os.path.abspath(path), **mapping}


def _config(prog, data, settings: Mapping[str, Any]):
    """The run configuration: the program's run section, then ``settings``, then ``data``
    when it names a source (arrays are handed to the loop apart)."""
    from ddm.runtime.config import RunConfig
    from ddm.runtime.data import SOURCES

    cfg = RunConfig.defaults()
    cfg.apply_run_section(prog.graph.run, prog.sources.texts.get(prog.file, ""))
    for key, value in settings.items():
        cfg.set_value(key, _plain(value))
    arrays = None
    if isinstance(data, (str, os.PathLike)):
        data = source_of(os.fspath(data))
    if isinstance(data, Mapping) and "name" in data:
        cfg.set_value("data", dict(data))
    elif data is not None:
        arrays = _dataset(data)
    sources = dict(SOURCES)
    if arrays is not None:  # the loop checks the arrays against the inputs
        sources[ARRAYS] = Source(ARRAYS, (), lambda: arrays, "arrays given from Python")
        cfg.values["data"] = {"name": ARRAYS}
    cfg.validate(sources, tuple(n for n, _ in prog.graph.losses))
    if arrays is not None:  # what identifies them in metrics.json and a resume's fingerprint
        cfg.values["data"] = {"name": ARRAYS, "sha256": dataset_digest(arrays)}
    return cfg, arrays


def _plain(value):
    """A Python setting as the config holds it: tuples as lists."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Mapping) and "train" in data:
        extra = set(data) - {"train", "test"}
        if extra:
            raise ConfigDiagnostic(
                None, f"data has keys {sorted(extra)}; give {{'train': …, 'test': …}}"
            )
        train = {k: np.asarray(v) for k, v in data["train"].items()}
        test = {k: np.asarray(v) for k, v in (data.get("test") or data["train"]).items()}
        return Dataset(train, test, {"description": "arrays given from Python"})
    raise ConfigDiagnostic(
        None,
        "data must be a source (a .csv/.npz/.parquet path or {'name': 'csv', 'path': …}), "
        f"{{'train': {{input: array}}, 'test': …}} or a Dataset; got {type(data).__name__}",
    )


def train(
    program,
    data=None,
    *,
    out: str | None = None,
    resume: bool = False,
    console=None,
    x64: bool = False,
    plots: bool = True,
    **settings,
):
    """Train ``program`` (a Program or a ``.ddm`` path) on ``data`` (module docstring) with
    ``settings``; write the run's artefacts to ``out`` (none when None). Returns the
    :class:`~ddm.runtime.train.RunResult` (``params``, ``history``, ``metrics``, ``out_dir``).

    ``console``: a ``rich.console.Console`` for progress and the report (silent when None);
    ``plots``: draw learning curves, gradient norms and the P&L distribution into ``out``."""
    from ddm.runtime import train as training

    prog = as_program(program, x64)
    cfg, arrays = _config(prog, data, settings)
    if console is None:
        from rich.console import Console

        console = Console(quiet=True)
    return training.run(prog, cfg, out, console, resume=resume, data=arrays, draw=plots)


def evaluate(program, params, data=None, **settings) -> dict[str, Any]:
    """The loss and every metric of ``program`` at ``params`` on ``data``: a mapping of input
    arrays (one batch) → ``{"loss": …, metric: …}``; a source, a Dataset or None (the program's
    source) → ``{"train": {…}, "test": {…}}``. ``params`` may be a params tree, a
    ``params.npz`` or a run folder (checked against the program)."""
    from ddm.runtime import params_io
    from ddm.runtime import train as training

    prog = as_program(program)
    if isinstance(params, (str, os.PathLike)):
        params = params_io.load_params(os.fspath(params), prog)
    if isinstance(data, Mapping) and "name" not in data and "train" not in data:
        return _score(prog, params, {k: np.asarray(v) for k, v in data.items()})
    cfg, arrays = _config(prog, data, settings)
    dataset = training.load_data(prog, cfg) if arrays is None else arrays
    return {
        split: _score(prog, params, dict(getattr(dataset, split)))
        for split in ("train", "test")
        if dataset.n(split)
    }


def evaluate_config(
    prog, params, cfg, chunk: int | None = None, splits=("train", "test")
) -> dict[str, dict[str, float]]:
    """Scores on ``splits`` of a validated run configuration's data source. ``chunk``: the
    samples are consumed that many at a time and the metrics accumulated (runtime/streaming.py)
    — generated that many at a time too, when the source can (``path_ids``), so memory does
    not grow with the number of samples."""
    from ddm.runtime import train as training

    if chunk is None:
        dataset = training.load_data(prog, cfg)
        return {split: _score(prog, params, dict(getattr(dataset, split))) for split in splits}
    from ddm.runtime import streaming
    from ddm.runtime.data import SOURCES

    spec = dict(cfg.values["data"])
    source = SOURCES[spec.pop("name")]
    names = _needed_inputs(prog)
    dataset = None if source.rows is not None else training.load_data(prog, cfg)
    out = {}
    for split in splits:
        if dataset is not None:
            n = dataset.n(split)
            chunks = streaming.chunked(
                {k: v for k, v in getattr(dataset, split).items() if k in names}, chunk
            )
        else:
            rows = source.rows
            assert rows is not None
            n = source.n_rows(split, spec)
            chunks = (
                {k: v for k, v in rows(split, a, a + chunk, **spec).items() if k in names}
                for a in range(0, n, chunk)
            )
        try:
            out[split] = streaming.evaluate(prog.product, params, chunks, n)
        except DdmError as err:
            raise prog.product.locate(err) from None
    return out


def evaluate_file(prog, params, path: str, cfg=None, chunk: int | None = None) -> dict[str, float]:
    """Scores on every sample of a data file (nothing held out), its kind by extension. Where
    the program's own source (``cfg``'s) reads a file of that kind, its mapping of inputs and
    its date column apply to this one too; otherwise the default mapping."""
    from ddm.runtime import train as training
    from ddm.runtime.config import RunConfig
    from ddm.runtime.data import SOURCES

    call = source_of(path)
    own = (cfg.values.get("data") if cfg is not None else None) or {}
    if own.get("name") == call["name"]:
        kept = {k: v for k, v in own.items() if k not in ("path", "test_from", "test_fraction")}
        call = {**kept, "path": call["path"]}
    fresh = RunConfig.defaults()
    fresh.set_value("data", call)
    fresh.validate(SOURCES, tuple(n for n, _ in prog.graph.losses))
    fresh.values["data"]["test_fraction"] = 0.0  # below the setting's range: only from here
    dataset = training.load_data(prog, fresh)
    if chunk is None:
        return _score(prog, params, dict(dataset.train))
    from ddm.runtime import streaming

    names = _needed_inputs(prog)
    arrays = {k: v for k, v in dataset.train.items() if k in names}
    try:
        return streaming.evaluate(
            prog.product, params, streaming.chunked(arrays, chunk), dataset.n("train")
        )
    except DdmError as err:
        raise prog.product.locate(err) from None


def _needed_inputs(prog) -> set[str]:
    """The inputs the loss and the metrics read."""
    g = prog.graph
    roots = [g.loss] + [i for _, i in g.metrics]
    return {s.name for s in g.inputs_needed([r for r in roots if r is not None])}


def _score(prog, params, arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    g = prog.graph
    names = _needed_inputs(prog)
    batch = {k: v for k, v in arrays.items() if k in names}
    out: dict[str, float] = {}
    if g.loss is not None:
        out["loss"] = float(prog.loss(params, batch))
    out.update({k: float(np.asarray(v)) for k, v in prog.metrics(params, batch).items()})
    return out
