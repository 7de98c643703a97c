"""Declarative nodes: checking ``argmin``/``argmax`` and recognising the problem's class.

The checker hands an :class:`~ddm.dsl.ast.Argmin` to :func:`check_argmin`. Its objective and
constraints are checked like any expression, with the decision variable as a local ``decision``
value; the values they create form the problem's *body* (contiguous ids in the IR). The result is
one IR value of kind ``declarative`` whose inputs are the outer values the problem captures, and
whose ``problem`` attribute is a :class:`Problem`: what lowering needs to build and solve it.

Class recognition is structural, over the body, in the decision variable ``v``:

- every value has a *degree* in ``v``: constant, affine, quadratic, smooth, nonsmooth;
- the objective is split into signed *terms* (through ``+``, ``-`` and constant factors);
- a quadratic term must be a known-convex atom (``quad(a, M)``, ``sum(a ** 2)``, ``dot(a, a)``,
  ``norm(a) ** 2`` with ``a`` affine) times a constant whose sign is non-negative or unknown
  (then checked at run time); a nonsmooth term must be an L1 term ``λ * sum(abs(v - c))``;
- constraints must be affine; bounds on ``v`` and ``sum(v) == r`` are recognised by form.

Then: quadratic + equalities → class 1 (``kkt``); quadratic + inequalities → class 2 (``ipm``);
smooth + equalities → class 3 (``newton``); an L1 term, or a smooth objective with bounds or a
simplex → class 4 (``prox``). Anything else is a :class:`ProblemDiagnostic` at the culprit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddm.compiler.scope import Checker, Scope, int_literal, num_literal, span_of
from ddm.dsl import ast
from ddm.dsl.diagnostics import (
    ArityDiagnostic,
    DtypeDiagnostic,
    Note,
    ProblemDiagnostic,
    ShapeDiagnostic,
)
from ddm.dsl.span import Span
from ddm.library.types import TensorType

# degrees of a value in the decision variable, ordered
CONST, AFFINE, QUADRATIC, SMOOTH, NONSMOOTH = range(5)
DEGREE_NAMES = ("constant", "affine", "quadratic", "smooth", "nonsmooth")

# solver → the classes it solves (newton solves a class 1 problem in one step; the interior
# point needs inequalities: without them its first step is the KKT solve)
SOLVERS = {"kkt": (1,), "ipm": (2,), "newton": (1, 3), "prox": (4,)}
DEFAULT_SOLVER = {1: "kkt", 2: "ipm", 3: "newton", 4: "prox"}
CLASS_NAMES = {
    1: "quadratic objective, linear equalities",
    2: "quadratic objective, linear inequalities",
    3: "smooth objective, linear equalities",
    4: "smooth objective with an L1 term, bounds or a simplex",
}
OPTIONS = {
    "tol": "float",
    "max_iter": "int",
    "dtype": ("f32", "f64"),
    "on_infeasible": ("error", "nan", "closest"),
    "matrix_free": "bool",
}
BACKWARD = ("implicit", "unroll", "truncated")

# ops linear in every tensor argument (each argument's degree passes through)
_LINEAR = {
    "neg",
    "identity",
    "sum",
    "mean",
    "transpose",
    "reshape",
    "flatten",
    "concat",
    "stack",
    "index",
    "add",
    "sub",
    "cumsum",
    "trace",
    "diag",
    "f32",
    "f64",
}
# ops linear in one argument when the others are constant
_BILINEAR = {"mul", "matmul", "dot", "outer"}
_NONSMOOTH = {"abs", "relu", "maximum", "minimum", "max", "min", "clip", "sign", "norm", "where"}
_NOT_DIFFERENTIABLE = {
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_and",
    "logical_or",
    "logical_not",
    "i32",
    "bool",
    "sign",
}


@dataclass(frozen=True)
class Term:
    """One signed term of the objective: ``sign * Π coefs * value``.

    ``kind``: const | affine | quad | sumsq | smooth | l1. For quad/sumsq ``arg`` is the affine
    argument (``identity``: its Jacobian in v is ±I) and ``matrix`` the constant matrix of quad;
    for l1 ``arg`` is v itself and ``center`` the constant c of ``abs(v - c)`` (or None) with
    ``center_sign``.
    """

    sign: float
    coefs: tuple[tuple[int, bool], ...]  # (value id, divides)
    value: int
    kind: str
    arg: int | None = None
    matrix: int | None = None
    identity: bool = False
    center: int | None = None
    center_sign: float = 1.0
    scale: float = 1.0  # mean(a ** 2) = sum(a ** 2) / size
    span: Span | None = None


@dataclass(frozen=True)
class Constraint:
    """``g == 0`` (op "==") or ``g <= 0`` (op "<="), g = lhs − rhs normalised; ``form`` is
    general | lower | upper | sum (``v >= lo``, ``v <= hi``, ``sum(v) == r``) with ``bound``
    the constant side."""

    op: str
    value: int
    form: str
    bound: int | None
    span: Span


@dataclass(frozen=True)
class Problem:
    sense: str
    var: int
    var_name: str
    var_type: TensorType
    objective: int
    terms: tuple[Term, ...]
    constraints: tuple[Constraint, ...]
    body: tuple[int, int]  # value ids [start, end)
    klass: int
    solver: str
    tol: float | None
    max_iter: int | None
    dtype: str | None
    on_infeasible: str
    matrix_free: bool | None
    backward: str
    steps: int
    backward_by: str  # "user" or "compiler"
    reason: str  # why the compiler chose the backward mode, when it did
    curvature: str  # "convex" (by structure) | "checked at run time" | "unknown"
    # solver prox on ½L‖v‖² + (linear) + g(v), L > 0 by structure: one exact prox step
    # (:func:`_exact_step`), no iterations
    exact_step: bool = False

    @property
    def equalities(self) -> tuple[Constraint, ...]:
        return tuple(c for c in self.constraints if c.op == "==")

    @property
    def inequalities(self) -> tuple[Constraint, ...]:
        return tuple(c for c in self.constraints if c.op == "<=")

    @property
    def accepted(self) -> tuple[int, ...]:
        """Status codes that count as success. With ``backward unroll(k)`` the node's value is
        by definition the k-th iterate and its gradient is exactly that iterate's, so stopping
        at the iteration limit is what was asked for; in every other mode it is a failure.
        With ``on_infeasible="closest"`` the closest point of an infeasible instance is what
        was asked for too."""
        from ddm.library.solvers.status import CLOSEST, CONVERGED, MAX_ITER

        codes = (CONVERGED, MAX_ITER) if self.backward == "unroll" else (CONVERGED,)
        return codes + (CLOSEST,) if self.on_infeasible == "closest" else codes

    def describe(self) -> str:
        """One line for ``ddmc check`` and ``--emit ir``."""
        back = self.backward + (f"({self.steps})" if self.backward != "implicit" else "")
        solver = self.solver + (" (one exact step)" if self.exact_step else "")
        how = (
            "chosen by the compiler" + (f": {self.reason}" if self.reason else "")
            if self.backward_by == "compiler"
            else "as written"
        )
        cons = f"{len(self.equalities)} equality, {len(self.inequalities)} inequality constraint(s)"
        return (
            f"{self.sense} over {self.var_name}: {self.var_type} — class {self.klass} "
            f"({CLASS_NAMES[self.klass]}; {cons}; curvature {self.curvature}) → solver "
            f"{solver}, backward {back} ({how})"
        )

    def __repr__(self) -> str:  # the IR listing prints attributes
        return f"class {self.klass}/{self.solver}/{self.backward}"


# --- checking ----------------------------------------------------------------------------------


def check_argmin(ch: Checker, e: ast.Argmin, scope: Scope) -> int:

    if scope.context == "batch":
        raise ProblemDiagnostic(
            e.span,
            f"{e.sense} belongs in a node, not in loss or metric",
            hint="node w = argmin v: ... then use w here",
        )
    typ = ch.type_expr(e.var_type, scope.dims, generic=False)
    if typ.dtype not in ("f32", "f64"):
        raise DtypeDiagnostic(e.var_type.span, f"a decision variable is a float tensor, got {typ}")
    if typ.ndim > 2:
        raise ShapeDiagnostic(
            e.var_type.span, f"a decision variable is a scalar, vector or matrix, got {typ}"
        )
    start = len(ch.values)
    var = ch.add(
        "decision", "decision", (), (("name", e.var),), typ, e.var_span, scope, stage="static"
    )
    inner = scope.inner()
    inner.local[e.var] = var
    objective = ch.expr(e.objective, inner)
    ot = ch.type_of(objective)
    if ot.shape:
        raise ShapeDiagnostic(
            e.objective.span,
            f"the objective of {e.sense} must be a scalar, got {ot}",
            hint="reduce it, e.g. sum(...)",
        )
    if not ot.is_float and ot.dtype != "i32":
        raise DtypeDiagnostic(e.objective.span, f"the objective must be a number, got {ot}")
    raw = [(c, _constraint_sides(ch, c, inner)) for c in map(_comparison, e.constraints)]
    end = len(ch.values)
    body = set(range(start, end))
    captured = sorted({i for b in body for i in ch.values[b].inputs if i not in body})
    analysis = _Analysis(ch, var, body)
    for b in sorted(body):
        v = ch.values[b]
        if v.op == "layer":
            raise ProblemDiagnostic(
                v.span,
                "a layer cannot be called inside an optimisation problem",
                hint="compute the network's output in a node and use that node in the problem",
            )
    constraints = tuple(_constraint(ch, analysis, c, sides, var, e) for c, sides in raw)
    sign = 1.0 if e.sense == "argmin" else -1.0
    terms = tuple(analysis.terms(objective, sign, e))
    problem = _classify(ch, e, analysis, var, typ, objective, terms, constraints, (start, end))
    out_typ = TensorType(typ.dtype, typ.shape)
    return ch.add(
        "argmin", "declarative", captured, (("problem", problem),), out_typ, e.span, scope
    )


def _comparison(c: ast.Expr) -> ast.BinOp:
    """``c`` if it is a comparison, else the diagnostic for a constraint that is none."""
    if not (isinstance(c, ast.BinOp) and c.op in ("==", "<=", ">=", "<", ">")):
        raise ProblemDiagnostic(
            getattr(c, "span", None),
            "a constraint compares two expressions with ==, <= or >=",
            hint="e.g. sum(v) == 1, v >= 0",
        )
    return c


def _constraint_sides(ch, c: ast.BinOp, scope):
    if c.op in ("<", ">"):
        raise ProblemDiagnostic(
            c.op_span,
            f"strict inequality '{c.op}' in a constraint; optimisation needs closed sets",
            hint=f"use '{c.op}='",
        )
    left = ch.expr(c.left, scope)
    right = ch.expr(c.right, scope)
    for side, expr in ((left, c.left), (right, c.right)):
        t = ch.type_of(side)
        if not t.is_float and t.dtype != "i32":
            raise DtypeDiagnostic(expr.span, f"a constraint compares numbers, got {t}")
    # g = lhs − rhs, typed by the library's own subtraction (broadcasting, promotion)
    op = ch.ops["sub"]
    if c.op == ">=":
        g = ch.apply_op(op, [right, left], [c.right, c.left], {}, c.span, scope, c)
    else:
        g = ch.apply_op(op, [left, right], [c.left, c.right], {}, c.span, scope, c)
    return left, right, g


def _constraint(ch, an: "_Analysis", c: ast.BinOp, sides, var, e: ast.Argmin) -> Constraint:
    left, right, g = sides
    dl, dr = an.degree(left), an.degree(right)
    if max(dl, dr) == CONST:
        raise ProblemDiagnostic(
            c.span,
            f"this constraint does not involve the decision variable '{e.var}'",
            hint="constraints restrict the decision "
            "variable; move conditions on the data elsewhere",
        )
    for side, _expr, d in ((left, c.left, dl), (right, c.right, dr)):
        if d > AFFINE:
            culprit = an.culprit(side, AFFINE)
            raise ProblemDiagnostic(
                ch.values[culprit].span,
                f"constraints must be affine in "
                f"'{e.var}'; this is {DEGREE_NAMES[an.degree(culprit)]}",
                notes=(Note(c.span, "in this constraint"),),
                hint="only linear equalities and inequalities are supported",
            )
    op = "==" if c.op == "==" else "<="
    form, bound = "general", None
    vsize = ch.type_of(var).shape
    if c.op != "==":
        lower_var = (c.op == ">=" and left == var) or (c.op == "<=" and right == var)
        upper_var = (c.op == "<=" and left == var) or (c.op == ">=" and right == var)
        other = right if left == var else left
        if (
            (lower_var or upper_var)
            and an.degree(other) == CONST
            and _broadcasts_to(ch.type_of(other).shape, vsize)
        ):
            form, bound = ("lower" if lower_var else "upper"), other
    else:
        for a, b in ((left, right), (right, left)):
            v = ch.values[a]
            if (
                v.op == "sum"
                and v.inputs == (var,)
                and v.attr("axis") is None
                and an.degree(b) == CONST
                and not ch.type_of(b).shape
            ):
                form, bound = "sum", b
    return Constraint(op, g, form, bound, c.span)


def _broadcasts_to(shape, target) -> bool:
    return len(shape) <= len(target) and all(
        s == 1 or s == t for s, t in zip(reversed(shape), reversed(target))
    )


# --- structure ---------------------------------------------------------------------------------


class _Analysis:
    """Degrees of body values in the decision variable, and the objective's terms."""

    def __init__(self, ch, var: int, body: set[int]):
        self.ch = ch
        self.var = var
        self.body = body
        self._deg: dict[int, int] = {}

    def degree(self, vid: int) -> int:
        """``vid``'s degree in the decision variable. The values it depends on are visited
        depth first, inputs in order, by a loop (an objective of 10,000 terms is a chain
        that deep), each one's degree found by :meth:`_degree` once its inputs' are known."""
        stack = [(vid, False)]
        while stack:
            i, ready = stack.pop()
            if i in self._deg:
                continue
            if ready or i == self.var or i not in self.body:
                self._deg[i] = self._degree(i)
                continue
            stack.append((i, True))
            stack += [(j, False) for j in reversed(self.ch.values[i].inputs) if j not in self._deg]
        return self._deg[vid]

    def _degree(self, vid: int) -> int:
        v = self.ch.values[vid]
        if vid == self.var:
            d = AFFINE
        elif vid not in self.body:
            d = CONST
        else:
            ins = [self.degree(i) for i in v.inputs]
            top = max(ins, default=CONST)
            if top == CONST:
                d = CONST
            elif v.op in _NOT_DIFFERENTIABLE:
                raise ProblemDiagnostic(
                    v.span,
                    f"'{v.op}' is not differentiable in the decision variable",
                    hint="an objective or constraint must be a number that varies smoothly with it",
                )
            elif v.op in _LINEAR:
                d = top
            elif v.op in _BILINEAR:
                d = top if min(ins) == CONST else (QUADRATIC if top == AFFINE else max(top, SMOOTH))
            elif v.op == "div":
                d = ins[0] if ins[1] == CONST else max(top, SMOOTH)
            elif v.op == "quad":
                d = QUADRATIC if ins[0] == AFFINE and ins[1] == CONST else max(top, SMOOTH)
            elif v.op in ("pow", "square"):
                k = self.const_number(v.inputs[1]) if v.op == "pow" else 2
                if ins[-1] != CONST and v.op == "pow":
                    d = max(top, SMOOTH)
                elif k == 1:
                    d = ins[0]
                elif k == 2 and ins[0] == AFFINE:
                    d = QUADRATIC
                elif (
                    k == 2
                    and self.ch.values[v.inputs[0]].op == "norm"
                    and self.degree(self.ch.values[v.inputs[0]].inputs[0]) == AFFINE
                ):
                    d = QUADRATIC  # norm(a) ** 2 = sum(a ** 2)
                else:
                    d = max(top, SMOOTH)
            elif v.op in _NONSMOOTH:
                d = NONSMOOTH
            else:
                d = max(top, SMOOTH)
        return d

    def culprit(self, vid: int, limit: int) -> int:
        """The innermost value above degree ``limit`` whose inputs are all within it."""
        while True:
            over = [i for i in self.ch.values[vid].inputs if self.degree(i) > limit]
            if not over:
                return vid
            vid = over[0]

    def const_number(self, vid: int):
        v = self.ch.values[vid]
        if v.op == "const" and isinstance(v.attr("value"), (int, float)):
            return v.attr("value")
        return None

    # sign of a constant scalar: +1, -1, 0 (≥ 0), None (unknown)
    def sign(self, vid: int):
        v = self.ch.values[vid]
        if v.op == "const":
            x = v.attr("value")
            return None if not isinstance(x, (int, float)) else (1 if x > 0 else -1 if x < 0 else 0)
        if v.op == "param":
            return 1 if v.attr("positive") else None
        if v.op == "dim":
            return 1
        if v.op in ("exp", "softplus", "sigmoid", "norm_cdf"):
            return 1
        if v.op in ("abs", "square", "sqrt", "norm", "var", "std", "relu"):
            return 0
        if v.op in ("identity", "f32", "f64", "sum", "mean"):
            return self.sign(v.inputs[0])
        if v.op == "neg":
            s = self.sign(v.inputs[0])
            return None if s is None else (-s if s else 0)
        if v.op in ("mul", "div"):
            a, b = (self.sign(i) for i in v.inputs)
            if a is None or b is None:
                return None
            if a == 0 or b == 0:
                return 0 if (a >= 0 and b >= 0) else None
            return a * b
        if v.op == "add":
            a, b = (self.sign(i) for i in v.inputs)
            if a is not None and b is not None and a >= 0 and b >= 0:
                return max(a, b)
            return None
        if v.op == "pow":
            k = self.const_number(v.inputs[1])
            if isinstance(k, int) and k % 2 == 0:
                return 0
            return self.sign(v.inputs[0])
        return None

    def terms(self, vid: int, sign: float, e: ast.Argmin, coefs=()):
        """Split the objective into signed terms over +, −, unary − and constant factors
        (in source order; a loop, not recursion: a sum of 10,000 terms is a chain that deep)."""
        stack = [(vid, sign, coefs)]
        while stack:
            vid, sign, coefs = stack.pop()
            v = self.ch.values[vid]
            if self.degree(vid) == CONST:
                continue
            if v.op in ("add", "sub") and v.inputs[0] != v.inputs[1]:
                stack.append((v.inputs[1], -sign if v.op == "sub" else sign, coefs))
                stack.append((v.inputs[0], sign, coefs))
                continue
            if v.op in ("neg",):
                stack.append((v.inputs[0], -sign, coefs))
                continue
            if v.op == "identity":
                stack.append((v.inputs[0], sign, coefs))
                continue
            if v.op in ("mul", "div") and not self.ch.type_of(vid).shape:
                a, b = v.inputs
                if v.op == "mul" and self.degree(a) == CONST and not self.ch.type_of(a).shape:
                    stack.append((b, sign, coefs + ((a, False),)))
                    continue
                if self.degree(b) == CONST and not self.ch.type_of(b).shape:
                    stack.append((a, sign, coefs + ((b, v.op == "div"),)))
                    continue
            yield self.term(vid, sign, coefs, e)

    def term(self, vid: int, sign: float, coefs, e: ast.Argmin) -> Term:
        d = self.degree(vid)
        v = self.ch.values[vid]
        if d == AFFINE:
            return Term(sign, coefs, vid, "affine", span=v.span)
        if d == SMOOTH:
            return Term(sign, coefs, vid, "smooth", span=v.span)
        if d == QUADRATIC:
            return self.quadratic(vid, sign, coefs, e)
        return self.l1(vid, sign, coefs, e)

    def quadratic(self, vid, sign, coefs, e) -> Term:
        vals = self.ch.values
        v = vals[vid]
        span = v.span
        if v.op == "quad":
            a, m = v.inputs
            return Term(sign, coefs, vid, "quad", a, m, self.is_identity(a), span=span)
        scale = 1.0
        inner = vid
        if v.op in ("sum", "mean") and v.attr("axis") is None:
            inner = v.inputs[0]
            if v.op == "mean":
                n = _size(self.ch.type_of(inner).shape)
                scale = 1.0 / n if n else None  # a symbolic size is only known at run time
        iv = vals[inner]
        arg = None
        if iv.op == "pow" and self.const_number(iv.inputs[1]) == 2:
            arg = iv.inputs[0]
        elif iv.op == "square":
            arg = iv.inputs[0]
        elif iv.op in ("mul", "dot") and iv.inputs[0] == iv.inputs[1]:
            arg = iv.inputs[0]
        elif iv.op in ("mul", "dot", "matmul", "outer"):
            raise ProblemDiagnostic(
                iv.span,
                "non-convex quadratic: a product of two different "
                f"expressions in '{e.var}' is indefinite in general",
                hint=f"write a convex form: quad({e.var}, M), sum(a ** 2) or dot(a, a)",
            )
        if arg is not None and vals[arg].op == "norm":
            arg = vals[arg].inputs[0]  # norm(a) ** 2
        if arg is None or self.degree(arg) != AFFINE or scale is None:
            raise ProblemDiagnostic(
                span,
                f"ddm cannot tell that this quadratic in '{e.var}' is convex",
                hint=f"write it as quad({e.var}, M), sum(a ** 2), dot(a, a) or norm(a) ** 2",
            )
        return Term(
            sign, coefs, vid, "sumsq", arg, None, self.is_identity(arg), scale=scale, span=span
        )

    def l1(self, vid, sign, coefs, e) -> Term:
        vals = self.ch.values
        v = vals[vid]
        if v.op == "sum" and v.attr("axis") is None and vals[v.inputs[0]].op == "abs":
            a = vals[v.inputs[0]].inputs[0]
            center, csign = self.center(a)
            if a == self.var or center is not None:
                return Term(
                    sign, coefs, vid, "l1", a, center=center, center_sign=csign, span=v.span
                )
        culprit = self.culprit(vid, SMOOTH) if self.degree(vid) == NONSMOOTH else vid
        raise ProblemDiagnostic(
            vals[culprit].span,
            f"nonsmooth term in '{e.var}': ddm's "
            "proximal solver handles L1 terms of the decision variable, "
            f"λ * sum(abs({e.var} - c))",
            hint="smooth it (e.g. softplus) or rewrite it as an L1 term",
        )

    def center(self, a: int):
        """``v - c`` → (c, +1); ``c - v`` → (c, +1) (|c − v| = |v − c|); ``v + c`` → (c, −1)."""
        v = self.ch.values[a]
        if v.op in ("add", "sub") and self.var in v.inputs:
            other = v.inputs[1] if v.inputs[0] == self.var else v.inputs[0]
            if self.degree(other) == CONST and other != self.var:
                return other, (-1.0 if v.op == "add" else 1.0)
        return None, 1.0

    def is_identity(self, a: int) -> bool:
        """Is ``a`` = ±v + constant (Jacobian ±I, so quadratic forms need no Jacobian)?"""
        shape = self.ch.type_of(self.var).shape
        while a != self.var:
            v = self.ch.values[a]
            if v.op == "neg":
                a = v.inputs[0]
                continue
            if v.op in ("add", "sub") and self.ch.type_of(a).shape == shape:
                x, y = v.inputs
                if self.degree(y) == CONST:
                    a = x
                    continue
                if self.degree(x) == CONST:
                    a = y
                    continue
            return False
        return True


