"""``ddmc check`` and ``ddmc fmt`` over several files and folders: each file reported, one exit
code for all, a summary; ``fmt --check`` prints a diff, ``fmt -w`` rewrites atomically."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from ddm.cli.main import main

GOOD = "input x: f32\nnode y = 2.0 * x\noutput y\nloss = mean(y)\n"
UGLY = "input x: f32\nnode y = 2.0*x\noutput y\nloss = mean(y)\n"  # valid, not canonical
SHAPE_ERROR = "input x: f32[3]\ninput z: f32[4]\nnode y = x + z\noutput y\nloss = sum(y)\n"
SYNTAX_ERROR = "input x: f32\nnode y = (x\n"


def ddmc(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def tree(tmp_path):
    """``tmp_path`` holding ``a.ddm`` (canonical), ``sub/b.ddm`` (not canonical),
    ``sub/deeper/c.ddm`` (canonical), a hidden folder and file, and a text file."""
    files = {
        "a.ddm": GOOD,
        "sub/b.ddm": UGLY,
        "sub/deeper/c.ddm": GOOD,
        ".hidden/d.ddm": SYNTAX_ERROR,
        "sub/.e.ddm": SYNTAX_ERROR,
        "sub/notes.txt": "not a program",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


# --- ddmc check ----------------------------------------------------------------------------------


def test_check_reports_each_file_and_fails_if_any_failed(capsys, tmp_path):
    good, bad = tmp_path / "good.ddm", tmp_path / "bad.ddm"
    good.write_text(GOOD)
    bad.write_text(SHAPE_ERROR)
    rc, out, err = ddmc(capsys, "check", bad, good)
    assert rc == 1
    assert "good.ddm: ok" in out  # the file that checks still gets its table
    assert err.startswith(f"{bad}:3:")  # the one that does not: located, with line and caret
    assert "error: " in err and "   3 | node y = x + z" in err and "^" in err
    assert err.endswith("2 files checked, 1 with errors\n")
    assert "Traceback" not in err


def test_check_of_a_folder_takes_every_ddm_file_under_it_sorted(capsys, tree):
    rc, out, err = ddmc(capsys, "check", tree)
    assert rc == 0, err
    reported = [line.split(":")[0] for line in out.splitlines() if ": ok — " in line]
    assert reported == ["a.ddm", "b.ddm", "c.ddm"]  # hidden ones skipped, the .txt ignored
    assert err == "3 files checked, no errors\n"
    assert ddmc(capsys, "check", "-q", tree) == (0, "", "")  # quiet: nothing on success


def test_check_of_one_file_prints_no_summary(capsys, tree):
    rc, out, err = ddmc(capsys, "check", tree / "a.ddm")
    assert rc == 0 and err == ""
    assert out.rstrip().endswith("outputs: y")


def test_a_file_named_twice_is_checked_once(capsys, tree):
    rc, _, err = ddmc(capsys, "check", "-q", tree / "a.ddm", tree, tree / "a.ddm")
    assert rc == 0 and err == ""
    rc, out, err = ddmc(capsys, "check", tree / "a.ddm", tree)
    assert out.count("a.ddm: ok") == 1 and err == "3 files checked, no errors\n"


@pytest.mark.parametrize("command", ["check", "fmt"])
def test_a_missing_path_or_a_folder_without_programs_is_an_error(capsys, tmp_path, command):
    missing = tmp_path / "nope.ddm"
    (tmp_path / "empty").mkdir()
    (tmp_path / "good.ddm").write_text(GOOD)
    assert ddmc(capsys, command, tmp_path / "good.ddm", missing) == (
        1,
        "",
        f"{missing}: error: no such file: '{missing}'\n",
    )
    rc, out, err = ddmc(capsys, command, tmp_path / "empty")
    assert (rc, out) == (1, "")
    assert (
        err == f"{tmp_path / 'empty'}: error: no .ddm files in the folder '{tmp_path / 'empty'}'\n"
    )


def test_check_and_fmt_of_many_files_do_not_import_jax(tree):
    code = textwrap.dedent(f"""
        import sys
        from ddm.cli.main import main
        assert main(["check", "-q", {str(tree)!r}]) == 0
        assert main(["fmt", "--check", {str(tree)!r}]) == 1
        assert main(["fmt", "-w", {str(tree)!r}]) == 0
        assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax'))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --- ddmc fmt --check ----------------------------------------------------------------------------


