"""A non-editable install ships one import package, ddm, with its grammar as package data."""

import subprocess
import sys

from conftest import ROOT


def test_wheel_installs_one_package_with_the_grammar(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert top == ["bin", "ddm"] or top == ["ddm"], top
    assert (target / "ddm" / "dsl" / "grammar.lark").exists()
    for sub in ("dsl", "compiler", "library", "runtime", "runtime/data", "cli", "bench"):
        assert (target / "ddm" / sub / "__init__.py").exists(), sub
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import ddm, ddm.runtime.program as p; "
        "assert p.__file__.startswith(sys.argv[1]); "
        "print(ddm.loads('input x: f32\\nnode y = x * 3\\noutput y').apply({}, x=2.0)['y'])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "6.0"


# import name → distribution, where they differ
DISTRIBUTION = {"yaml": "pyyaml"}


def test_the_declared_dependencies_are_exactly_what_the_package_imports():
    """Every third-party module the package (bench aside) imports is a declared dependency,
    and every declared dependency is imported: nothing installed for nothing."""
    import ast

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = set()
    for req in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        declared.add(req.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower())
    imported = set()
    for package in ("dsl", "compiler", "library", "runtime", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top != "ddm" and top not in sys.stdlib_module_names:
                        imported.add(DISTRIBUTION.get(top, top).lower())
    # jaxlib is jax's own backend: declared beside it, imported through it; an optional
    # extra's package is imported only where its feature is used (parquet() → pyarrow)
    optional = set()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in extras["optional-dependencies"]["data"]:
        optional.add(req.split(">")[0].split("=")[0].split("[")[0].strip().lower())
    assert imported - optional == declared - {"jaxlib"}, (sorted(imported), sorted(declared))