def _size(shape):
    n = 1
    for d in shape:
        if not isinstance(d, int):
            d = getattr(d, "value", None)
            if d is None:
                return None
        n *= d
    return n


# --- classification ----------------------------------------------------------------------------


def _classify(
    ch, e: ast.Argmin, an: _Analysis, var, typ, objective, terms, constraints, body
) -> Problem:
    l1 = [t for t in terms if t.kind == "l1"]
    smooth = [t for t in terms if t.kind == "smooth"]
    quads = [t for t in terms if t.kind in ("quad", "sumsq")]
    if len(l1) > 1:
        raise ProblemDiagnostic(
            l1[1].span,
            "more than one L1 term; combine them into one",
            hint=f"λ * sum(abs({e.var}))",
        )
    curvature = "convex"
    for t in quads + l1:
        direction = t.sign
        for c, _ in t.coefs:
            cs = an.sign(c)  # +1, 0 (≥ 0), -1 or None (unknown)
            direction = (
                None if cs is None or direction is None else direction * (-1.0 if cs == -1 else 1.0)
            )
        if direction is None:
            curvature = "checked at run time"
        elif direction < 0:
            what = "concave" if t.kind != "l1" else "a negative L1 weight"
            flip = "argmax" if e.sense == "argmin" else "argmin"
            raise ProblemDiagnostic(
                t.span,
                f"non-convex objective: this term is {what} in "
                f"'{e.var}' and the problem is an {e.sense}",
                hint=f"did you mean {flip}, or a + sign?",
            )
        if t.kind == "quad":
            curvature = "checked at run time"  # the definiteness of M is data
    if smooth:
        curvature = "unknown"
    ineqs = [c for c in constraints if c.op == "<="]
    top = max((an.degree(t.value) for t in terms if t.kind != "l1"), default=CONST)
    if l1 or (top == SMOOTH and ineqs):
        klass = 4
        _check_prox_constraints(ch, e, constraints)
    elif top == SMOOTH:
        klass = 3
    elif ineqs:
        klass = 2
    else:
        klass = 1
        if top < QUADRATIC:
            raise ProblemDiagnostic(
                e.objective.span,
                f"the objective is {DEGREE_NAMES[top]} in "
                f"'{e.var}' with no inequality constraints: the problem is "
                "unbounded or has no unique solution",
                hint=f"add a quadratic term, e.g. + 1e-3 * sum({e.var} ** 2)",
            )
    solver, opts = _options(ch, e, klass, constraints)
    if solver == "prox" and klass == 2:
        _check_prox_constraints(ch, e, constraints)
    backward, steps, by, reason = _backward(e, klass, solver, top, opts)
    return Problem(
        e.sense,
        var,
        e.var,
        typ,
        objective,
        terms,
        tuple(constraints),
        body,
        klass,
        solver,
        opts.get("tol"),
        opts.get("max_iter"),
        opts.get("dtype"),
        opts.get("on_infeasible", "error"),
        opts.get("matrix_free"),
        backward,
        steps,
        by,
        reason,
        curvature,
        _exact_step(an, solver, backward, terms),
    )


