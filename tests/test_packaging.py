"""Packaging: a non-editable install ships one import package, ddm, with its grammar as package
data, under the distribution name ddmc, Apache-2.0 as an SPDX expression with its LICENSE, and
without a deprecation warning from the build; a run's files follow the user's umask."""

import email.parser
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """This checkout built as a wheel and installed (no dependencies) into a folder:
    (the folder, pip's output, stdout and stderr together)."""
    target = tmp_path_factory.mktemp("wheel") / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout
    return target, r.stdout


def test_wheel_installs_one_package_with_the_grammar(wheel, tmp_path):
    target, _ = wheel
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


def test_the_distribution_is_ddmc_under_apache_2_with_its_licence_file(wheel):
    """`ddm` on the package index is another project: ours is ddmc, its version ddm's own."""
    import ddm

    target, _ = wheel
    infos = [p for p in target.iterdir() if p.name.endswith(".dist-info")]
    assert [p.name for p in infos] == [f"ddmc-{ddm.__version__}.dist-info"]
    meta = email.parser.Parser().parsestr((infos[0] / "METADATA").read_text(encoding="utf-8"))
    assert meta["Name"] == "ddmc"
    assert meta["Version"] == ddm.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["License"] is None  # the free-text field the SPDX expression replaces
    assert meta.get_all("License-File") == ["LICENSE"]
    shipped = (infos[0] / "licenses" / "LICENSE").read_text(encoding="utf-8")
    assert shipped == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in shipped
    assert "END OF TERMS AND CONDITIONS" in shipped
    entry_points = (infos[0] / "entry_points.txt").read_text(encoding="utf-8")
    assert "ddmc = ddm.cli.main:main" in entry_points


def test_the_build_prints_no_deprecation_warning(wheel):
    _, output = wheel
    assert "deprecat" not in output.lower(), output


def test_missing_sp500_data_names_the_command_that_installs_the_pinned_wheel(monkeypatch):
    """A plain `pip install .` has no S&P 500 prices: the error gives the exact command, for the
    Python running ddm, and the version it names is the one constraints.txt pins."""
    import importlib.util

    import ddm
    from ddm.runtime.data import sp500

    pins = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert sp500.SKFOLIO in pins
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "skfolio" else real(name, *a)
    )
    with pytest.raises(ddm.DdmError, match="skfolio wheel, which is not installed") as err:
        sp500.csv_path()
    assert f"{sys.executable} -m pip install --no-deps {sp500.SKFOLIO}" in str(err.value.hint)
    assert "make data" in str(err.value.hint)


@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_runs_files_follow_the_umask(tmp_path, umask, mode):
    """A run's files are created as open() creates files: 0o666 less the umask (not the
    private 0o600 of a temporary file whatever the umask)."""
    import ddm

    prog = ddm.loads(
        "dim D = 2\ninput x: f32[D]\ninput y: f32\nparam w: f32[D] = 0.0\n"
        "node p = dot(w, x)\noutput p\nloss = mean((p - y) ** 2)\n"
    )
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    y = x.sum(axis=1)
    data = {"train": {"x": x[:12], "y": y[:12]}, "test": {"x": x[12:], "y": y[12:]}}
    old = os.umask(umask)
    try:
        ddm.train(prog, data, out=str(tmp_path / "run"), steps=2, batch=4)
    finally:
        os.umask(old)
    written = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert {"metrics.json", "params.npz", "params.npz.sha256"} <= set(written), written
    for name in ("metrics.json", "params.npz", "params.npz.sha256"):
        assert written[name] == mode, (name, oct(written[name]))


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
    # extra's package is imported only where its feature is used
    optional = set()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in ("data", "notebook"):  # parquet() → pyarrow; a notebook's picture → graphviz
        for req in extras["optional-dependencies"][extra]:
            optional.add(req.split(">")[0].split("=")[0].split("[")[0].strip().lower())
    # flatbuffers: jax.export's serialisation (ddmc export), imported by jax itself
    assert imported - optional == declared - {"jaxlib", "flatbuffers"}, (
        sorted(imported),
        sorted(declared),
    )
