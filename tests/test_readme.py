"""The README runs as written: every ```python block of README.md, in order, in one namespace,
from a folder where ``examples/`` is the repository's (so its relative paths hold)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_blocks_and_each_runs(tmp_path):
    """The blocks, in order, as one script run by a fresh interpreter (as a reader pastes them)."""
    found = blocks()
    assert len(found) >= 2
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(found) + '\nassert set(scores) == {"train", "test"}\n')
    r = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "runs" / "ridge-readme" / "params.npz").exists()


def test_the_readme_names_every_data_source():
    from ddm.runtime.data import SOURCES

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in SOURCES:
        assert f"| `{name}" in text, name
