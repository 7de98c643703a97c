"""Your own data (issue 12): ``csv``, ``npz`` and ``parquet`` sources map files to the program's
inputs, split them by date or fraction, and refuse bad data with the file, the column or array
and the line — before anything is compiled.

The bad-data corpus lives in ``tests/corpus/data``: each file is one way a user's data goes
wrong, run through ``ddmc compile --run`` and asserted by message, exit code 1 and no traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ddm.cli.main import main
from ddm.runtime.data import files

CORPUS = os.path.join(os.path.dirname(__file__), "corpus", "data")

PROGRAM = """\
dim D
input x: f32[D]
input y: f32
param w: f32[D] = 0.0
loss = mean((sum(x * w) - y) ** 2)
run {{
  data = {source}
  steps = 2
  batch = 2
}}
"""

WINDOWED = """\
dim W = 3
dim D
input X: f32[W, D]
input ys: f32[W]
input x: f32[D]
input y: f32
param w: f32[D] = 0.0
loss = mean((sum(x * w) - y) ** 2 + 0.0 * sum(X) + 0.0 * sum(ys))
run {{
  data = {source}
  steps = 2
  batch = 2
}}
"""


def run_cli(tmp_path, source: str, program: str = PROGRAM, extra=()):
    """``ddmc compile prog.ddm --run`` in-process: (exit code, stderr)."""
    path = tmp_path / "prog.ddm"
    path.write_text(program.format(source=source))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["compile", str(path), "--run", "--out", str(tmp_path / "run"), *extra])
    return code, err.getvalue()


def corpus(name: str) -> str:
    return os.path.join(CORPUS, name)


# (file, source call, what the message must say)
BAD = [
    ("empty.csv", 'csv(path="{f}")', "the file is empty"),
    ("header_only.csv", 'csv(path="{f}")', "the header is the only line: no data rows"),
    ("missing_column.csv", 'csv(path="{f}", x=["x0", "x1"])', "no column 'x1' (input 'x')"),
    ("non_numeric.csv", 'csv(path="{f}")', "non_numeric.csv:4: column 'x1': 'abc' is not a number"),
    ("nan_value.csv", 'csv(path="{f}")', "nan_value.csv:5: column 'x1' is nan"),
    ("inf_value.csv", 'csv(path="{f}")', "inf_value.csv:3: column 'x0' is inf"),
    ("missing_value.csv", 'csv(path="{f}")', "missing_value.csv:2: column 'x1' is empty"),
    ("ragged.csv", 'csv(path="{f}")', "ragged.csv:6: 3 fields where the header names 4"),
    (
        "unsorted_dates.csv",
        'csv(path="{f}", date="date", test_from="2020-01-04")',
        "unsorted_dates.csv:4: date 2020-01-03 comes before the previous row's 2020-01-05",
    ),
    (
        "duplicate_dates.csv",
        'csv(path="{f}", date="date", test_from="2020-01-04")',
        "duplicate_dates.csv:4: date 2020-01-02 repeats the previous row's",
    ),
    (
        "bad_date.csv",
        'csv(path="{f}", date="date", test_from="2020-01-04")',
        "bad_date.csv:5: date '04/01/2020' is not an ISO date",
    ),
    ("duplicate_header.csv", 'csv(path="{f}")', "column 'x0' appears twice (columns 2 and 3)"),
    ("binary.csv", 'csv(path="{f}")', "not UTF-8 text"),
    ("a_directory.csv", 'csv(path="{f}")', "is a directory, not a data file"),
    ("no_such_file.csv", 'csv(path="{f}")', "no such file"),
    (
        "good.csv",
        'csv(path="{f}", date="date", test_from="2021-01-01")',
        "test_from = 2021-01-01 leaves the test set empty (the samples run 2020-01-01 … "
        "2020-01-06)",
    ),
    ("good.csv", 'csv(path="{f}", test_from="2020-01-03")', "test_from splits by date"),
    (
        "good.csv",
        'csv(path="{f}")',
        "input 'x' is declared with 3 there; the data give 2",
        PROGRAM.replace("dim D", "dim D = 3"),
    ),
    (
        "good.csv",
        'csv(path="{f}", X="x*", ys="y", window=4)',
        "input 'X' has a window of 3 rows; window = 4",
        WINDOWED,
    ),
    (
        "wrong_shape.npz",
        'npz(path="{f}")',
        "array 'x' has 3 on axis 1; input 'x' declares 2",
        PROGRAM.replace("dim D", "dim D = 2"),
    ),
    ("wrong_rank.npz", 'npz(path="{f}")', "array 'x' has shape [6]; input 'x' needs [samples, D]"),
    ("ragged_lengths.npz", 'npz(path="{f}")', "array 'y' has 5 samples, an earlier one 6"),
    ("text_array.npz", 'npz(path="{f}")', "array 'x' holds <U1 values; input 'x' needs numbers"),
    ("nan_array.npz", 'npz(path="{f}")', "array 'x' sample 3 holds a non-finite value (nan)"),
    ("missing_array.npz", 'npz(path="{f}")', "no array 'x' (input 'x')"),
    ("single_array.npz", 'npz(path="{f}")', "holds a single array (.npy)"),
    ("not_a_zip.npz", 'npz(path="{f}")', "not a readable .npz file"),
    ("empty_arrays.npz", 'npz(path="{f}")', "array 'x' holds no samples"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_data_is_named_with_its_file_column_and_line(tmp_path, case):
    name, call, message, program = (*case, PROGRAM)[:4]
    code, err = run_cli(tmp_path, call.format(f=corpus(name)), program)
    assert code == 1, err
    assert message in err, err
    assert name in err  # the file is named
    assert "Traceback" not in err
    line = program.splitlines().index("  data = {source}") + 1
    assert err.startswith(f"{tmp_path / 'prog.ddm'}:{line}:10: error: data source ")
    assert len(err) < 2000  # bounded


def test_the_corpus_holds_a_file_for_every_case():
    on_disk = set(os.listdir(CORPUS))
    named = {b[0] for b in BAD} - {"no_such_file.csv"}
    assert named <= on_disk
    assert len(on_disk - {"good.csv", "good.npz"}) >= 15


def test_a_mapping_that_names_no_input_or_no_column_shape(tmp_path):
    code, err = run_cli(tmp_path, f'csv(path="{corpus("good.csv")}", z="x0")')
    assert code == 1
    assert "csv has no setting 'z', and the program has no input 'z' for it to map" in err
    code, err = run_cli(tmp_path, f'csv(path="{corpus("good.csv")}", x=3)')
    assert code == 1
    assert "'x' maps an input to columns" in err
    code, err = run_cli(tmp_path, f'csv(path="{corpus("good.csv")}", test_fraction=1.5)')
    assert code == 1
    assert "'data.test_fraction' must be less than 1" in err


def test_a_bad_file_is_refused_without_a_traceback_from_the_shell(tmp_path):
    (tmp_path / "prog.ddm").write_text(
        PROGRAM.format(source=f'csv(path="{corpus("non_numeric.csv")}")')
    )
    ddmc = shutil.which("ddmc", path=os.path.dirname(sys.executable))
    assert ddmc
    p = subprocess.run(
        [ddmc, "compile", str(tmp_path / "prog.ddm"), "--run", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1
    assert "error: data source csv:" in p.stderr and "Traceback" not in p.stderr
    assert "^" in p.stderr  # the caret under the data setting


# ------------------------------------------------------------------------------ what loads


def test_columns_map_to_inputs_by_name_prefix_and_list():
    specs = {"x": (("D",), "f32"), "y": ((), "f32")}
    by_default = files.load_csv(corpus("good.csv"), specs, {})
    by_prefix = files.load_csv(corpus("good.csv"), specs, {"x": "x*"})
    by_list = files.load_csv(corpus("good.csv"), specs, {"x": ["x1", "x0"]})
    np.testing.assert_array_equal(by_default.train["x"], by_prefix.train["x"])
    np.testing.assert_array_equal(by_list.train["x"], by_default.train["x"][:, ::-1])
    assert by_default.train["x"].dtype == np.float32
    assert by_default.n("train") == 5 and by_default.n("test") == 1  # test_fraction 0.2


def test_a_window_reads_the_rows_before_each_sample():
    specs = {"X": ((3, "D"), "f32"), "ys": ((3,), "f32"), "x": (("D",), "f32"), "y": ((), "f32")}
    ds = files.load_csv(
        corpus("good.csv"),
        specs,
        {"X": "x*", "ys": "y"},
        date="date",
        test_from="2020-01-06",
    )
    # rows 0..5; samples at rows 3, 4, 5; the test set starts at 2020-01-06 (row 5)
    assert ds.n("train") == 2 and ds.n("test") == 1
    np.testing.assert_array_equal(ds.train["ys"][0], np.float32([0.5, 0.7, 0.1]))  # rows 0..2
    np.testing.assert_array_equal(ds.train["y"][0], np.float32(0.9))  # row 3: after its window
    np.testing.assert_array_equal(ds.test["X"][0], np.float32([[0.5, 1], [2, 0.5], [1, 1]]))
    assert ds.info["train_dates"] == ("2020-01-04", "2020-01-05")
    assert ds.info["test_dates"] == ("2020-01-06", "2020-01-06")


def test_a_window_needs_rows_before_the_first_sample(tmp_path):
    code, err = run_cli(
        tmp_path, f'csv(path="{corpus("good.csv")}", X="x*", ys="y")', program=WINDOWED
    )
    assert code == 0, err  # six rows, a window of three: three samples
    short = tmp_path / "short.csv"
    short.write_text("x0,x1,y\n1,2,3\n4,5,6\n")
    code, err = run_cli(tmp_path, f'csv(path="{short}", X="x*", ys="y")', program=WINDOWED)
    assert code == 1 and "2 rows leave no sample after a window of 3" in err


def test_npz_arrays_and_a_date_array_split_alike(tmp_path):
    dates = np.array([f"2020-01-0{d}" for d in range(1, 7)])
    path = tmp_path / "d.npz"
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(path, features=x, y=np.arange(6.0), day=dates)
    specs = {"x": (("D",), "f32"), "y": ((), "f32")}
    ds = files.load_npz(str(path), specs, {"x": "features"}, date="day", test_from="2020-01-05")
    np.testing.assert_array_equal(ds.train["x"], x[:4])
    assert ds.test["y"].tolist() == [4.0, 5.0] and ds.test["y"].dtype == np.float32


def test_a_csv_trains_through_the_cli(tmp_path):
    """The relative path is read beside the program; the run names its data."""
    shutil.copy(corpus("good.csv"), tmp_path / "mine.csv")
    code, err = run_cli(tmp_path, 'csv(path="mine.csv", date="date", test_from="2020-01-05")')
    assert code == 0, err
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["test_dates"] == ["2020-01-05", "2020-01-06"]


def test_parquet_reads_columns_like_a_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "date": [f"2020-01-0{d}" for d in range(1, 7)],
            "x0": np.arange(6.0),
            "x1": np.ones(6),
            "y": np.arange(6.0) % 2,
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    specs = {"x": (("D",), "f32"), "y": ((), "f32")}
    ds = files.load_parquet(
        str(tmp_path / "d.parquet"), specs, {}, date="date", test_from="2020-01-05"
    )
    assert ds.train["x"].shape == (4, 2) and ds.test["y"].tolist() == [0.0, 1.0]
    bad = pa.table({"x0": [1.0, float("nan")], "x1": [1.0, 2.0], "y": [0.0, 1.0]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(files.DataDiagnostic, match=r"bad.parquet row 1: column 'x0' is nan"):
        files.load_parquet(str(tmp_path / "bad.parquet"), specs, {})
