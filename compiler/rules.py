"""Φ-rules: symbolic knowledge as soft, differentiable terms of the loss.

``rule NAME "intent" { when COND sharpness κ penalty P weight w }`` becomes ordinary program
text before checking — nodes and metrics the rest of the compiler already knows:

- ``rule_NAME_trigger`` = the relaxation of COND: ``a > b`` (or ``>=``) → σ(κ·(a − b)),
  ``a < b`` → σ(κ·(b − a)), ``p and q`` → p·q, ``p or q`` → 1 − (1 − p)(1 − q), ``not p`` → 1 − p;
  any other expression is taken as a trigger already in [0, 1] (a regime probability, say);
- ``rule_NAME_penalty`` = P, a per-sample scalar on decisions or params;
- ``rule_NAME_weight`` = w (times γ · memory, below), what curriculum sampling weighs by;
- ``rule_NAME_term`` = weight · trigger · penalty, and the loss (and every named loss) gains
  ``+ mean(rule_NAME_term)``;
- metrics ``rule_NAME_activation`` = mean(trigger) and ``rule_NAME_effective_penalty`` =
  mean(term): the audit trail, logged on every log step beside the rule's intent.

κ (default 10) and w (default 1) are numbers or params: a ``positive`` param makes them learned.

Memory (seed §7.3, "wₜ = γwₜ₋₁ + Δw"): ``decay γ`` (a number in (0, 1), or an expression of
params such as ``sigmoid(g)``, which is then learned: ∂L/∂g is part of the gradient) gives the
rule a state ``rule_NAME_memory`` (a param the optimiser never moves, 1 at the start). The term
becomes w · γ · memory · trigger · penalty, and after every training step the loop sets
memory ← γ · memory + Δ, where Δ = ``boost`` η times the saliency of the rule's features
(the inputs its trigger depends on): mean |∂L/∂x| over them relative to the mean over every
input.
Without reinforcement a rule fades as γᵗ; one whose features matter to the loss is kept alive.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddm.dsl import ast
from ddm.dsl.diagnostics import NameDiagnostic, ProblemDiagnostic
from ddm.dsl.span import Span

KEYS = ("when", "sharpness", "penalty", "weight", "decay", "boost")


@dataclass(frozen=True)
class RuleSugar:
    """What a rule became: its audit facts and the names of the declarations it introduced
    (the checker turns them into the value ids of :class:`~ddm.compiler.ir.RuleSpec`)."""

    name: str
    intent: str
    span: Span
    trigger: str  # nodes
    penalty: str
    weight: str
    term: str
    activation: str  # metrics
    effective_penalty: str
    memory: str | None = None  # the state param, when the rule decays
    decay: str | None = None  # the node holding γ, when the rule decays
    boost: float = 0.0  # η of the saliency reinforcement


def desugar(rule: ast.RuleDecl) -> tuple[list, list[ast.MetricDecl], RuleSugar]:
    """The params and nodes, and the metrics a rule stands for, and what it became."""
    entries = entries_of(
        rule,
        "rule",
        KEYS,
        ("when", "penalty"),
        'rule r "intent" { when x > 1.0 penalty sum(w ** 2) }',
    )
    span = rule.span
    kappa = entries["sharpness"].value if "sharpness" in entries else number(10.0, span)
    weight = entries["weight"].value if "weight" in entries else number(1.0, span)
    base = f"rule_{rule.name}"
    trigger = relax(entries["when"].value, kappa)
    extra: list = []
    memory, boost = None, 0.0
    if "boost" in entries:
        b = entries["boost"].value
        if not isinstance(b, ast.Number) or b.value < 0:
            raise ProblemDiagnostic(
                b.span,
                "a rule's boost is a number >= 0",
                hint="boost 0.1: memory gains 0.1 × the features' saliency",
            )
        if "decay" not in entries:
            raise ProblemDiagnostic(
                entries["boost"].span,
                f"rule '{rule.name}' boosts its "
                "memory but never lets it decay, so it would grow without "
                "bound",
                hint="add: decay 0.99 (or decay sigmoid(g) to learn it)",
            )
        boost = float(b.value)
    if "decay" in entries:
        d = entries["decay"]
        literal = (
            d.value.value
            if isinstance(d.value, ast.Number)
            else (
                -d.value.operand.value
                if isinstance(d.value, ast.UnaryOp)
                and d.value.op == "-"
                and isinstance(d.value.operand, ast.Number)
                else None
            )
        )
        if literal is not None and not 0 < literal < 1:
            raise ProblemDiagnostic(
                d.value.span,
                "a rule's decay γ is in (0, 1)",
                hint="decay 0.99, or decay sigmoid(g) with param g learned",
            )
        memory = f"{base}_memory"
        scalar_t = ast.TypeExpr("f32", (), d.span)
        extra = [
            ast.ParamDecl(memory, scalar_t, number(1.0, d.span), False, d.span, rule.name_span),
            ast.NodeDecl("node", f"{base}_decay", scalar_t, d.value, d.span, rule.name_span),
        ]
        kept = ast.BinOp(
            "*",
            ast.Name(f"{base}_decay", span),
            call("stop_gradient", span, ast.Name(memory, span)),
            span,
        )
        weight = ast.BinOp("*", weight, kept, span)
    extra.append(ast.NodeDecl("node", f"{base}_weight", None, weight, span, rule.name_span))
    term = ast.BinOp(
        "*",
        ast.BinOp("*", ast.Name(f"{base}_weight", span), ast.Name(f"{base}_trigger", span), span),
        ast.Name(f"{base}_penalty", span),
        span,
    )
    # trigger and penalty are one number per sample: the annotation makes the checker say so
    scalar = {k: ast.TypeExpr("f32", (), entries[k].value.span) for k in ("when", "penalty")}
    nodes = [
        ast.NodeDecl(
            "node", f"{base}_trigger", scalar["when"], trigger, entries["when"].span, rule.name_span
        ),
        ast.NodeDecl(
            "node",
            f"{base}_penalty",
            scalar["penalty"],
            entries["penalty"].value,
            entries["penalty"].span,
            rule.name_span,
        ),
        ast.NodeDecl("node", f"{base}_term", None, term, span, rule.name_span),
    ]
    metrics = [
        ast.MetricDecl(
            f"{base}_activation", mean_of(f"{base}_trigger", span), span, rule.name_span
        ),
        ast.MetricDecl(
            f"{base}_effective_penalty", mean_of(f"{base}_term", span), span, rule.name_span
        ),
    ]
    sugar = RuleSugar(
        rule.name,
        rule.intent or rule.name,
        rule.span,
        f"{base}_trigger",
        f"{base}_penalty",
        f"{base}_weight",
        f"{base}_term",
        f"{base}_activation",
        f"{base}_effective_penalty",
        memory,
        f"{base}_decay" if memory else None,
        boost,
    )
    return extra + nodes, metrics, sugar


def entries_of(decl, kind: str, keys, required, example: str) -> dict:
    """A rule's or guard's ``key value`` entries by key: each known, none twice, the required
    ones present — or a located error."""
    entries: dict[str, ast.RuleEntry] = {}
    for e in decl.entries:
        if e.key not in keys:
            raise NameDiagnostic(
                e.span,
                f"{kind} '{decl.name}' has no entry '{e.key}'",
                hint="entries: " + ", ".join(keys),
            )
        if e.key in entries:
            raise NameDiagnostic(e.span, f"'{e.key}' is given twice in {kind} '{decl.name}'")
        entries[e.key] = e
    for key in required:
        if key not in entries:
            raise NameDiagnostic(
                decl.name_span, f"{kind} '{decl.name}' needs '{key}'", hint=example
            )
    return entries


def add_terms(loss: ast.LossDecl, terms: list[str]) -> ast.LossDecl:
    """``loss`` plus ``mean(term)`` for every rule."""
    value = loss.value
    for t in terms:
        value = ast.BinOp("+", value, mean_of(t, loss.span), loss.span)
    return ast.LossDecl(value, loss.span, loss.name, loss.name_span)


def relax(cond: ast.Expr, kappa: ast.Expr) -> ast.Expr:
    """A condition's smooth relaxation in [0, 1] (see the module docstring). A chain
    ``c1 and c2 and …`` is followed along its left spine by a loop (it may be long)."""
    spine = []
    while isinstance(cond, ast.BinOp) and cond.op in ("and", "or"):
        spine.append(cond)
        cond = cond.left
    out = _relax_one(cond, kappa)
    for node in reversed(spine):
        span, right = node.span, relax(node.right, kappa)
        if node.op == "and":
            out = ast.BinOp("*", out, right, span)
            continue
        one = number(1.0, span)
        miss = ast.BinOp(
            "*", ast.BinOp("-", one, out, span), ast.BinOp("-", one, right, span), span
        )
        out = ast.BinOp("-", one, miss, span)
    return out


def _relax_one(cond: ast.Expr, kappa: ast.Expr) -> ast.Expr:
    """The relaxation of a comparison or a ``not``; any other condition is its own."""
    span = cond.span
    if isinstance(cond, ast.BinOp) and cond.op in (">", ">=", "<", "<="):
        a, b = (cond.left, cond.right) if cond.op in (">", ">=") else (cond.right, cond.left)
        diff = ast.BinOp("-", a, b, span)
        return ast.Call(ast.Name("sigmoid", span), (ast.BinOp("*", kappa, diff, span),), (), span)
    if isinstance(cond, ast.BinOp) and cond.op in ("==", "!="):
        raise ProblemDiagnostic(
            cond.op_span,
            f"'{cond.op}' has no smooth relaxation",
            hint="compare with <, <=, > or >=",
        )
    if isinstance(cond, ast.UnaryOp) and cond.op == "not":
        return ast.BinOp("-", number(1.0, span), relax(cond.operand, kappa), span)
    return cond


# the small pieces of program text a desugaring writes (shared with compiler/guards.py)
def call(name: str, span, *args) -> ast.Call:
    return ast.Call(ast.Name(name, span), tuple(args), (), span)


def number(x: float, span) -> ast.Number:
    return ast.Number(x, repr(x), span)


def mean_of(name: str, span) -> ast.Call:
    return call("mean", span, ast.Name(name, span))
