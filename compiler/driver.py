"""The one driver: text → parse → desugar → resolve → check → IR graph, in that order (and
→ lower → the compiled product, :func:`compile_text` / :func:`compile_file`).

It is the only place of the front end that attaches source text to a diagnostic, so errors
print with their line and caret wherever they were raised (imported files included).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ddm.compiler.check import check
from ddm.compiler.desugar import desugar
from ddm.compiler.gradflow import lint
from ddm.compiler.ir import Graph
from ddm.compiler.resolve import resolve
from ddm.dsl import ast
from ddm.dsl.diagnostics import DdmError
from ddm.dsl.parser import parse, read_source


@dataclass
class Sources:
    """Texts of every file a compilation read, for diagnostics."""

    texts: dict[str, str] = field(default_factory=dict)

    def locate(self, err: DdmError) -> DdmError:
        if err.span is not None and err.source is None:
            err.source = self.texts.get(err.span.file)
        return err


def front_end(text: str, file: str) -> tuple[Graph, Sources]:
    """Compile program text to its IR graph; raises :class:`DdmError` with source attached."""
    sources = Sources({file: text})

    def load(path: str) -> ast.Module:
        if path not in sources.texts:
            sources.texts[path] = read_source(path)
        return parse(sources.texts[path], path)

    try:
        sugar = desugar(parse(text, file))
        graph = check(resolve(sugar.module, load), sugar)
        graph = replace(graph, warnings=graph.warnings + lint(graph))
    except DdmError as err:
        raise sources.locate(err) from None
    return graph, sources


def front_end_file(path: str) -> tuple[Graph, Sources]:
    try:
        text = read_source(path)
    except DdmError as err:
        raise err
    return front_end(text, path)
