"""Your own data: ``csv(path=…)``, ``npz(path=…)`` and ``parquet(path=…)`` as run sources.

A file source maps columns (CSV, Parquet) or arrays (NPZ) to the program's inputs and splits the
samples into train and test, checked against the inputs' declared shapes and dtypes before
anything is compiled. Every problem with the file is a :class:`DataDiagnostic` naming the file,
the column or array and the line or row.

**Columns → inputs** (CSV, Parquet). One row is one time step, in time order. A keyword that
names an input maps it to columns: a column name (``y = "target"``), a list of names
(``x = ["a", "b"]``) or a prefix ending in ``*`` (``X = "x*"``: every column whose name starts
with ``x``, in file order). An input without a keyword takes the column of its own name or,
failing that, the columns ``NAME0, NAME1, …`` / ``NAME_0, …`` / ``NAME[0], …``. By the input's
declared shape:

- ``f32`` ← one column, at the sample's row;
- ``f32[D]`` ← D columns, at the sample's row (a single named column with a shape ``[W]``
  input is instead the window below);
- ``f32[W, D]`` ← D columns over the **window** of the W rows *before* the sample's row (known
  at the decision), and ``f32[W]`` ← one column over that window.

A program with windowed inputs has one sample per row that has W rows before it; W is the
declared dim, literal or set by ``window = W``.

**Arrays → inputs** (NPZ). Each input reads the array of its name, or the one its keyword names;
the first axis is the sample, the rest must be the input's declared shape (dims bound alike
across inputs).

**Split.** ``test_from = "2021-01-04"`` with ``date = "COLUMN"`` (or the NPZ array of that
name: ISO dates, strictly increasing) puts every sample dated on or after it in the test set;
otherwise the last ``test_fraction`` (default 0.2) of the samples, in time order. Nothing of the
test period's targets enters training: a test sample's window may reach back into the training
period (it is the past), a training sample never sees a test row.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
>>> _ = open(path, "w").write("date,x0,x1,y\\n" + "".join(
...     f"2020-01-{d:02d},{d},{2 * d},{d % 2}\\n" for d in range(1, 11)))
>>> specs = {"x": ((2,), "f32"), "y": ((), "f32")}
>>> ds = load_csv(path, specs, {}, date="date", test_from="2020-01-09")
>>> ds.train["x"].shape, ds.test["y"].tolist(), ds.info["test_dates"]
((8, 2), [1.0, 0.0], ('2020-01-09', '2020-01-10'))
"""

from __future__ import annotations

import csv
import datetime
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping, NoReturn, Sequence

import numpy as np

from ddm.dsl.diagnostics import DataDiagnostic
from ddm.library.op import Arg
from ddm.runtime.data.base import Dataset, Source
from ddm.runtime.ranges import COUNT, Range

__all__ = ["Spec", "load_csv", "load_npz", "load_parquet", "CSV", "NPZ", "PARQUET"]

# (shape with None for a dim the data binds, dtype name of the language: f32, f64, i32, bool)
Spec = tuple[tuple, str]

# the keywords of a file source that are settings, not input mappings
SETTINGS = ("path", "date", "test_from", "test_fraction", "window")
MAX_SHOWN = 8  # column names listed in a message


def _fail(where: str, message: str, hint: str | None = None) -> NoReturn:
    raise DataDiagnostic(None, f"{where}: {message}", hint=hint)


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        _fail(path, "no such file", hint="paths in a program's run section are relative to it")
    if os.path.isdir(path):
        _fail(path, "is a directory, not a data file")
    if os.path.getsize(path) == 0:
        _fail(path, "the file is empty")


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:MAX_SHOWN])
    return shown + (f", … ({len(names)} in all)" if len(names) > MAX_SHOWN else "")


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "…")


# ------------------------------------------------------------------------------ tables


