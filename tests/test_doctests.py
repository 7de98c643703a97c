"""Every docstring example in the package runs, as written (``>>>`` lines are doctests).

Modules are imported under their package name (``ddm.compiler.product``), never as loose
files, so an example sees the same classes as the code that uses it.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("dsl", "compiler", "library", "runtime", "cli")


def _modules() -> list[str]:
    out = ["ddm"]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append(".".join(["ddm", *parts]))
    return out


def _with_examples() -> list[str]:
    out = []
    for name in _modules():
        source = (ROOT / "__init__.py") if name == "ddm" else None
        path = source or ROOT.joinpath(*name.split(".")[1:])
        text = (
            path.with_suffix(".py")
            if path.suffix != ".py" and not path.is_dir()
            else path / "__init__.py"
            if path.is_dir()
            else path
        ).read_text(encoding="utf-8")
        if ">>>" in text:
            out.append(name)
    return out


MODULES = _with_examples()


def test_the_examples_are_found():
    assert {
        "ddm.compiler.product",
        "ddm.runtime.program",
        "ddm.runtime.train_step",
        "ddm.compiler.desugar",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted > 0
