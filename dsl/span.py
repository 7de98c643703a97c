"""Source positions. Every AST and IR node carries a :class:`Span`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A range of source text: 1-based line and column of its first and last character.

    >>> Span("a.ddm", 3, 5, 3, 9).where()
    'a.ddm:3:5'
    """

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def where(self) -> str:
        if self.line <= 0:  # a whole file (missing, unreadable): no position to show
            return self.file
        return f"{self.file}:{self.line}:{self.column}"

    def to(self, other: "Span") -> "Span":
        """The span from the start of ``self`` to the end of ``other``."""
        return Span(self.file, self.line, self.column, other.end_line, other.end_column)


UNKNOWN = Span("<unknown>", 0, 0, 0, 0)