def _exact_step(an: "_Analysis", solver: str, backward: str, terms) -> bool:
    """Whether the proximal solver's problem is ½L‖v‖² + qᵀv + g(v) with L > 0 known from the
    program's structure: every term of degree two a sum of squares of ±v + c (a scaled squared
    distance, Hessian 2·coef·I) whose coefficients are positive by their types, nothing else
    but affine terms and the prox's g. Its minimiser is then prox_{g/L}(−q/L) — one
    proximal-gradient step of length 1/L from any point lands on it — so the node is solved
    by that step instead of iterations (``library/solvers/prox.py`` ``exact_step``).
    ``implicit`` only: ``unroll(k)``/``truncated(k)`` promise the iterations themselves."""
    if solver != "prox" or backward != "implicit":
        return False
    curved = [t for t in terms if t.kind in ("quad", "sumsq", "smooth")]
    if not curved:
        return False
    for t in curved:
        if t.kind != "sumsq" or not t.identity:
            return False
        direction = t.sign
        for c, _ in t.coefs:
            s = an.sign(c)  # 0 (≥ 0) or None: the coefficient may vanish or flip at run time
            if s not in (1, -1):
                return False
            direction *= s
        if direction <= 0:
            return False
    return True


def _check_prox_constraints(ch, e: ast.Argmin, constraints) -> None:
    forms = [c.form for c in constraints]
    for c in constraints:
        if c.form == "general":
            raise ProblemDiagnostic(
                c.span,
                "with an L1 term or a non-quadratic objective, ddm "
                "solves constraints that are bounds on "
                f"'{e.var}' ({e.var} >= lo, {e.var} <= hi) or a simplex "
                f"(sum({e.var}) == r with {e.var} >= 0); this one is "
                "general",
                hint="drop the L1 term (class 2 handles general "
                "constraints) or express the constraint as a bound",
            )
    if "sum" in forms:
        lowers = [c for c in constraints if c.form == "lower"]
        zero = [
            c
            for c in lowers
            if ch.values[c.bound].op == "const" and ch.values[c.bound].attr("value") == 0
        ]
        if len(forms) != 2 or len(zero) != 1:
            c = next(c for c in constraints if c.form == "sum")
            raise ProblemDiagnostic(
                c.span,
                f"the proximal solver takes sum({e.var}) == r only "
                f"as a simplex, together with exactly {e.var} >= 0",
                hint=f"add {e.var} >= 0 and no other constraint",
            )
    if forms.count("lower") > 1 or forms.count("upper") > 1:
        raise ProblemDiagnostic(
            constraints[-1].span,
            "give at most one lower and one upper "
            f"bound on '{e.var}' (combine them with maximum/minimum of the "
            "data)",
        )


