"""Errors as values: one base class with a span, a message and a hint; formatting kept apart.

The driver (``ddm.cli``) is the only place that catches :class:`DdmError` and prints it; the
Python API lets it propagate (its ``str`` is the formatted diagnostic).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddm.dsl.span import Span


@dataclass(frozen=True, slots=True)
class Note:
    span: Span
    message: str


class DdmError(Exception):
    """A mistake in a user's program, data or configuration, located at ``span``.

    ``kind`` names the family (``syntax``, ``name``, ``cycle``, ``shape``, ``dtype``, ``arity``,
    ``data``, ``import``, ``input``, ``problem``; the runtime adds ``config`` and ``solver``,
    ``ddm.runtime.errors``); tests and tools match on it.
    """

    kind = "error"

    def __init__(
        self, span: Span | None, message: str, hint: str | None = None, notes: tuple[Note, ...] = ()
    ):
        super().__init__(message)
        self.span = span
        self.message = message
        self.hint = hint
        self.notes = notes
        self.source: str | None = None  # attached by whoever knows the file's text

    def with_source(self, source: str) -> "DdmError":
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        return format_diagnostic(self, self.source)


class SyntaxDiagnostic(DdmError):
    kind = "syntax"


class NameDiagnostic(DdmError):
    kind = "name"


class CycleDiagnostic(DdmError):
    kind = "cycle"


class ShapeDiagnostic(DdmError):
    kind = "shape"


class DtypeDiagnostic(DdmError):
    kind = "dtype"


class ArityDiagnostic(DdmError):
    kind = "arity"


class ImportDiagnostic(DdmError):
    kind = "import"


class DataDiagnostic(DdmError):
    """Arrays given at call time that do not fit the program's declared inputs (raised when the
    compiled functions bind them), and bad data a run reads."""

    kind = "data"


class ProblemDiagnostic(DdmError):
    """An argmin/argmax whose structure ddm cannot solve: non-convex, a constraint that is not
    affine in the decision variable, a solver that does not fit the problem's class."""

    kind = "problem"


class InputDiagnostic(DdmError):
    """The file itself could not be read (missing, a directory, not UTF-8, too large)."""

    kind = "input"


@dataclass(frozen=True, slots=True)
class Warning_:
    span: Span
    message: str
    sources: dict = field(default_factory=dict, compare=False)
    hint: str | None = None  # how to fix it, printed as "  hint: …"


# Output stays bounded whatever the user wrote: a line longer than LINE_LIMIT is shown as a
# window around the caret, and a message or hint longer than MESSAGE_LIMIT is cut (each
# quoting site also keeps its own quotes short with :func:`excerpt`).
LINE_LIMIT = 200
LINE_WINDOW = 160
MESSAGE_LIMIT = 2000


def excerpt(value, limit: int = 60) -> str:
    """A user's value as a message may quote it: its ``repr``, cut to ``limit`` characters
    with the length of the whole said.

    >>> excerpt("steps")
    "'steps'"
    >>> excerpt("x" * 1000, 10)
    "'xxxxxxxx… (1002 characters)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + f"… ({len(text)} characters)"


def _bounded(text: str) -> str:
    if len(text) <= MESSAGE_LIMIT:
        return text
    return text[: MESSAGE_LIMIT - 1] + f"… ({len(text)} characters)"


def _context(span: Span, source: str | None) -> list[str]:
    if source is None or span.line <= 0:
        return []
    lines = source.split("\n")  # as the parser counts lines: '\f', '\r', U+2028 do not end one
    if span.line > len(lines):
        return []
    text = lines[span.line - 1].rstrip("\r")
    col = span.column  # 1-based, in ``text``
    width = 1
    if span.end_line == span.line and span.end_column > span.column:
        width = span.end_column - span.column
    if len(text) > LINE_LIMIT:  # a window of the line around the caret, elisions marked
        start = max(0, min(col - 1 - LINE_WINDOW // 4, len(text) - LINE_WINDOW))
        end = start + LINE_WINDOW
        head, tail = ("…" if start > 0 else ""), ("…" if end < len(text) else "")
        col = col - start + len(head)
        text = head + text[start:end] + tail
    text = "".join(" " if ch in "\t\r\f\v" else ch for ch in text)
    width = max(1, min(width, len(text) - col + 1))
    gutter = f"{span.line:>4} | "
    return [gutter + text, " " * (len(gutter) + col - 1) + "^" + "~" * (width - 1)]


def format_message(
    severity: str,
    span: Span | None,
    message: str,
    source: str | None,
    hint: str | None = None,
    notes: tuple[Note, ...] = (),
) -> str:
    """``FILE:LINE:COL: severity: message``, the source line and a caret under the culprit."""
    message = _bounded(message)
    head = f"{span.where()}: {severity}: {message}" if span else f"{severity}: {message}"
    out = [head, *_context(span, source)] if span else [head]
    for note in notes:
        out.append(f"{note.span.where()}: note: {_bounded(note.message)}")
    if hint:
        out.append(f"  hint: {_bounded(hint)}")
    return "\n".join(out)


def format_diagnostic(err: DdmError, source: str | None = None) -> str:
    return format_message("error", err.span, err.message, source, err.hint, err.notes)