def test_fmt_check_prints_a_diff_of_each_file_that_would_change(capsys, tree):
    rc, out, err = ddmc(capsys, "fmt", "--check", tree)
    assert rc == 1
    b = tree / "sub" / "b.ddm"
    assert out == (
        f"--- {b}\n+++ {b}\n@@ -1,4 +1,4 @@\n"
        " input x: f32\n-node y = 2.0*x\n+node y = 2.0 * x\n output y\n loss = mean(y)\n"
    )
    assert err == (
        f"{b}: not canonically formatted (run ddmc fmt -w)\n"
        "3 files checked, 1 not canonically formatted\n"
    )
    assert b.read_text() == UGLY  # --check writes nothing


def test_fmt_check_of_canonical_files_says_so_and_passes(capsys, tree):
    (tree / "sub" / "b.ddm").write_text(GOOD)
    assert ddmc(capsys, "fmt", "--check", tree) == (0, "", "3 files checked, all canonical\n")
    assert ddmc(capsys, "fmt", "--check", tree / "a.ddm") == (0, "", "")


def test_fmt_check_marks_a_last_line_without_its_newline(capsys, tmp_path):
    path = tmp_path / "a.ddm"
    path.write_text("output a")
    rc, out, _ = ddmc(capsys, "fmt", "--check", path)
    assert rc == 1
    assert out.endswith("-output a\n\\ No newline at end of file\n+output a\n")


def test_fmt_reports_a_syntax_error_and_goes_on(capsys, tree):
    bad = tree / "sub" / "bad.ddm"
    bad.write_text(SYNTAX_ERROR)
    rc, out, err = ddmc(capsys, "fmt", "--check", tree)
    assert rc == 1
    assert f"+++ {tree / 'sub' / 'b.ddm'}" in out  # the next file is still diffed
    assert f"{bad}:2:12: error: unexpected end of file; expected ')'\n   2 | node y = (x\n" in err
    assert err.endswith("4 files checked, 1 not canonically formatted, 1 with errors\n")
    assert "Traceback" not in err


# --- ddmc fmt and fmt -w -------------------------------------------------------------------------


def test_fmt_prints_one_file_and_refuses_several_without_w_or_check(capsys, tree):
    assert ddmc(capsys, "fmt", tree / "sub" / "b.ddm") == (0, GOOD, "")
    rc, out, err = ddmc(capsys, "fmt", tree)
    assert (rc, out) == (2, "")
    assert err == (
        "ddmc fmt: 3 files: add -w to rewrite them in place, or --check to see what would change\n"
    )


def test_fmt_w_rewrites_what_changes_and_keeps_the_mode(capsys, tree):
    b, a = tree / "sub" / "b.ddm", tree / "a.ddm"
    os.chmod(b, 0o640)
    untouched = a.stat()
    rc, out, err = ddmc(capsys, "fmt", "-w", tree)
    assert (rc, out) == (0, "")
    assert err == f"reformatted {b}\n3 files checked, 1 reformatted\n"
    assert b.read_text() == GOOD
    assert stat.S_IMODE(b.stat().st_mode) == 0o640
    assert (a.stat().st_ino, a.stat().st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)
    assert sorted(os.listdir(tree / "sub")) == [".e.ddm", "b.ddm", "deeper", "notes.txt"]
    assert ddmc(capsys, "fmt", "--check", tree)[0] == 0


def test_fmt_w_through_a_symbolic_link_rewrites_the_file_it_points_to(capsys, tmp_path):
    real, link = tmp_path / "real.ddm", tmp_path / "link.ddm"
    real.write_text(UGLY)
    link.symlink_to(real)
    assert ddmc(capsys, "fmt", "-w", link)[0] == 0
    assert link.is_symlink() and real.read_text() == GOOD


def test_a_failed_write_leaves_the_file_whole_and_no_temporary(capsys, tmp_path, monkeypatch):
    path = tmp_path / "a.ddm"
    path.write_text(UGLY)

    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    rc, out, err = ddmc(capsys, "fmt", "-w", path)
    assert (rc, out) == (1, "")
    assert err == f"{path}: error: cannot write: No space left on device\n"
    assert path.read_text() == UGLY
    assert os.listdir(tmp_path) == ["a.ddm"]


def test_fmt_w_and_check_together_are_bad_usage(capsys, tree):
    with pytest.raises(SystemExit) as info:
        main(["fmt", "-w", "--check", str(tree)])
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