def _options(ch, e: ast.Argmin, klass: int, constraints=()):

    hint = e.using
    if hint is None:
        return DEFAULT_SOLVER[klass], {}
    name = hint.name
    if name != "auto" and name not in SOLVERS:
        raise ProblemDiagnostic(
            hint.span, f"unknown solver '{name}'", hint="solvers: auto, " + ", ".join(SOLVERS)
        )
    # a quadratic with bounds only is also a smooth objective with bounds: the proximal
    # solver projects onto them exactly, far cheaper than an interior point on tiny problems
    bounds_only = klass == 2 and all(c.form in ("lower", "upper") for c in constraints)
    if name != "auto" and klass not in SOLVERS[name] and not (name == "prox" and bounds_only):
        fits = [s for s, ks in SOLVERS.items() if klass in ks]
        raise ProblemDiagnostic(
            hint.span,
            f"solver '{name}' does not solve this problem: it is "
            f"class {klass} ({CLASS_NAMES[klass]})",
            hint="use " + " or ".join(fits),
        )
    solver = DEFAULT_SOLVER[klass] if name == "auto" else name
    opts: dict = {}
    for kw in hint.options:
        kind = OPTIONS.get(kw.name)
        if kind is None:
            raise ArityDiagnostic(
                kw.span, f"unknown solver option '{kw.name}'", hint="options: " + ", ".join(OPTIONS)
            )
        if kw.name in opts:
            raise ArityDiagnostic(kw.span, f"option '{kw.name}' given twice")
        if kind == "float":
            x = num_literal(kw.value)
            if x is None or not x > 0:
                raise ArityDiagnostic(span_of(kw.value), f"'{kw.name}' must be a positive number")
            opts[kw.name] = float(x)
        elif kind == "int":
            x = int_literal(kw.value)
            if x is None or x <= 0:
                raise ArityDiagnostic(span_of(kw.value), f"'{kw.name}' must be a positive integer")
            opts[kw.name] = x
        elif kind == "bool":
            if not isinstance(kw.value, ast.Bool):
                raise ArityDiagnostic(span_of(kw.value), f"'{kw.name}' must be true or false")
            opts[kw.name] = kw.value.value
        else:
            if not isinstance(kw.value, ast.String) or kw.value.value not in kind:
                raise ArityDiagnostic(
                    span_of(kw.value),
                    f"'{kw.name}' must be one of " + ", ".join(f'"{k}"' for k in kind),
                )
            opts[kw.name] = kw.value.value
    if opts.get("on_infeasible") == "closest" and solver not in ("kkt", "ipm"):
        raise ProblemDiagnostic(
            hint.span,
            'on_infeasible="closest" applies to linearly '
            "constrained quadratic problems (classes 1 and 2, solvers kkt "
            "and ipm)",
        )
    return solver, opts