@dataclass
class Table:
    """Columns of text (CSV) or arrays (Parquet) with the file line of every row."""

    path: str
    columns: list[str]
    data: dict[str, np.ndarray]
    lines: np.ndarray  # [rows]: where each row sits in the file (1-based; the header is 1)
    line_word: str = "line"  # "line" in a CSV, "row" in a Parquet file

    def at(self, row: int) -> str:
        return (
            f"{self.path}:{int(self.lines[row])}"
            if self.line_word == "line"
            else (f"{self.path} row {int(self.lines[row])}")
        )


def read_csv(path: str) -> Table:
    """The CSV's header and cells, every row checked for its number of fields."""
    _check_path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                _fail(path, "the file is empty")
            header = [h.strip() for h in header]
            if not any(header):
                _fail(f"{path}:1", "the first line must name the columns (a header), got none")
            seen: dict[str, int] = {}
            for j, name in enumerate(header):
                if not name:
                    _fail(f"{path}:1", f"column {j + 1} has no name")
                if name in seen:
                    _fail(
                        f"{path}:1",
                        f"column {name!r} appears twice (columns {seen[name] + 1} and {j + 1})",
                    )
                seen[name] = j
            rows, lines = [], []
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                if len(fields) != len(header):
                    _fail(
                        f"{path}:{reader.line_num}",
                        f"{len(fields)} fields where the header names {len(header)} (a ragged row)",
                    )
                rows.append(fields)
                lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        _fail(path, f"not UTF-8 text (byte {err.start}): is it a CSV file?")
    except csv.Error as err:
        _fail(path, f"not a readable CSV file: {err}")
    if not rows:
        _fail(path, "the header is the only line: no data rows")
    cells = np.array(rows, dtype=object)
    return Table(path, header, {h: cells[:, j] for j, h in enumerate(header)}, np.array(lines))


def read_parquet(path: str) -> Table:
    _check_path(path)
    try:
        import pyarrow.parquet as pq  # ty: optional
    except ImportError:
        _fail(
            path,
            "reading Parquet needs pyarrow, which is not installed",
            hint="pip install 'ddmc[data]' (or: pip install pyarrow)",
        )
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises its own error kinds for a bad file
        _fail(path, f"not a readable Parquet file: {str(err)[:200]}")
    columns = list(table.column_names)
    if table.num_rows == 0:
        _fail(path, "the file holds no rows")
    data = {}
    for name in columns:
        col = table.column(name)
        try:
            data[name] = col.to_numpy(zero_copy_only=False)
        except Exception as err:
            _fail(path, f"column {name!r} ({col.type}) cannot be read as values: {err}")
    return Table(path, columns, data, np.arange(table.num_rows), line_word="row")


# ------------------------------------------------------------------------------ conversion

_DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "bool": np.bool_}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _column(table: Table, name: str, dtype: str, what: str) -> np.ndarray:
    """One column as numbers of ``dtype``, every cell checked (non-numeric, NaN/Inf,
    non-integral for i32, not a truth value for bool) and named by its line."""
    raw = table.data[name]
    out = np.empty(len(raw), _DTYPES[dtype])
    is_text = raw.dtype == object or raw.dtype.kind in "US"
    if not is_text and raw.dtype.kind not in "biuf":
        _fail(table.path, f"column {name!r} holds {raw.dtype} values; input '{what}' needs numbers")
    for i, cell in enumerate(raw):
        if is_text:
            text = "" if cell is None else str(cell).strip()
            if dtype == "bool":
                low = text.lower()
                if low not in _TRUE | _FALSE:
                    _fail(
                        table.at(i),
                        f"column {name!r}: {_short(text)} is not true/false or 1/0 "
                        f"(input '{what}' is bool)",
                    )
                out[i] = low in _TRUE
                continue
            if not text:
                _fail(
                    table.at(i),
                    f"column {name!r} is empty (a missing value)",
                    hint="fill or drop the row: ddm does not impute",
                )
            try:
                value = float(text)
            except ValueError:
                _fail(
                    table.at(i),
                    f"column {name!r}: {_short(text)} is not a number (input '{what}' is {dtype})",
                )
        else:
            value = cell
            if value is None:
                _fail(table.at(i), f"column {name!r} is empty (a missing value)")
            value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            _fail(
                table.at(i),
                f"column {name!r} is {value} (input '{what}' needs finite values)",
                hint="fill or drop the row: ddm does not impute",
            )
        if dtype == "i32":
            if value != int(value) or not -(2**31) <= value < 2**31:
                _fail(
                    table.at(i),
                    f"column {name!r}: {value!r} is not an int32 (input '{what}' is i32)",
                )
        elif dtype == "bool":
            if value not in (0.0, 1.0):
                _fail(
                    table.at(i),
                    f"column {name!r}: {value!r} is not 0 or 1 (input '{what}' is bool)",
                )
        out[i] = value
    return out


