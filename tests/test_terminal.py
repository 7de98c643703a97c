"""Output that survives pipes and terminals (issue 12): piped reports keep every cell and phrase
whole, the run says what data it trains on and that it is compiling, the first Ctrl-C is
acknowledged while XLA compiles, diagnostics are coloured only where asked, and the
compilation cache makes a second run skip XLA."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ddm.cli import terminal

from conftest import EXAMPLES, ROOT

LONG = "sharpe_of_the_equal_weight_baseline_over_the_whole_test_period_in_annual_terms"


def ddmc(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "ddm.cli.main", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_a_piped_report_keeps_every_cell_and_phrase_whole(tmp_path):
    prog = tmp_path / "wide.ddm"
    body = (
        (EXAMPLES / "ridge.ddm")
        .read_text()
        .replace("metric mse_ols", f"metric {LONG} = mean((pred_shrunk - y) ** 2)\nmetric mse_ols")
    )
    prog.write_text(body.replace('path="data/ridge.csv"', f'path="{EXAMPLES}/data/ridge.csv"'))
    r = ddmc(
        "compile",
        prog,
        "--run",
        "--out",
        tmp_path / "run",
        "--set",
        "steps=5",
        "--no-plots",
        env={"COLUMNS": "60"},
    )
    assert r.returncode == 0, r.stderr
    table = [line for line in r.stdout.splitlines() if "│" in line or "┃" in line]
    assert table and not any("…" in line for line in table)  # no cell cut short
    assert LONG in r.stdout  # the cell whole, though the terminal width says 60
    solver = [line for line in r.stdout.splitlines() if line.startswith("beta:")]
    assert solver and "mean iterations" in solver[0] and "backward" in solver[0]  # one line
    assert "data: ridge.csv: 944 training samples 2018-01-31 … 2020-08-31" in r.stdout
    assert "compiling the training step (XLA)…" in r.stdout


def test_diagnostics_are_coloured_only_where_asked(tmp_path):
    bad = tmp_path / "bad.ddm"
    bad.write_text("input x: f32\nnode y = x +\n")
    plain = ddmc("check", bad)
    assert plain.returncode == 1 and "\x1b[" not in plain.stderr  # a pipe: no colour
    forced = ddmc("--color", "always", "check", bad)
    assert "\x1b[1;31merror:\x1b[0m" in forced.stderr and "\x1b[1;32m^" in forced.stderr
    assert "\x1b[" not in ddmc("--color", "never", "check", bad).stderr


def test_auto_colour_honours_no_color_and_a_dumb_terminal(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    terminal.set_mode("auto")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert terminal.colour_wanted(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not terminal.colour_wanted(Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not terminal.colour_wanted(Tty())


def test_the_first_ctrl_c_is_acknowledged_while_xla_compiles(capsys):
    """The signal arrives 0.2 s into a compile; the acknowledgement must be written before
    the compile returns (Python's own handler would wait for it)."""
    import jax
    import jax.numpy as jnp

    from ddm.runtime.host import ACK, InterruptFlag

    def f(x):
        for i in range(1500):
            x = jnp.sin(x) * 1.0001 + jnp.cos(x * i)
        return x

    lowered = jax.jit(f).lower(jnp.ones(64))
    order: list[str] = []

    class Stderr:
        def write(self, text):
            order.append("ack")

        def flush(self):
            pass

    flag = InterruptFlag()
    saved, sys.stderr = sys.stderr, Stderr()
    try:
        flag.install()
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        lowered.compile()
        order.append("compiled")
        timer.join()
        time.sleep(0.05)
    finally:
        flag.restore()
        sys.stderr = saved
    assert order[0] == "ack" and order.count("ack") == 1, order
    assert flag.raised and ACK.startswith("ddmc: Ctrl-C")


@pytest.mark.parametrize("cached", [True, False], ids=["cache", "no-cache"])
def test_the_compilation_cache_is_on_by_default_and_off_with_no_cache(tmp_path, cached):
    cache = tmp_path / "xla"
    args = [
        "compile",
        EXAMPLES / "ridge.ddm",
        "--run",
        "--out",
        tmp_path / "r",
        "--set",
        "steps=2",
        "--no-plots",
    ] + ([] if cached else ["--no-cache"])
    r = ddmc(*args, env={"DDM_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    entries = list(cache.rglob("*")) if cache.exists() else []
    assert bool([e for e in entries if e.is_file()]) == cached


def test_every_flag_of_every_command_is_documented():
    import argparse

    from ddm.cli.main import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"ddmc {name} {action.option_strings or action.dest}: no help"
