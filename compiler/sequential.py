"""Sequential nodes: checking ``scan`` — a sub-graph run once per step with a carried state.

``scan t in N, c: T = init { let … return new_c }`` is checked like an argmin: the step index
``t`` (an ``i32`` scalar) and the carry ``c`` (type ``T``) become local placeholder values, the
body's values are checked in that scope and form the scan's *body* (contiguous ids in the IR), and
the result is one IR value of kind ``sequential`` typed ``T`` with a leading ``N`` axis: the carry
after every step. Its inputs are ``init`` followed by the outer values the body captures; its
``scan`` attribute is a :class:`ScanSpec`, what lowering needs to build the ``lax.scan``.

The body may call layers and fns and contain argmin nodes (a policy with a projection, say);
their solver infos come out of the scan stacked over steps.

>>> from ddm.compiler.driver import front_end
>>> g, _ = front_end("dim N = 3 input x: f32[N] node c = scan t in N, s: f32 = 0.0 { s + x[t] }",
...                  "<doc>")
>>> str(g.values[g.nodes["c"]].type)
'f32[N]'
"""

from __future__ import annotations

from dataclasses import dataclass

from ddm.compiler.scope import Checker, Scope
from ddm.dsl import ast
from ddm.dsl.diagnostics import DtypeDiagnostic, NameDiagnostic, Note, ShapeDiagnostic
from ddm.dsl.span import Span
from ddm.library.types import Dim, SymDim, TensorType


@dataclass(frozen=True)
class ScanSpec:
    """A scan's body, placeholders and length, as lowering needs them."""

    length: Dim  # steps: an int or a SymDim bound by the data
    index: int  # value id of the step index t (i32 scalar)
    carry: int  # value id of the carry placeholder
    carry_type: TensorType
    result: int  # value id of the new carry
    body: tuple[int, int]  # value ids [start, end)
    index_name: str
    carry_name: str

    def describe(self) -> str:
        return (
            f"scan over {self.index_name} < {self.length}, carrying "
            f"{self.carry_name}: {self.carry_type}"
        )


def check_scan(ch: Checker, e: ast.Scan, scope: Scope) -> int:

    if scope.context == "batch":
        raise ShapeDiagnostic(
            e.span,
            "scan belongs in a node, not in loss or metric",
            hint="node h = scan t in N, ... then use h here",
        )
    _distinct_names(e)
    dims = _dims(scope)
    length = _length(e.length, dims)
    carry_t = ch.type_expr(e.carry_type, dims, generic=False)
    init = ch.expr(e.init, scope)
    init = _as_carry(ch, init, carry_t, e.init, "the initial carry", scope)

    start = len(ch.values)
    index = ch.add(
        "scan_index",
        "state",
        (),
        (("name", e.index),),
        TensorType("i32", ()),
        e.index_span,
        scope,
        stage="sample",
    )
    ch.scan_index[index] = (e.index, length)
    carry = ch.add(
        "scan_carry",
        "state",
        (),
        (("name", e.carry),),
        carry_t,
        e.carry_span,
        scope,
        stage="sample",
    )
    inner = scope.inner()
    inner.local[e.index] = index
    inner.local[e.carry] = carry
    for stmt in e.body:
        # not renamed: a let is local to one step, and names in the IR label whole nodes
        vid = ch.expr(stmt.value, inner)
        if stmt.type is not None:
            ch.expect(stmt.type, vid, f"'{stmt.name}'", dims)
        inner.local[stmt.name] = vid
    result = ch.expr(e.result, inner)
    result = _as_carry(
        ch,
        result,
        carry_t,
        e.result,
        "the body's value (the new carry)",
        inner,
        declared=e.carry_type.span,
    )
    if result < start:  # the new carry is an outer value itself: give the body a value of it
        result = ch.add("identity", "imperative", (result,), (), carry_t, e.result.span, inner)
    end = len(ch.values)

    body = set(range(start, end))
    captured = sorted({i for b in body for i in ch.values[b].inputs if i not in body})
    spec = ScanSpec(length, index, carry, carry_t, result, (start, end), e.index, e.carry)
    out = TensorType(carry_t.dtype, (length,) + carry_t.shape)
    return ch.add("scan", "sequential", [init, *captured], (("scan", spec),), out, e.span, scope)


def _distinct_names(e: ast.Scan) -> None:
    seen: dict[str, Span] = {e.index: e.index_span}
    for name, span in [(e.carry, e.carry_span)] + [(s.name, s.span) for s in e.body]:
        if name in seen:
            raise NameDiagnostic(
                span,
                f"'{name}' is already defined in this scan",
                notes=(Note(seen[name], "first defined here"),),
            )
        seen[name] = span


def _dims(scope: Scope):
    """The dims a scan's length and carry type may name: the scope's, and inside a fn checked
    at its definition the symbolic dims of its signature."""
    if scope.fn is None:
        return scope.dims
    generic = {
        d.value for p in scope.fn.decl.params for d in p.type.dims if isinstance(d.value, str)
    }
    return {**{g: SymDim(g) for g in generic}, **scope.dims}


def _length(ref: ast.DimRef, dims) -> Dim:
    if isinstance(ref.value, int):
        if ref.value <= 0:
            raise ShapeDiagnostic(ref.span, f"a scan runs at least one step, got {ref.value}")
        return ref.value
    if ref.value not in dims:
        raise NameDiagnostic(
            ref.span,
            f"undefined dim '{ref.value}'",
            hint=f"a scan runs over a dim or a literal count: declare dim {ref.value} = ...",
        )
    return dims[ref.value]


def _as_carry(
    ch, vid: int, want: TensorType, expr, what: str, scope, declared: Span | None = None
) -> int:
    """``vid`` converted to the carry's type: a weak number takes its dtype, a scalar
    broadcasts; anything else must already match."""
    got = ch.type_of(vid)
    dtype_ok = got.dtype == want.dtype or (got.weak and (want.is_float or not got.is_float))
    shape_ok = tuple(got.shape) == tuple(want.shape) or (got.shape == () and got.weak)
    if not (dtype_ok and shape_ok):
        notes = (Note(declared, "the carry is declared here"),) if declared else ()
        cls = DtypeDiagnostic if shape_ok else ShapeDiagnostic
        hint = "the body's last expression is the carry of the next step" if declared else None
        raise cls(
            expr.span, f"{what} must be {want} like the carry, got {got}", notes=notes, hint=hint
        )
    if got == want:
        return vid
    return ch.add(
        "as_carry", "imperative", (vid,), (("shape", want.shape),), want, expr.span, scope
    )