def _dates(values: np.ndarray, at) -> np.ndarray:
    """ISO dates, strictly increasing (duplicates and disorder named by their rows)."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, np.datetime64):
            v = str(v.astype("datetime64[D]"))
        text = str(v).strip()
        try:
            out.append(
                datetime.date.fromisoformat(text[:10])
                if len(text) >= 10
                else datetime.date.fromisoformat(text)
            )
        except ValueError:
            _fail(at(i), f"date {_short(text)} is not an ISO date (YYYY-MM-DD)")
    for i in range(1, len(out)):
        if out[i] == out[i - 1]:
            _fail(at(i), f"date {out[i]} repeats the previous row's (dates must be unique)")
        if out[i] < out[i - 1]:
            _fail(
                at(i),
                f"date {out[i]} comes before the previous row's {out[i - 1]} (the rows "
                "must be in time order)",
                hint="sort the file by date",
            )
    return np.array([d.isoformat() for d in out])


# ------------------------------------------------------------------------------ mapping


def _columns_for(table: Table, name: str, mapping) -> tuple[list[str], bool]:
    """The columns input ``name`` reads, and whether one column was named alone (a window
    candidate for a ``[W]`` input)."""
    cols = table.columns
    if mapping is None:
        if name in cols:
            return [name], True
        pat = re.compile(rf"{re.escape(name)}(_?\d+|\[\d+\])")
        found = [c for c in cols if pat.fullmatch(c)]
        if not found:
            _fail(
                table.path,
                f"no column for input '{name}': neither {name!r} nor {name}0, {name}1, …",
                hint=f'map it: {name} = "COLUMN" (or a list, or "PREFIX*"); the columns: '
                + _names(cols),
            )
        return found, False
    if isinstance(mapping, str) and mapping.endswith("*"):
        found = [c for c in cols if c.startswith(mapping[:-1])]
        if not found:
            _fail(
                table.path,
                f"no column starts with {mapping[:-1]!r} (input '{name}')",
                hint="the columns: " + _names(cols),
            )
        return found, False
    names = [mapping] if isinstance(mapping, str) else list(mapping)
    if not names or not all(isinstance(c, str) for c in names):
        _fail(
            table.path,
            f"input '{name}' maps to {_short(repr(mapping))}: give a column name, a "
            'list of names or "PREFIX*"',
        )
    for c in names:
        if c not in cols:
            import difflib

            close = difflib.get_close_matches(c, cols, n=1)
            _fail(
                table.path,
                f"no column {c!r} (input '{name}')",
                hint=f"did you mean {close[0]!r}?" if close else "the columns: " + _names(cols),
            )
    return names, isinstance(mapping, str)


def _bind(dims: dict, dim, size: int, what: str, where: str) -> None:
    if dim is None:
        return
    if isinstance(dim, int):
        if dim != size:
            _fail(where, f"input '{what}' is declared with {dim} there; the data give {size}")
        return
    if dims.setdefault(dim, size) != size:
        _fail(where, f"dim {dim} is {dims[dim]} by an earlier input and {size} by '{what}'")


def load_table(
    table: Table,
    specs: Mapping[str, Spec],
    mapping: Mapping[str, Any],
    dims: Mapping[str, int] | None = None,
    date: str | None = None,
    test_from: str | None = None,
    test_fraction: float = 0.2,
    window: int | None = None,
) -> Dataset:
    """Samples of ``specs`` (input → (shape, dtype); a shape entry is an int, a dim name or
    None) from a table's rows."""
    bound: dict[str, int] = dict(dims or {})
    plans = {}  # input → (columns, windowed)
    win = window
    for name, (shape, _) in specs.items():
        cols, alone = _columns_for(table, name, mapping.get(name))
        if len(shape) == 0:
            if len(cols) != 1:
                _fail(
                    table.path,
                    f"input '{name}' is a scalar; it maps to {len(cols)} columns ({_names(cols)})",
                )
            plans[name] = (cols, False)
        elif len(shape) == 1 and alone and len(cols) == 1 and _windowed(shape[0], bound, win):
            win = _window(win, shape[0], bound, name, table.path)
            plans[name] = (cols, True)
        elif len(shape) == 1:
            _bind(bound, shape[0], len(cols), name, table.path)
            plans[name] = (cols, False)
        elif len(shape) == 2:
            _bind(bound, shape[1], len(cols), name, table.path)
            win = _window(win, shape[0], bound, name, table.path)
            plans[name] = (cols, True)
        else:
            _fail(
                table.path,
                f"input '{name}' has {len(shape)} axes; a table's columns give at "
                "most [window, columns]",
                hint="save such arrays with numpy.savez and use npz()",
            )
    rows = len(table.lines)
    first = 0
    if win is not None and any(w for _, w in plans.values()):
        first = win
        if rows <= first:
            _fail(table.path, f"{rows} rows leave no sample after a window of {win}")
    values = {}
    for name, (cols, windowed) in plans.items():
        shape, dtype = specs[name]
        m = np.stack([_column(table, c, dtype, name) for c in cols], axis=1)  # [rows, k]
        if windowed:
            assert win is not None
            idx = np.arange(first, rows)[:, None] + np.arange(-win, 0)[None, :]
            a = m[idx]  # [samples, W, k]
            values[name] = a[:, :, 0] if len(shape) == 1 else a
        else:
            a = m[first:]
            values[name] = a[:, 0] if len(shape) == 0 else a
    n = rows - first
    sample_dates = None
    if date is not None:
        if date not in table.columns:
            _fail(
                table.path, f"no date column {date!r}", hint="the columns: " + _names(table.columns)
            )
        sample_dates = _dates(table.data[date], table.at)[first:]
    split = _split(n, sample_dates, test_from, test_fraction, table.path)
    return _dataset(values, split, sample_dates, table.path, specs)