def _backward(e: ast.Argmin, klass, solver, top, opts):
    b = e.backward
    if b is None:
        if top <= AFFINE:
            # An LP's solution is a vertex, constant in the objective's coefficients between
            # switches: zero is its exact derivative in them. Unrolling a converged interior
            # point gives the same zero, so say so rather than pretend to smooth it.
            return (
                "implicit",
                0,
                "compiler",
                "the smooth part of the objective is linear in "
                f"'{e.var}', so the solution is piecewise constant in its coefficients and "
                "their gradients are zero almost everywhere (those in the constraints are "
                f"not); for informative ones add a quadratic term, e.g. + 1e-2 * "
                f"sum({e.var} ** 2)",
            )
        return "implicit", 0, "compiler", "the optimality conditions are well posed"
    if b.mode not in BACKWARD:
        raise ProblemDiagnostic(
            b.span,
            f"unknown backward mode '{b.mode}'",
            hint="backward implicit | unroll(k) | truncated(k)",
        )
    if b.mode == "implicit":
        if b.steps is not None:
            raise ProblemDiagnostic(b.span, "backward implicit takes no step count")
        return "implicit", 0, "user", ""
    if solver == "kkt":
        if b.mode == "truncated":
            raise ProblemDiagnostic(
                b.span,
                "a direct KKT solve has no iterations to truncate",
                hint="use backward implicit, or unroll (autodiff through the factorisation)",
            )
        return "unroll", b.steps or 1, "user", ""
    if not b.steps:
        raise ProblemDiagnostic(b.span, f"backward {b.mode} needs a number of steps: {b.mode}(20)")
    return b.mode, b.steps, "user", ""
