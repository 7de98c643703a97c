"""Φ-rules and guardrails become ordinary program text: the pass between parsing and name
resolution. Entry point: :func:`desugar`.

A ``rule`` turns into params, nodes and metrics and adds its term to every loss
(:mod:`ddm.compiler.rules`); a ``guard`` turns into nodes and metrics and replaces the
declaration of the node it guards by the enforced value (:mod:`ddm.compiler.guards`). What
each became is returned beside the module — :class:`~ddm.compiler.rules.RuleSugar` and
:class:`~ddm.compiler.guards.GuardSugar`, naming the declarations they introduced — so that the
checker can hand the runtime typed specs by value id, and no later phase rebuilds a name.

>>> from ddm.dsl.parser import parse
>>> d = desugar(parse('''
... input x: f32
... node w = 2 * x
... loss = mean(w ** 2)
... rule small "keep w small" { when x > 1.0 penalty w ** 2 }
... ''', "<doc>"))
>>> [type(i).__name__ for i in d.module.items][:4], d.rules[0].trigger
(['InputDecl', 'NodeDecl', 'LossDecl', 'NodeDecl'], 'rule_small_trigger')
>>> d.task_loss is not None and d.module.items[2] != d.task_loss   # the loss gained the term
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ddm.compiler import guards as guard_sugar
from ddm.compiler import rules as rule_sugar
from ddm.compiler.guards import GuardSugar
from ddm.compiler.rules import RuleSugar
from ddm.dsl import ast
from ddm.dsl.diagnostics import NameDiagnostic, Note


@dataclass(frozen=True)
class Desugared:
    """A module without ``rule`` and ``guard`` declarations, and what they became.

    ``task_loss`` / ``task_named``: the losses as written, before the rules' terms were added
    (the "pure DP" losses of ``rules = off``); equal to the losses when there are no rules."""

    module: ast.Module
    rules: tuple[RuleSugar, ...] = ()
    guards: tuple[GuardSugar, ...] = ()
    task_loss: ast.LossDecl | None = None
    task_named: dict[str, ast.LossDecl] = field(default_factory=dict)


def desugar(module: ast.Module) -> Desugared:
    """Rewrite ``module``'s rules and guards into plain declarations (see the module doc)."""
    items: list = []
    rules: list[RuleSugar] = []
    guard_decls: list[ast.GuardDecl] = []
    for item in module.items:
        if isinstance(item, ast.RuleDecl):
            decls, metrics, sugar = rule_sugar.desugar(item)
            items += decls + metrics
            rules.append(sugar)
        elif isinstance(item, ast.GuardDecl):
            guard_decls.append(item)
        else:
            items.append(item)
    guards = _apply_guards(items, guard_decls)
    losses = [i for i in items if isinstance(i, ast.LossDecl)]
    task_loss = next((x for x in losses if x.name is None), None)
    task_named = {x.name: x for x in losses if x.name is not None}
    if rules:
        if not losses:
            first = rules[0]
            raise NameDiagnostic(
                first.span,
                f"rule '{first.name}' adds a term to the loss, and the program has none",
                hint="declare one: loss = ...",
            )
        terms = [r.term for r in rules]
        items = [
            rule_sugar.add_terms(i, terms) if isinstance(i, ast.LossDecl) else i for i in items
        ]
    return Desugared(
        replace(module, items=tuple(items)), tuple(rules), tuple(guards), task_loss, task_named
    )


def _apply_guards(items: list, decls: list[ast.GuardDecl]) -> list[GuardSugar]:
    """Each guard's nodes and metrics (appended to ``items``); the guarded node's declaration
    becomes the enforced value, in place. Guards on one node chain in program order."""
    seen: dict[str, ast.GuardDecl] = {}
    out: list[GuardSugar] = []
    for g in decls:
        if g.name in seen:
            raise NameDiagnostic(
                g.name_span,
                f"guard '{g.name}' is declared twice",
                notes=(Note(seen[g.name].name_span, "first declared here"),),
            )
        seen[g.name] = g
        at = next(
            (k for k, i in enumerate(items) if isinstance(i, ast.NodeDecl) and i.name == g.target),
            None,
        )
        if at is None:
            kind = next(
                (
                    "an input" if isinstance(i, ast.InputDecl) else "a param"
                    for i in items
                    if isinstance(i, (ast.InputDecl, ast.ParamDecl)) and i.name == g.target
                ),
                None,
            )
            what = f"'{g.target}' is {kind}" if kind else f"there is no node '{g.target}'"
            raise NameDiagnostic(
                g.target_span,
                f"guard '{g.name}' is on '{g.target}', but "
                f"{what}: a guard limits a decision, a node of the program",
                hint=f"guard the node that makes the decision: guard {g.name} on NODE {{ … }}",
            )
        target = items[at]
        if isinstance(target.value, ast.Scan):
            raise NameDiagnostic(
                g.target_span,
                f"guard '{g.name}' is on '{g.target}', a scan: "
                "its steps read their own carry, which a guard on the whole "
                "path would not reach",
                hint="limit the step's decision inside the body instead (e.g. "
                "clip(...) or an argmin with bounds), or guard a node "
                "computed from the path",
            )
        nodes, metrics, sugar = guard_sugar.desugar(g, target)
        items[at] = nodes[-1]
        items += nodes[:-1] + metrics
        out.append(sugar)
    return out