def _windowed(dim, bound, win) -> bool:
    """Does one named column feed a ``[dim]`` input as a window? When the dim's size is known
    (literal, bound, or ``window =`` for a dim the data would bind) and is not 1; otherwise the
    column is a vector of one entry."""
    size = dim if isinstance(dim, int) else bound.get(dim, win)
    return size is not None and size != 1


def _window(current, dim, bound, name, path) -> int:
    """The window's length for input ``name`` (its first axis): the literal size, the dim's
    bound size, or ``window =`` (which then binds the dim); all windowed inputs share it."""
    size = dim if isinstance(dim, int) else bound.get(dim, current)
    if size is None:
        _fail(
            path,
            f"input '{name}' reads a window of rows of unknown length (its first axis is {dim})",
            hint=f"set window = W in the data source, or give the dim a size: dim {dim} = W",
        )
    if current is not None and current != size:
        _fail(
            path,
            f"input '{name}' has a window of {size} rows; window = {current} (or another "
            "input) says otherwise",
        )
    if not isinstance(dim, int):
        bound.setdefault(dim, size)
    return size


def _split(n, dates, test_from, fraction, where) -> int:
    if test_from is not None:
        if dates is None:
            _fail(where, 'test_from splits by date: name the date column (date = "COLUMN")')
        try:
            cut = datetime.date.fromisoformat(str(test_from)).isoformat()
        except ValueError:
            _fail(where, f"test_from = {_short(str(test_from))} is not an ISO date (YYYY-MM-DD)")
        split = int(np.searchsorted(dates, cut))
        if split == 0 or split == n:
            side = "training" if split == 0 else "test"
            _fail(
                where,
                f"test_from = {cut} leaves the {side} set empty (the samples run "
                f"{dates[0]} … {dates[-1]})",
            )
        return split
    if fraction == 0.0:  # every sample for training / scoring (``ddmc eval --data``)
        return n
    split = int(round(n * (1.0 - fraction)))
    if split == 0 or split == n:
        _fail(
            where,
            f"{n} samples with test_fraction = {fraction:g} leave an empty split",
            hint="more rows, or another test_fraction",
        )
    return split


