"""The ``run { }`` section as typed settings with spans: what the runtime's configuration reads.

The compiler only turns each entry's expression into a value — a number, a bool, a string, a
list, or a call with keyword values such as ``adam(lr=1e-3)`` (a bare name such as ``off`` is a
call without arguments) — and keeps where every part was written. Which keys and values are
valid is the runtime's business (``ddm.runtime.config``); a value the section cannot hold
(``steps = 10 * 2``) becomes :class:`Invalid`, reported by the runtime at its span when a run
reads it — ``ddmc check`` accepts the program.

>>> from ddm.dsl.parser import parse
>>> module = parse("run { steps = 100 optimizer = adam(lr=3e-4) rules = off }", "<doc>")
>>> s = settings_of(module.items[0])
>>> [(e.key, e.value) for e in s.entries]  # doctest: +NORMALIZE_WHITESPACE
[('steps', 100), ('optimizer', Call(name='adam', kwargs=(Keyword(name='lr', value=0.0003),))),
 ('rules', Call(name='off', kwargs=()))]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ddm.dsl import ast
from ddm.dsl.span import UNKNOWN, Span


@dataclass(frozen=True, slots=True)
class Invalid:
    """A value the run section cannot hold, and why; reported at ``span`` when it is read."""

    message: str
    span: Span = field(default=UNKNOWN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Keyword:
    name: str
    value: "SettingValue"
    span: Span = field(default=UNKNOWN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Call:
    """``adam(lr=1e-3)``, or a bare name (``off``) with no keywords."""

    name: str
    kwargs: tuple[Keyword, ...] = ()
    span: Span = field(default=UNKNOWN, compare=False, repr=False)


SettingValue = Union[int, float, bool, str, tuple, Call, Invalid]


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    value: SettingValue
    span: Span = field(default=UNKNOWN, compare=False, repr=False)  # the whole entry
    value_span: Span = field(default=UNKNOWN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RunSettings:
    entries: tuple[Setting, ...]
    span: Span = field(default=UNKNOWN, compare=False, repr=False)


def settings_of(run: ast.RunDecl) -> RunSettings:
    """The typed settings of a parsed ``run { }`` section."""
    return RunSettings(
        tuple(
            Setting(e.key, _value(e.value), e.span, getattr(e.value, "span", e.span))
            for e in run.entries
        ),
        run.span,
    )


def _value(e) -> SettingValue:
    if isinstance(e, ast.Bool):  # before Number: a bool is no number here
        return e.value
    if isinstance(e, ast.Number):
        return e.value
    if isinstance(e, ast.UnaryOp) and e.op == "-" and isinstance(e.operand, ast.Number):
        return -e.operand.value
    if isinstance(e, ast.String):
        return e.value
    if isinstance(e, ast.Name):
        return Call(e.id, (), e.span)
    if isinstance(e, ast.ListExpr):
        return tuple(_value(item) for item in e.items)
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Name):
        if e.args:
            return Invalid(
                f"run settings take keyword arguments only: {e.func.id}(key=value)",
                getattr(e.args[0], "span", e.span),
            )
        return Call(
            e.func.id, tuple(Keyword(k.name, _value(k.value), k.span) for k in e.kwargs), e.span
        )
    return Invalid(
        "a run setting is a literal or a call such as adam(lr=1e-3)", getattr(e, "span", UNKNOWN)
    )
