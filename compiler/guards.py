"""Guardrails: hard limits on decisions, enforced where the decision is made, and counted.

``guard NAME "intent" on X { limit LHS <= RHS  action project|reject  fallback F }`` becomes
program text before checking, like a Φ-rule, but it changes the decision instead of the loss:

- ``X_before_NAME`` = the value X had before this guard (X's own expression);
- ``guard_NAME_excess`` = how far that value breaks the limit (``guard_excess``: the largest
  LHS − RHS over the elements; ≤ 0 when it holds), ``guard_NAME_violated`` = 1.0 when it does;
- X itself becomes the enforced value, so everything downstream (simulator, loss, outputs)
  sees only decisions within the limit:

  - ``action project`` moves the decision to the nearest point that meets the limit. Limits
    with a known projection: ``X <= c``, ``X >= c``, ``abs(X) <= c``, ``abs(X - P) <= c``,
    ``sum(abs(X)) <= c``, ``sum(abs(X - P)) <= c`` (gross exposure, turnover against P),
    ``norm(X) <= c``, ``norm(X - P) <= c``, ``nonzero(X) <= k``, ``nonzero(X - P) <= k``
    (trade frequency, k an integer);
  - ``action reject`` keeps the decision when the limit holds and takes ``fallback`` (default
    0: no position) when it does not; any limit may be rejected, e.g. a loss limit on a value
    computed from X;

- ``guard_NAME_breached`` re-checks the limit on the value X finally has (after every guard on
  it): the compliance report's proof that enforcement worked;
- metrics ``guard_NAME_violation_rate`` and ``guard_NAME_breach_rate``.

Several guards on one node apply in program order. The training loop counts every check of
every step; ``--run`` writes the compliance report (``compliance.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace

from ddm.compiler.names import iter_names
from ddm.compiler.rules import call, entries_of, mean_of, number
from ddm.dsl import ast
from ddm.dsl.diagnostics import ProblemDiagnostic
from ddm.dsl.format import format_expr
from ddm.dsl.span import Span

KEYS = ("limit", "action", "fallback")
ACTIONS = ("project", "reject")
KNOWN = (
    "X <= c, X >= c, abs(X) <= c, abs(X - P) <= c, sum(abs(X)) <= c, "
    "sum(abs(X - P)) <= c, norm(X) <= c, norm(X - P) <= c, nonzero(X) <= k, "
    "nonzero(X - P) <= k"
)


@dataclass(frozen=True)
class GuardSugar:
    """What a guard became: its audit facts and the names of the declarations it introduced
    (the checker turns them into the value ids of :class:`~ddm.compiler.ir.GuardSpec`)."""

    name: str
    intent: str
    target: str
    limit: str  # the limit as written
    action: str
    span: Span
    violated: str  # nodes: 1.0 where the decision broke the limit before enforcement …
    breached: str  # … and where the enforced decision still breaks it
    violation_rate: str  # metrics
    breach_rate: str


def desugar(
    guard: ast.GuardDecl, target: ast.NodeDecl
) -> tuple[list[ast.NodeDecl], list[ast.MetricDecl], GuardSugar]:
    """The nodes and metrics a guard stands for; the last node is the target's new
    declaration (same name, type and span, enforced value)."""
    entries = entries_of(
        guard,
        "guard",
        KEYS,
        ("limit", "action"),
        f'guard g "intent" on {guard.target} {{ limit abs({guard.target}) <= 1.0 action project }}',
    )
    action_expr = entries["action"].value
    if not (isinstance(action_expr, ast.Name) and action_expr.id in ACTIONS):
        raise ProblemDiagnostic(
            action_expr.span,
            "a guard's action is 'project' or 'reject'",
            hint="project: move the decision onto the limit; reject: "
            "replace a breaking decision by the fallback",
        )
    action = action_expr.id
    if "fallback" in entries and action != "reject":
        raise ProblemDiagnostic(
            entries["fallback"].span,
            "only 'action reject' takes a fallback; a projection needs none",
        )
    limit = entries["limit"].value
    if not (isinstance(limit, ast.BinOp) and limit.op in ("<=", "<", ">=", ">")):
        raise ProblemDiagnostic(
            limit.span,
            "a guard's limit is a comparison: LHS <= RHS or LHS >= RHS",
            hint=f"e.g. limit abs({guard.target}) <= 1.0",
        )
    x = guard.target
    if _mentions(limit.right, x):
        raise ProblemDiagnostic(
            limit.right.span,
            f"the bound of guard '{guard.name}' depends on the decision '{x}'",
            hint=f"put '{x}' on the left: limit f({x}) <= bound",
        )
    if not _mentions(limit.left, x):
        raise ProblemDiagnostic(
            limit.left.span,
            f"the limit of guard '{guard.name}' does not mention the decision '{x}' it guards",
        )
    span = guard.span
    base = f"guard_{guard.name}"
    before = f"{x}_before_{guard.name}"
    upper = limit.op in ("<=", "<")
    lhs, bound = limit.left, limit.right

    def excess(value_name: str) -> ast.Call:
        left = _rename(lhs, x, value_name)
        a, b = (left, bound) if upper else (bound, left)
        return call("guard_excess", span, a, b)

    if action == "project":
        enforced = _projection(lhs, upper, bound, x, ast.Name(before, span), guard)
    else:
        fallback = entries["fallback"].value if "fallback" in entries else number(0.0, span)
        if _mentions(fallback, x):
            raise ProblemDiagnostic(
                fallback.span,
                f"the fallback of guard '{guard.name}' depends on the decision '{x}' it replaces",
            )
        enforced = call(
            "guard_reject",
            span,
            ast.Name(before, span),
            ast.Name(f"{base}_excess", span),
            bound,
            fallback,
        )
    scalar = ast.TypeExpr("f32", (), span)
    nodes = [
        ast.NodeDecl("node", before, target.type, target.value, target.span, guard.name_span),
        ast.NodeDecl("node", f"{base}_excess", None, excess(before), span, guard.name_span),
        ast.NodeDecl(
            "node",
            f"{base}_violated",
            scalar,
            call("guard_violated", span, ast.Name(f"{base}_excess", span), bound),
            span,
            guard.name_span,
        ),
        ast.NodeDecl("node", f"{base}_after", None, excess(x), span, guard.name_span),
        ast.NodeDecl(
            "node",
            f"{base}_breached",
            scalar,
            call("guard_violated", span, ast.Name(f"{base}_after", span), bound),
            span,
            guard.name_span,
        ),
        replace(target, value=enforced),
    ]
    metrics = [
        ast.MetricDecl(
            f"{base}_violation_rate", mean_of(f"{base}_violated", span), span, guard.name_span
        ),
        ast.MetricDecl(
            f"{base}_breach_rate", mean_of(f"{base}_breached", span), span, guard.name_span
        ),
    ]
    sugar = GuardSugar(
        guard.name,
        guard.intent or guard.name,
        x,
        format_expr(limit),
        action,
        guard.span,
        f"{base}_violated",
        f"{base}_breached",
        f"{base}_violation_rate",
        f"{base}_breach_rate",
    )
    return nodes, metrics, sugar


def _projection(lhs, upper: bool, bound, x: str, value: ast.Name, guard: ast.GuardDecl):
    """The nearest point of the limit's set, for the forms in ``KNOWN``."""
    span = lhs.span

    def is_x(e) -> bool:
        return isinstance(e, ast.Name) and e.id == x

    def offset(e):
        """``X`` → (None), ``X - P`` → P; anything else → False."""
        if is_x(e):
            return None
        if isinstance(e, ast.BinOp) and e.op == "-" and is_x(e.left) and not _mentions(e.right, x):
            return e.right
        return False

    def shifted(p, project):
        """P + project(value − P), or project(value) without P."""
        if p is None:
            return project(value)
        moved = project(ast.BinOp("-", value, p, span))
        return ast.BinOp("+", p, moved, span)

    if is_x(lhs):
        return call("minimum" if upper else "maximum", span, value, bound)
    outer = _plain_call(lhs)
    if upper and outer is not None:
        fname, (arg,) = outer
        if fname == "abs" and (p := offset(arg)) is not False:
            return shifted(p, lambda v: call("clip", span, v, ast.UnaryOp("-", bound, span), bound))
        if fname == "norm" and (p := offset(arg)) is not False:
            return shifted(p, lambda v: call("project_l2", span, v, bound))
        if fname == "nonzero" and (p := offset(arg)) is not False:
            if not (isinstance(bound, ast.Number) and isinstance(bound.value, int)):
                raise ProblemDiagnostic(
                    bound.span, "a trade-frequency limit nonzero(...) <= k takes an integer k"
                )
            return shifted(
                p,
                lambda v: ast.Call(
                    ast.Name("keep_largest", span), (v,), (ast.Keyword("k", bound, span),), span
                ),
            )
        inner = _plain_call(arg)
        if (
            fname == "sum"
            and inner is not None
            and inner[0] == "abs"
            and (p := offset(inner[1][0])) is not False
        ):
            return shifted(p, lambda v: call("project_l1", span, v, bound))
    raise ProblemDiagnostic(
        lhs.span,
        f"guard '{guard.name}' cannot project onto this limit",
        hint=f"projection knows {KNOWN.replace('X', x)}; any other limit "
        "takes 'action reject' (with a fallback)",
    )


def _plain_call(e):
    """(name, args) of ``f(a)`` with one positional argument and no keywords, else None."""
    if (
        isinstance(e, ast.Call)
        and isinstance(e.func, ast.Name)
        and len(e.args) == 1
        and not e.kwargs
    ):
        return e.func.id, e.args
    return None


def _mentions(e, name: str) -> bool:
    return any(n.id == name for n, _ in iter_names(e))


def _rename(e, old: str, new: str):
    """``e`` with every name ``old`` read as ``new`` (a limit is a plain expression: it binds
    no names of its own)."""
    if isinstance(e, ast.Name):
        return ast.Name(new, e.span) if e.id == old else e
    if isinstance(e, tuple):
        return tuple(_rename(x, old, new) for x in e)
    # ``type`` aside: the tree holds dataclass instances, never the classes themselves
    if is_dataclass(e) and not isinstance(e, (type, ast.TypeExpr, ast.DimRef, Span)):
        return replace(
            e, **{f.name: _rename(getattr(e, f.name), old, new) for f in fields(e) if f.init}
        )
    return e