def _dataset(values, split, dates, path, specs) -> Dataset:
    cast = {k: v.astype(_DTYPES[specs[k][1]]) for k, v in values.items()}
    info: dict[str, Any] = {"source": path}
    n = len(next(iter(cast.values())))
    if split == n:
        info["description"] = f"{os.path.basename(path)}: {n} samples" + (
            f" {dates[0]} … {dates[-1]}" if dates is not None else ""
        )
    elif dates is not None:
        info["train_dates"] = (str(dates[0]), str(dates[split - 1]))
        info["test_dates"] = (str(dates[split]), str(dates[-1]))
        info["description"] = (
            f"{os.path.basename(path)}: {split} training samples {dates[0]} … "
            f"{dates[split - 1]}, {n - split} test samples {dates[split]} … {dates[-1]}"
        )
    else:
        info["description"] = (
            f"{os.path.basename(path)}: {split} training samples, the last {n - split} "
            "for the test set"
        )
    return Dataset(
        {k: v[:split] for k, v in cast.items()}, {k: v[split:] for k, v in cast.items()}, info
    )


# ------------------------------------------------------------------------------ sources


def load_csv(path: str, specs: Mapping[str, Spec], mapping: Mapping[str, Any], **settings):
    return load_table(read_csv(path), specs, mapping, **settings)


def load_parquet(path: str, specs: Mapping[str, Spec], mapping: Mapping[str, Any], **settings):
    return load_table(read_parquet(path), specs, mapping, **settings)


