"""The package's layers, as a specification of its imports (docs/architecture.md).

The phases run one way — ``dsl`` (text → AST) → ``compiler`` (AST → IR → the compiled product)
→ ``runtime`` (the product jitted, trained, diagnosed, drawn) — with ``library`` (the ops and
solvers a program calls) beside them. So: ``dsl`` imports nothing of ours; ``library`` imports
neither ``compiler`` nor ``runtime``; ``compiler`` never imports ``runtime``; nothing below the
CLI imports ``cli`` or ``bench``; no module takes part in an import circle; and no module reads
another package's private names. Every import counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("dsl", "compiler", "library", "runtime", "cli", "bench")
# package → the packages of ours it may import
ALLOWED = {
    "dsl": {"dsl"},
    "library": {"library", "dsl"},
    "compiler": {"compiler", "library", "dsl"},
    "runtime": {"runtime", "compiler", "library", "dsl"},
    "cli": {"cli", "runtime", "compiler", "library", "dsl", ""},  # "" = the root facade
    "bench": {"bench", "runtime", "compiler", "library", "dsl", "cli", ""},
    "": {"", "library", "runtime", "dsl"},
}
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _modules() -> dict[str, pathlib.Path]:
    """ddm module name → file, for every module of the package."""
    out = {"ddm": ROOT / "__init__.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(["ddm", *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> list[tuple[str, list[str], int]]:
    """(imported ddm module, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append((base, [a.name for a in node.names], node.lineno))
    out = []
    for base, names, line in found:
        if base != "ddm" and not base.startswith("ddm."):
            continue
        submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
        out += [(m, [], line) for m in submodules]
        if len(submodules) < len(names) or not names:
            out.append((base, [n for n in names if f"{base}.{n}" not in MODULES], line))
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(m, p) if t != m} for m, p in MODULES.items()}


def test_the_walk_sees_the_whole_package():
    assert {
        "ddm.dsl.parser",
        "ddm.compiler.product",
        "ddm.runtime.program",
        "ddm.library.solvers.implicit",
        "ddm.cli.main",
    } <= set(MODULES)
    edges = _graph()
    assert "ddm.compiler.product" in edges["ddm.runtime.program"]
    assert "ddm.compiler.lower" in edges["ddm.compiler.product"]  # function-level ones too


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_its_own_layer_and_those_below(module):
    package = _package(module)
    bad = [
        (t, line)
        for t, _, line in _imports(module, MODULES[module])
        if _package(t) not in ALLOWED[package]
    ]
    assert not bad, f"{module} ({package}) imports " + ", ".join(
        f"{t} at line {line}" for t, line in bad
    )


def test_no_import_circle_anywhere_in_the_package():
    edges = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == []


def test_no_module_reads_another_packages_private_names():
    found = []
    for module, path in MODULES.items():
        for target, names, line in _imports(module, path):
            if _package(target) != _package(module):
                found += [
                    f"{module}:{line} imports {target}.{n}"
                    for n in names
                    if n.startswith("_") and not n.startswith("__")
                ]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        own |= {
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
        }
        for n in ast.walk(tree):
            if (
                isinstance(n, ast.Attribute)
                and n.attr.startswith("_")
                and not n.attr.startswith("__")
                and n.attr not in NAMEDTUPLE_API
                and n.attr not in own
                and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))
            ):
                found.append(f"{module}:{n.lineno} reads {ast.unparse(n)}")
    assert found == []


def test_rules_and_guards_are_desugared_before_name_resolution():
    """The desugaring is its own pass: resolve knows nothing of rules or guards."""
    resolve = (ROOT / "compiler" / "resolve.py").read_text(encoding="utf-8")
    assert "compiler.rules" not in resolve and "compiler.guards" not in resolve
    driver = (ROOT / "compiler" / "driver.py").read_text(encoding="utf-8")
    assert driver.index("desugar(parse(") < driver.index("resolve(")
