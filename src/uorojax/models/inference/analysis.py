r"""Abstract interpretation of a model's jaxpr: the relation of every value to every source.

:func:`trace` turns ``apply_fn(params, state, x)`` into a jaxpr on flat leaves, reading
only shapes, dtypes and tree structure. :func:`run` walks a jaxpr and gives each value an
:class:`Info`: its relation map (source id → :class:`~uorojax.models.inference.affine.Term`
set), whether it is a *pure params value* (one entry of one params leaf per element,
through transposes, reshapes, slices, concatenations and float casts) and, for small
integer arrays known at trace time, their value (for static gather indices).

* Call-like primitives (``jit``, ``closed_call``, ``remat``/``checkpoint``) are entered;
  ``custom_jvp_call`` and ``custom_vjp_call`` by their primal function, whose pattern is
  the forward's.
* ``cond`` is the union of its branches (the predicate carries no derivative).
* ``scan`` of at most :data:`EXACT_SCAN` steps is iterated step by step, exactly; a longer
  ``scan`` and ``while`` iterate their carries' relations to a fixed point, and after
  :data:`WIDEN_AFTER` rounds a relation that still grows is widened to full.
* Integer and boolean values have no relation (no derivative).

Every ``dot_general`` with one pure params operand is reported to ``Context.uses``
(a *dense use*); a ``Context.hook`` may replace its output relation (the diagonalised
and the stop-at-input analyses of :mod:`~uorojax.models.inference.roles`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from uorojax.models.inference import rules
from uorojax.models.inference.primitives import ZERO_DERIVATIVE, equation_relations, merge

EXACT_SCAN = 4
"""Scans of at most this many steps are analysed step by step."""
WIDEN_AFTER = 3
"""Fixed-point rounds after which a carry relation that still grows becomes full."""
MAX_ROUNDS = 8
FOLD_LIMIT = 4096

CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}
CUSTOM = {
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "custom_lin": None,
}
MOVES = frozenset(
    {
        "transpose",
        "reshape",
        "squeeze",
        "slice",
        "concatenate",
        "rev",
        "split",
        "convert_element_type",
        "copy",
        "copy_p",
        "broadcast_in_dim",
    }
)
"""Primitives that move params entries without combining them (a pure params value)."""


class Info(NamedTuple):
    """What the analysis knows of one value."""

    rels: dict
    pure: bool = False
    const: Any = None


EMPTY = Info({})


class Seen(NamedTuple):
    """A ``dot_general`` with one pure params operand, as the interpreter met it."""

    path: tuple
    eqn: Any
    kernel: int
    hidden: tuple | None  # the path of the control-flow equation it is inside, if any
    producer: str
    infos: tuple


class Context:
    """Sources and hooks of one analysis.

    Attributes:
      src_shapes: the shape of every source id.
      hook: ``hook(seen, default_rels) -> rels | None`` at every dense use outside
        control flow, or None.
      uses: every dense use met, by path.
      scopes: ``(path, eqn, outs)`` of every equation, when ``keep_scopes``.
    """

    def __init__(self, src_shapes, hook=None, keep_scopes=False):
        self.src_shapes = list(src_shapes)
        self.hook = hook
        self.uses: dict = {}
        self.scopes = [] if keep_scopes else None


def is_float(aval) -> bool:
    return jnp.issubdtype(getattr(aval, "dtype", np.int32), jnp.inexact)


def call_body(eqn):
    """The inner jaxpr and consts of a call-like equation (None if it has none)."""
    name = eqn.primitive.name
    key = CALLS.get(name) or CUSTOM.get(name)
    inner = eqn.params.get(key) if key else None
    if inner is None:
        return None
    if hasattr(inner, "jaxpr"):
        return inner.jaxpr, inner.consts
    return inner, []


def small_const(value):
    arr = np.asarray(value)
    if arr.dtype.kind in "iub" and arr.size <= FOLD_LIMIT:
        return arr
    return None


def run(jaxpr, consts, infos, ctx: Context, path=(), hidden=None) -> list[Info]:
    """The :class:`Info` of every output of ``jaxpr`` from those of its inputs
    (``hidden``: the path of the control-flow or custom-derivative equation that
    ``jaxpr`` runs inside, where dense uses cannot be marked)."""
    env: dict = {}
    producers: dict = {}

    def read(v):
        if isinstance(v, Literal):
            return Info({}, False, small_const(v.val))
        return env.get(v, EMPTY)

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = Info({}, False, small_const(c))
    for v, info in zip(jaxpr.invars, infos):
        env[v] = info
    for i, eqn in enumerate(jaxpr.eqns):
        ins = [read(v) for v in eqn.invars]
        outs = step(eqn, ins, ctx, path + (i,), hidden, producers)
        clean = []
        for v, o in zip(eqn.outvars, outs):
            if not is_float(v.aval):
                o = Info({}, False, o.const)
            clean.append(o)
            env[v] = o
            producers[v] = eqn
        if ctx.scopes is not None:
            ctx.scopes.append((path + (i,), eqn, clean))
    return [read(v) for v in jaxpr.outvars]


def step(eqn, ins, ctx, path, hidden, producers) -> list[Info]:
    name = eqn.primitive.name
    body = call_body(eqn) if (name in CALLS or name in CUSTOM) else None
    if body is not None:
        inside = hidden if hidden is not None or name not in CUSTOM else path
        return run(body[0], body[1], ins, ctx, path, inside)
    root = path if hidden is None else hidden
    if name == "cond":
        return cond(eqn, ins, ctx, path, root)
    if name == "scan":
        return scan(eqn, ins, ctx, path, root)
    if name == "while":
        return while_loop(eqn, ins, ctx, path, root)
    rels = equation_relations(eqn, [i.rels for i in ins], [i.const for i in ins], ctx.src_shapes)
    if name == "dot_general":
        rels = [dense_use(eqn, ins, rels[0], ctx, path, hidden, producers)]
    pure = pure_move(eqn, ins)
    folded = fold(eqn, ins)
    return [Info(r, pure, c) for r, c in zip(rels, folded)]


def pure_move(eqn, ins) -> bool:
    name = eqn.primitive.name
    if name not in MOVES or not ins or not all(i.pure for i in ins):
        return False
    if name == "broadcast_in_dim":
        return int(np.prod(eqn.invars[0].aval.shape)) == int(np.prod(eqn.outvars[0].aval.shape))
    return True


def fold(eqn, ins) -> list:
    """Small integer results computed from known inputs (static indices)."""
    none = [None] * len(eqn.outvars)
    if any(i.const is None for i in ins):
        return none
    if not all(
        v.aval.dtype.kind in "iub" and np.prod(v.aval.shape) <= FOLD_LIMIT
        for v in eqn.outvars
        if hasattr(v.aval, "dtype")
    ):
        return none
    try:
        with jax.ensure_compile_time_eval():
            params = eqn.primitive.get_bind_params(eqn.params)
            out = eqn.primitive.bind(*[i.const for i in ins], **params)
    except Exception:  # noqa: BLE001 - folding is an optimisation only
        return none
    outs = out if eqn.primitive.multiple_results else [out]
    return [small_const(o) for o in outs]


def describe(eqn) -> str:
    """A short name for the equation that made a value."""
    if eqn is None:
        return "an argument"
    name = eqn.primitive.name
    inner = eqn.params.get("name") if name in CALLS or name in CUSTOM else None
    return f"{name}({inner})" if inner else name


def dense_use(eqn, ins, rels, ctx, path, hidden, producers) -> dict:
    pure = [ins[0].pure, ins[1].pure]
    if pure[0] == pure[1]:
        return rels
    kernel = 0 if pure[0] else 1
    producer = describe(producers.get(eqn.invars[1 - kernel]))
    seen = Seen(path, eqn, kernel, hidden, producer, tuple(ins))
    ctx.uses[path] = seen
    if ctx.hook is not None and hidden is None:
        replaced = ctx.hook(seen, rels)
        if replaced is not None:
            return replaced
    return rels


# ----------------------------------------------------------------------------- control flow


def _merge_infos(groups, outvars, src_shapes) -> list[Info]:
    return [
        Info(merge([g[j].rels for g in groups], tuple(v.aval.shape), src_shapes))
        for j, v in enumerate(outvars)
    ]


def cond(eqn, ins, ctx, path, root) -> list[Info]:
    ops = [Info(i.rels, i.pure, i.const) for i in ins[1:]]
    groups = [
        run(br.jaxpr, br.consts, ops, ctx, path + (b,), root)
        for b, br in enumerate(eqn.params["branches"])
    ]
    return _merge_infos(groups, eqn.outvars, ctx.src_shapes)


def _rels_map(rels, rule, shape, static, src_shapes) -> dict:
    return rules.mapped(rels, rule, shape, static, src_shapes)


def _fixpoint(run_body, carry, shapes, src_shapes):
    """Iterates ``carry ← carry ∪ body(carry)`` to a fixed point; returns the last
    outputs of the body and the carry they came from."""
    for rounds in range(MAX_ROUNDS + 1):
        outs = run_body(carry)
        new = [merge([c, o.rels], shape, src_shapes) for c, o, shape in zip(carry, outs, shapes)]
        if new == carry:
            return outs, carry
        if rounds >= WIDEN_AFTER:
            new = [
                {
                    s: (rules.full(shape, src_shapes[s]) if c.get(s) != r else r)
                    for s, r in n.items()
                }
                for c, n, shape in zip(carry, new, shapes)
            ]
        carry = new
    carry = [{s: rules.full(shape, src_shapes[s]) for s in c} for c, shape in zip(carry, shapes)]
    return run_body(carry), carry


def scan(eqn, ins, ctx, path, root) -> list[Info]:
    p = eqn.params
    body, nc, nk, length = p["jaxpr"], p["num_consts"], p["num_carry"], p["length"]
    consts, carry, xs = ins[:nc], ins[nc : nc + nk], ins[nc + nk :]
    src = ctx.src_shapes
    x_shapes = [tuple(v.aval.shape) for v in eqn.invars[nc + nk :]]
    k_shapes = [tuple(v.aval.shape) for v in eqn.outvars[:nk]]
    y_shapes = [tuple(v.aval.shape) for v in eqn.outvars[nk:]]

    def body_run(carry_rels, x_infos):
        args = list(consts) + [Info(r) for r in carry_rels] + x_infos
        return run(body.jaxpr, body.consts, args, ctx, path, root)

    if length <= EXACT_SCAN:
        carry_rels = [c.rels for c in carry]
        ys = [{} for _ in y_shapes]
        for k in range(length):
            t = length - 1 - k if p["reverse"] else k
            x_t = [
                Info(_rels_map(x.rels, rules.take_leading, s[1:], (t,), src))
                for x, s in zip(xs, x_shapes)
            ]
            outs = body_run(carry_rels, x_t)
            carry_rels = [o.rels for o in outs[:nk]]
            ys = [
                merge([y, _rels_map(o.rels, rules.put_leading, s, (t,), src)], s, src)
                for y, o, s in zip(ys, outs[nk:], y_shapes)
            ]
        return [Info(r) for r in carry_rels] + [Info(y) for y in ys]
    x_any = [
        Info(_rels_map(x.rels, rules.reduce, s[1:], ((0,),), src)) for x, s in zip(xs, x_shapes)
    ]
    outs, carry_rels = _fixpoint(
        lambda c: body_run(c, x_any), [c.rels for c in carry], k_shapes, src
    )
    ys = [
        _rels_map(o.rels, rules.spread_leading, s, (length,), src)
        for o, s in zip(outs[nk:], y_shapes)
    ]
    return [Info(r) for r in carry_rels] + [Info(y) for y in ys]


def while_loop(eqn, ins, ctx, path, root) -> list[Info]:
    p = eqn.params
    nc, nb, body = p["cond_nconsts"], p["body_nconsts"], p["body_jaxpr"]
    consts, init = ins[nc : nc + nb], ins[nc + nb :]
    shapes = [tuple(v.aval.shape) for v in eqn.outvars]

    def body_run(carry_rels):
        args = list(consts) + [Info(r) for r in carry_rels]
        return run(body.jaxpr, body.consts, args, ctx, path, root)

    _, carry_rels = _fixpoint(body_run, [i.rels for i in init], shapes, ctx.src_shapes)
    return [Info(r) for r in carry_rels]


# ----------------------------------------------------------------------------- reachability


def reach(jaxpr, out_masks, marks: dict, path=()) -> list[int]:
    """Backward pass: for every equation (by path) the bit mask of the outputs of
    ``jaxpr`` its results reach through a derivative; returns the inputs' masks."""
    masks: dict = {}
    for v, m in zip(jaxpr.outvars, out_masks):
        if not isinstance(v, Literal) and is_float(v.aval):
            masks[v] = masks.get(v, 0) | m
    for i in reversed(range(len(jaxpr.eqns))):
        eqn = jaxpr.eqns[i]
        outs = [masks.get(v, 0) for v in eqn.outvars]
        m = 0
        for o in outs:
            m |= o
        if not m:
            continue
        marks[path + (i,)] = m
        name = eqn.primitive.name
        if name in ZERO_DERIVATIVE:
            continue
        body = call_body(eqn) if (name in CALLS or name in CUSTOM) else None
        in_masks = reach(body[0], outs, marks, path + (i,)) if body else [m] * len(eqn.invars)
        for v, mv in zip(eqn.invars, in_masks):
            if mv and not isinstance(v, Literal) and is_float(v.aval):
                masks[v] = masks.get(v, 0) | mv
    return [masks.get(v, 0) for v in jaxpr.invars]


__all__ = ["Context", "Info", "Seen", "reach", "run"]