def load_npz(
    path: str,
    specs: Mapping[str, Spec],
    mapping: Mapping[str, Any],
    dims: Mapping[str, int] | None = None,
    date: str | None = None,
    test_from: str | None = None,
    test_fraction: float = 0.2,
    window: int | None = None,
) -> Dataset:
    """Arrays of an ``.npz`` file (``numpy.savez``), first axis the sample. No pickles: an
    object array is refused."""
    _check_path(path)
    if window is not None:
        _fail(
            path,
            "window = applies to tables (csv, parquet); an npz array holds each "
            "sample's window itself",
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        _fail(
            path,
            f"not a readable .npz file ({str(err)[:120]})",
            hint="write it with numpy.savez(path, name=array, …)",
        )
    if not isinstance(archive, np.lib.npyio.NpzFile):
        _fail(path, "holds a single array (.npy); ddm reads named arrays from numpy.savez files")
    with archive:
        names = list(archive.files)
        bound: dict[str, int] = dict(dims or {})
        values: dict[str, np.ndarray] = {}
        n = None
        for name, (shape, dtype) in specs.items():
            key = mapping.get(name, name)
            if not isinstance(key, str):
                _fail(path, f"input '{name}' maps to {_short(repr(key))}: give an array's name")
            if key not in names:
                _fail(
                    path, f"no array {key!r} (input '{name}')", hint="its arrays: " + _names(names)
                )
            try:
                a = archive[key]
            except ValueError as err:  # an object array needs pickle, which ddm never loads
                _fail(
                    path,
                    f"array {key!r} cannot be read without pickle ({err})",
                    hint="store numbers: numpy.savez(path, x=np.asarray(x, np.float32))",
                )
            if a.dtype.kind not in "biuf":
                _fail(path, f"array {key!r} holds {a.dtype} values; input '{name}' needs numbers")
            if a.ndim != 1 + len(shape):
                want = "[samples" + "".join(f", {d}" for d in shape) + "]"
                _fail(
                    path,
                    f"array {key!r} has shape {list(a.shape)}; input '{name}' needs "
                    f"{want} (the first axis is the sample)",
                )
            for axis, (dim, size) in enumerate(zip(shape, a.shape[1:])):
                if isinstance(dim, int) and dim != size:
                    _fail(
                        path,
                        f"array {key!r} has {size} on axis {axis + 1}; input '{name}' "
                        f"declares {dim}",
                    )
                _bind(bound, dim if not isinstance(dim, int) else None, size, name, path)
            if n is not None and len(a) != n:
                _fail(
                    path,
                    f"array {key!r} has {len(a)} samples, an earlier one {n} (every "
                    "input needs one row per sample)",
                )
            n = len(a)
            if n == 0:
                _fail(path, f"array {key!r} holds no samples")
            bad = ~np.isfinite(a.reshape(len(a), -1).astype(np.float64))
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                _fail(
                    path,
                    f"array {key!r} sample {row} holds a non-finite value "
                    f"({a.reshape(len(a), -1)[row][bad[row]][0]})",
                )
            if dtype == "i32" and a.dtype.kind == "f" and np.any(a != np.round(a)):
                row = int(np.argwhere((a != np.round(a)).reshape(len(a), -1))[0][0])
                _fail(path, f"array {key!r} sample {row} is not integral (input '{name}' is i32)")
            values[name] = a
        if n is None or n == 0:
            _fail(path, "the arrays hold no samples")
        sample_dates = None
        if date is not None:
            if date not in names:
                _fail(path, f"no date array {date!r}", hint="its arrays: " + _names(names))
            d = archive[date]
            if len(d) != n:
                _fail(path, f"date array {date!r} has {len(d)} entries for {n} samples")
            sample_dates = _dates(d, lambda i: f"{path} sample {i}")
    split = _split(n, sample_dates, test_from, test_fraction, path)
    return _dataset(values, split, sample_dates, path, specs)


_ARGS = (
    Arg("path", "str"),
    Arg("date", "str", None),
    Arg("test_from", "str", None),
    Arg("test_fraction", "float", 0.2),
    Arg("window", "int", None),
)
_RANGES = {
    "test_fraction": Range(
        0.0,
        1.0,
        lo_open=True,
        hi_open=True,
        why="the share of samples, last in time order, held out for the test set",
    ),
    "window": COUNT,
}
_MAPPING_DOC = (
    ' Any other keyword maps an input: NAME = "COLUMN" | ["A", "B"] | "PREFIX*" '
    "(default: the column NAME, or NAME0, NAME1, …); an input f32[W, D] (or f32[W] from one "
    'column) reads the W rows before each sample. Split by date (date = "COLUMN", '
    'test_from = "YYYY-MM-DD") or the last test_fraction of the rows.'
)
CSV = Source(
    "csv",
    _ARGS,
    load_csv,
    "Your own table: a CSV file with a header line, one row per time step, in time order."
    + _MAPPING_DOC,
    _RANGES,
    maps_inputs=True,
)
PARQUET = Source(
    "parquet",
    _ARGS,
    load_parquet,
    "A Parquet file (needs pyarrow: pip install 'ddmc[data]'), columns as in csv." + _MAPPING_DOC,
    _RANGES,
    maps_inputs=True,
)
NPZ = Source(
    "npz",
    _ARGS[:4],  # no window: an array holds each sample's window itself
    load_npz,
    "Named arrays saved by numpy.savez: each input reads the array of its name (or NAME = "
    '"ARRAY"), first axis the sample, the rest the input\'s declared shape. Split by a date '
    'array (date = "ARRAY", test_from = "YYYY-MM-DD") or the last test_fraction.',
    _RANGES,
    maps_inputs=True,
)
