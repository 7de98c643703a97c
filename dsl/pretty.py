"""Pretty printing to a width: a document of text, breaks, groups and indentation, laid out.

A :class:`Group` prints flat (each of its breaks as a space or as nothing) when that fits in
what is left of the line up to the next place the line could break after it; otherwise its own
breaks become newlines and each group inside it decides again. Layout is greedy, left to
right: Wadler's "A prettier printer", as Prettier's ``printDocToString`` implements it.

>>> items = Group(join((",", LINE), ["alpha", "beta", "gamma"]))
>>> doc = Group(("function(", Nest(4, (SOFT, items)), SOFT, ")"))
>>> layout(doc, 80)
'function(alpha, beta, gamma)'
>>> print(layout(doc, 24))
function(
    alpha, beta, gamma
)
>>> print(layout(doc, 12))
function(
    alpha,
    beta,
    gamma
)

Both passes are loops over an explicit stack: a document as deep as the longest chain the
parser accepts (``a + … + a``, 10,000 terms) needs no recursion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias, Union


@dataclass(frozen=True, slots=True)
class Break:
    """A place the line may end: ``flat`` (a space or nothing) when its group fits, else a
    newline followed by the current indentation."""

    flat: str


@dataclass(frozen=True, slots=True)
class Group:
    """Its breaks are all flat or all newlines (groups inside decide for themselves)."""

    doc: Doc


@dataclass(frozen=True, slots=True)
class Nest:
    """Lines started by breaks inside ``doc`` are indented ``indent`` more."""

    indent: int
    doc: Doc


# A tuple is its items one after another; a str never holds a newline.
Doc: TypeAlias = Union[str, Break, Group, Nest, "tuple[Doc, ...]"]

LINE = Break(" ")
SOFT = Break("")


def join(separator: Doc, items: Iterable[Doc]) -> tuple[Doc, ...]:
    """``items`` with ``separator`` between each two."""
    out: list[Doc] = []
    for item in items:
        if out:
            out.append(separator)
        out.append(item)
    return tuple(out)


def layout(doc: Doc, width: int, indent: int = 0) -> str:
    """``doc`` laid out in ``width`` columns, starting at column ``indent`` (which its own
    broken lines are indented by, plus their nesting). Text wider than the room is printed
    anyway: a line is only broken where the document has a :class:`Break`."""
    out: list[str] = []
    column = indent
    # Entries (indentation, flat, doc), the next one last.
    stack: list[tuple[int, bool, Doc]] = [(indent, False, doc)]
    while stack:
        ind, flat, d = stack.pop()
        if isinstance(d, str):
            out.append(d)
            column += len(d)
        elif isinstance(d, tuple):
            stack.extend((ind, flat, item) for item in reversed(d))
        elif isinstance(d, Nest):
            stack.append((ind + d.indent, flat, d.doc))
        elif isinstance(d, Group):
            stack.append((ind, flat or _fits(d.doc, width - column, stack), d.doc))
        elif flat:
            out.append(d.flat)
            column += len(d.flat)
        else:
            out.append("\n" + " " * ind)
            column = ind
    return "\n".join(line.rstrip() for line in "".join(out).split("\n"))


def flat(doc: Doc) -> str:
    """``doc`` on one line, every break flat."""
    out: list[str] = []
    stack: list[Doc] = [doc]
    while stack:
        d = stack.pop()
        if isinstance(d, str):
            out.append(d)
        elif isinstance(d, tuple):
            stack.extend(reversed(d))
        elif isinstance(d, (Nest, Group)):
            stack.append(d.doc)
        else:
            out.append(d.flat)
    return "".join(out)


def _fits(doc: Doc, room: int, rest: list[tuple[int, bool, Doc]]) -> bool:
    """Whether ``doc`` flat, and then what follows it up to its first possible line end,
    takes at most ``room`` columns. What follows is ``rest`` (a layout stack) in its own
    modes: a group there that is still undecided counts as broken, so its first break ends
    the line (the optimistic reading: that group may yet break there)."""
    todo: list[tuple[bool, Doc]] = [(True, doc)]
    below = len(rest)
    while room >= 0:
        if not todo:
            if not below:
                return True
            below -= 1
            todo.append((rest[below][1], rest[below][2]))
            continue
        is_flat, d = todo.pop()
        if isinstance(d, str):
            room -= len(d)
        elif isinstance(d, tuple):
            todo.extend((is_flat, item) for item in reversed(d))
        elif isinstance(d, (Nest, Group)):
            todo.append((is_flat, d.doc))
        elif is_flat:
            room -= len(d.flat)
        else:
            return True
    return False
