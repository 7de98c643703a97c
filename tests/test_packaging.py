"""A non-editable install ships one import package, ddm, with its grammar as package data."""
import subprocess
import sys

from conftest import ROOT


def test_wheel_installs_one_package_with_the_grammar(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(target), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert top == ["bin", "ddm"] or top == ["ddm"], top
    assert (target / "ddm" / "dsl" / "grammar.lark").exists()
    for sub in ("dsl", "compiler", "library", "runtime", "runtime/data", "cli", "bench"):
        assert (target / "ddm" / sub / "__init__.py").exists(), sub
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import ddm, ddm.runtime.program as p; "
            "assert p.__file__.startswith(sys.argv[1]); "
            "print(ddm.loads('input x: f32\\nnode y = x * 3\\noutput y').apply({}, x=2.0)['y'])")
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "6.0"
