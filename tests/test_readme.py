"""The README runs as written: every ```python block of README.md, in order, in one namespace,
from a folder where ``examples/`` is the repository's (so its relative paths hold)."""

from __future__ import annotations

import re

from conftest import ROOT


def blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_blocks_and_each_runs(tmp_path, monkeypatch, capsys):
    found = blocks()
    assert len(found) >= 2
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(found):
        # the test executes the README's own text; the product never evaluates program text
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    assert (tmp_path / "runs" / "ridge-readme" / "params.npz").exists()
    assert set(namespace["scores"]) == {"train", "test"}


def test_the_readme_names_every_data_source():
    from ddm.runtime.data import SOURCES

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in SOURCES:
        assert f"| `{name}" in text, name
