"""Φ-rules: symbolic knowledge as soft, differentiable terms of the loss.

``rule NAME "intent" { when COND sharpness κ penalty P weight w }`` becomes ordinary program
text before checking — nodes and metrics the rest of the compiler already knows:

- ``rule_NAME_trigger`` = the relaxation of COND: ``a > b`` (or ``>=``) → σ(κ·(a − b)),
  ``a < b`` → σ(κ·(b − a)), ``p and q`` → p·q, ``p or q`` → 1 − (1 − p)(1 − q), ``not p`` → 1 − p;
  any other expression is taken as a trigger already in [0, 1] (a regime probability, say);
- ``rule_NAME_penalty`` = P, a per-sample scalar on decisions or params;
- ``rule_NAME_term`` = w · trigger · penalty, and the loss (and every named loss) gains
  ``+ mean(rule_NAME_term)``;
- metrics ``rule_NAME_activation`` = mean(trigger) and ``rule_NAME_effective_penalty`` =
  mean(term): the audit trail, logged on every log step beside the rule's intent.

κ (default 10) and w (default 1) are numbers or params: a ``positive`` param makes them learned.
"""
from __future__ import annotations

from dataclasses import dataclass

from ddm.dsl import ast
from ddm.dsl.diagnostics import NameDiagnostic, ProblemDiagnostic
from ddm.dsl.span import Span

KEYS = ("when", "sharpness", "penalty", "weight")


@dataclass(frozen=True)
class RuleInfo:
    name: str
    intent: str
    span: Span


def desugar(rule: ast.RuleDecl) -> tuple[list[ast.NodeDecl], list[ast.MetricDecl], str]:
    """The nodes and metrics a rule stands for, and the name of its loss term node."""
    entries: dict[str, ast.RuleEntry] = {}
    for e in rule.entries:
        if e.key not in KEYS:
            raise NameDiagnostic(e.span, f"rule '{rule.name}' has no entry '{e.key}'",
                                 hint="entries: " + ", ".join(KEYS))
        if e.key in entries:
            raise NameDiagnostic(e.span, f"'{e.key}' is given twice in rule '{rule.name}'")
        entries[e.key] = e
    for key in ("when", "penalty"):
        if key not in entries:
            raise NameDiagnostic(rule.name_span, f"rule '{rule.name}' needs '{key}'",
                                 hint='rule r "intent" { when x > 1.0 penalty sum(w ** 2) }')
    span = rule.span
    kappa = entries["sharpness"].value if "sharpness" in entries else _num(10.0, span)
    weight = entries["weight"].value if "weight" in entries else _num(1.0, span)
    base = f"rule_{rule.name}"
    trigger = relax(entries["when"].value, kappa)
    term = ast.BinOp("*", ast.BinOp("*", weight, ast.Name(f"{base}_trigger", span), span),
                     ast.Name(f"{base}_penalty", span), span)
    # trigger and penalty are one number per sample: the annotation makes the checker say so
    scalar = {k: ast.TypeExpr("f32", (), entries[k].value.span) for k in ("when", "penalty")}
    nodes = [ast.NodeDecl("node", f"{base}_trigger", scalar["when"], trigger,
                          entries["when"].span, rule.name_span),
             ast.NodeDecl("node", f"{base}_penalty", scalar["penalty"], entries["penalty"].value,
                          entries["penalty"].span, rule.name_span),
             ast.NodeDecl("node", f"{base}_term", None, term, span, rule.name_span)]
    metrics = [ast.MetricDecl(f"{base}_activation", _mean(f"{base}_trigger", span), span,
                              rule.name_span),
               ast.MetricDecl(f"{base}_effective_penalty", _mean(f"{base}_term", span), span,
                              rule.name_span)]
    return nodes, metrics, f"{base}_term"


def add_terms(loss: ast.LossDecl, terms: list[str]) -> ast.LossDecl:
    """``loss`` plus ``mean(term)`` for every rule."""
    value = loss.value
    for t in terms:
        value = ast.BinOp("+", value, _mean(t, loss.span), loss.span)
    return ast.LossDecl(value, loss.span, loss.name, loss.name_span)


def relax(cond, kappa):
    """A condition's smooth relaxation in [0, 1] (see the module docstring)."""
    span = getattr(cond, "span", None)
    if isinstance(cond, ast.BinOp) and cond.op in (">", ">=", "<", "<="):
        a, b = (cond.left, cond.right) if cond.op in (">", ">=") else (cond.right, cond.left)
        diff = ast.BinOp("-", a, b, span)
        return ast.Call(ast.Name("sigmoid", span), (ast.BinOp("*", kappa, diff, span),), (),
                        span)
    if isinstance(cond, ast.BinOp) and cond.op in ("==", "!="):
        raise ProblemDiagnostic(cond.op_span, f"'{cond.op}' has no smooth relaxation",
                                hint="compare with <, <=, > or >=")
    if isinstance(cond, ast.BinOp) and cond.op == "and":
        return ast.BinOp("*", relax(cond.left, kappa), relax(cond.right, kappa), span)
    if isinstance(cond, ast.BinOp) and cond.op == "or":
        one = _num(1.0, span)
        miss = ast.BinOp("*", ast.BinOp("-", one, relax(cond.left, kappa), span),
                         ast.BinOp("-", one, relax(cond.right, kappa), span), span)
        return ast.BinOp("-", one, miss, span)
    if isinstance(cond, ast.UnaryOp) and cond.op == "not":
        return ast.BinOp("-", _num(1.0, span), relax(cond.operand, kappa), span)
    return cond


def _num(x: float, span) -> ast.Number:
    return ast.Number(x, repr(x), span)


def _mean(name: str, span) -> ast.Call:
    return ast.Call(ast.Name("mean", span), (ast.Name(name, span),), (), span)
