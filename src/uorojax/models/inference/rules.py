r"""How one primitive maps the terms of an input's relation to the terms of its output's.

Each rule takes one :class:`~uorojax.models.inference.affine.Term` of an operand (its output
axes index the operand) and returns terms whose output axes index the primitive's result,
in normal form. Where an index map cannot be written exactly (a reshape whose digits
carry, a slice of an axis read through overlapping variables) the axis is *widened*: it
gets a fresh variable over its whole range, which keeps every dependence and adds some
(a wider pattern, never a narrower one).

:func:`transform` applies a rule to a whole relation, with a cache: a model's values
share few distinct relations, and a rule costs the same for any array size.

Example::

    rel = transform(transpose, (3, 2), ((1, 0),), rel, src_shape)
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd, prod

from uorojax.models.inference.affine import (
    Term,
    add_vars,
    bounds,
    canonical,
    const,
    exact_div,
    full_term,
    minus,
    remap,
    restrict,
    restrict_mod,
    scale,
    shift,
    split_var,
    var,
)

MAX_TERMS = 64
"""Terms kept per relation before it is replaced by its bounding box."""


# ----------------------------------------------------------------------------- helpers


def finish(terms, src_shape) -> list[Term]:
    out = []
    for t in terms:
        c = canonical(t, src_shape)
        if c is not None:
            out.append(c)
    return out


def set_out(term: Term, out) -> Term:
    return Term(term.ranges, tuple(out), term.src)


def fresh_axis(term: Term, d: int, size: int) -> Term:
    """Output axis ``d`` widened to any index in ``[0, size)``."""
    t, (v,) = add_vars(term, [size])
    out = list(t.out)
    out[d] = var(len(t.ranges), v)
    return set_out(t, out)


def with_fresh(term: Term, sizes) -> tuple[Term, list]:
    """The term with fresh variables, and their expressions."""
    t, vs = add_vars(term, sizes)
    return t, [var(len(t.ranges), v) for v in vs]


def flip_var(term: Term, v: int) -> Term:
    nv = len(term.ranges)
    var_map = [var(nv, i) for i in range(nv)]
    var_map[v] = var(nv, v, -1, term.ranges[v] - 1)
    return remap(term, term.ranges, var_map)


def full(out_shape, src_shape) -> frozenset:
    t = canonical(full_term(tuple(out_shape), len(src_shape)), tuple(src_shape))
    return frozenset([t])


def _subsumed(a: Term, b: Term) -> bool:
    """``a ⊆ b`` read off the syntax: the same variables and output map, each source
    axis of ``b`` FREE or equal to ``a``'s."""
    return (
        a.ranges == b.ranges
        and a.out == b.out
        and all(eb is None or ea == eb for ea, eb in zip(a.src, b.src))
    )


def hull(terms, out_shape, src_shape) -> Term:
    """One term containing all of them: the bounding box of each axis."""
    n_out = len(out_shape)
    lo = [min(bounds(t.ranges, t.out[d])[0] for t in terms) for d in range(n_out)]
    hi = [max(bounds(t.ranges, t.out[d])[1] for t in terms) for d in range(n_out)]
    src_lo, src_hi = [], []
    for a, size in enumerate(src_shape):
        spans = [(0, size - 1) if t.src[a] is None else bounds(t.ranges, t.src[a]) for t in terms]
        src_lo.append(min(s[0] for s in spans))
        src_hi.append(max(s[1] for s in spans))
    sizes = [h - low + 1 for low, h in zip(lo + src_lo, hi + src_hi)]
    nv = len(sizes)
    exprs = [var(nv, v, 1, low) for v, low in enumerate(lo + src_lo)]
    return canonical(Term(tuple(sizes), tuple(exprs[:n_out]), tuple(exprs[n_out:])), src_shape)


def normalise(terms, out_shape, src_shape) -> frozenset:
    """A relation from terms: duplicates and syntactically contained terms dropped, the
    full relation kept alone, too many terms replaced by their hull."""
    terms = frozenset(t for t in terms if t is not None)
    if len(terms) <= 1:
        return terms
    whole = next(iter(full(out_shape, src_shape)))
    if whole in terms:
        return frozenset([whole])
    kept = [a for a in terms if not any(a is not b and _subsumed(a, b) for b in terms)]
    if len(kept) > MAX_TERMS:
        return frozenset([hull(kept, out_shape, src_shape)])
    return frozenset(kept)


def union(a: frozenset, b: frozenset, out_shape, src_shape) -> frozenset:
    if a is b or not b or a == b:
        return a
    if not a:
        return b
    return normalise(a | b, out_shape, src_shape)


@lru_cache(maxsize=1 << 16)
def transform(rule, out_shape, static, rel: frozenset, src_shape) -> frozenset:
    """``rule(term, src_shape, *static)`` over every term of ``rel``, normalised for a
    value of ``out_shape``."""
    terms = []
    for t in rel:
        terms.extend(rule(t, src_shape, *static))
    return normalise(terms, out_shape, src_shape)


def mapped(rels: dict, rule, out_shape, static, src_shapes) -> dict:
    """Every relation of a relation map (source id → relation) through ``rule``."""
    out = {}
    for s, rel in rels.items():
        r = transform(rule, tuple(out_shape), static, rel, src_shapes[s])
        if r:
            out[s] = r
    return out


def merge(dicts, out_shape, src_shapes) -> dict:
    """The union of several relation maps of values of ``out_shape``."""
    out: dict = {}
    for d in dicts:
        for s, rel in d.items():
            out[s] = union(out[s], rel, tuple(out_shape), src_shapes[s]) if s in out else rel
    return out


# ----------------------------------------------------------------------------- shape rules


def identity(term, src_shape):
    return [term]


def broadcast(term, src_shape, in_shape, out_shape, dims):
    """``broadcast_in_dim``: operand axis ``i`` becomes output axis ``dims[i]``; new axes
    and size-1 axes that grow read any index."""
    mapped = {d: i for i, d in enumerate(dims) if in_shape[i] == out_shape[d]}
    need = [d for d in range(len(out_shape)) if d not in mapped]
    t, fresh = with_fresh(term, [out_shape[d] for d in need])
    by_axis = dict(zip(need, fresh))
    out = [t.out[mapped[d]] if d in mapped else by_axis[d] for d in range(len(out_shape))]
    return finish([set_out(t, out)], src_shape)


def elementwise(term, src_shape, in_shape, out_shape):
    """An operand of an element-wise primitive, broadcast numpy-style to ``out_shape``."""
    offset = len(out_shape) - len(in_shape)
    return broadcast(term, src_shape, in_shape, out_shape, tuple(range(offset, len(out_shape))))


def transpose(term, src_shape, perm):
    return [set_out(term, [term.out[p] for p in perm])]


def squeeze(term, src_shape, dims):
    return [set_out(term, [e for d, e in enumerate(term.out) if d not in dims])]


CARRY_LIMIT = 4
"""Most carries of a reshape's digit split into separate terms before it is widened."""


def _divmod(t: Term, n: int) -> list[Term] | None:
    """``t.out[0] = Q`` replaced by ``(Q // n, Q % n)``: variables whose steps carry are
    split into digits, a low part that crosses a multiple of ``n`` a few times is cut
    into one term per carry; None where neither works (the caller widens)."""
    pending, done = [t], []
    for _ in range(64):
        if not pending:
            return done
        t = pending.pop()
        q_coefs, q0 = t.out[0]
        negative = [v for v, a in enumerate(q_coefs) if a < 0]
        if negative:
            pending.append(flip_var(t, negative[0]))
            continue
        low = [v for v, a in enumerate(q_coefs) if a % n]
        low_part = (tuple(a if v in low else 0 for v, a in enumerate(q_coefs)), q0 % n)
        top = bounds(t.ranges, low_part)[1]
        if top < n:
            quot = (tuple(0 if v in low else a // n for v, a in enumerate(q_coefs)), q0 // n)
            done.append(set_out(t, (quot, low_part, *t.out[1:])))
            continue
        v = max(low, key=lambda w: q_coefs[w] * (t.ranges[w] - 1))
        k = n // gcd(q_coefs[v], n)
        if k < t.ranges[v] and t.ranges[v] % k == 0:
            pending.append(split_var(t, v, k))
            continue
        if top // n + 1 > CARRY_LIMIT:
            return None
        with_low = set_out(t, (*t.out, low_part))
        for c in range(top // n + 1):
            parts = restrict(with_low, len(t.out), c * n, (c + 1) * n)
            if parts is None:
                return None
            for p in parts:
                part = p.out[-1]
                quot = exact_div(minus(p.out[0], part), n)
                if quot is None:
                    return None
                rem = (part[0], part[1] - c * n)
                done.append(set_out(p, (shift(quot, c), rem, *p.out[1:-1])))
    return None


def reshape(term, src_shape, in_shape, out_shape):
    """Row-major reshape: the flat index, cut into the new axes' digits."""
    if prod(out_shape) == 0:
        return []
    nv = len(term.ranges)
    flat, stride = const(nv, 0), 1
    for d in reversed(range(len(in_shape))):
        e = scale(term.out[d], stride)
        flat = (tuple(a + b for a, b in zip(flat[0], e[0])), flat[1] + e[1])
        stride *= in_shape[d]
    terms = [set_out(term, (flat,))]
    for n in reversed(out_shape[1:]):
        nxt = []
        for t in terms:
            cut = _divmod(t, n)
            if cut is None:
                wide, fresh = with_fresh(term, out_shape)
                return finish([set_out(wide, fresh)], src_shape)
            nxt.extend(cut)
        terms = nxt
    return finish(terms, src_shape)


def slice_(term, src_shape, starts, limits, strides):
    """``lax.slice``: each axis confined to its window, shifted and divided by its
    stride; an axis that cannot be confined exactly is widened."""
    terms = [term]
    for d, (lo, hi, st) in enumerate(zip(starts, limits, strides)):
        size = max(0, -(-(hi - lo) // st))
        nxt = []
        for t in terms:
            parts = restrict(t, d, lo, hi)
            if parts is not None and st != 1:
                stepped = []
                for p in parts:
                    q = restrict_mod(p, d, lo % st, st)
                    if q is None:
                        stepped = None
                        break
                    stepped.extend(q)
                parts = stepped
            if parts is None:
                nxt.append(fresh_axis(t, d, size))
                continue
            for p in parts:
                e = exact_div(shift(p.out[d], -lo), st)
                if e is None:
                    nxt.append(fresh_axis(p, d, size))
                else:
                    out = list(p.out)
                    out[d] = e
                    nxt.append(set_out(p, out))
        terms = nxt
    return finish(terms, src_shape)


def pad(term, src_shape, config, out_shape):
    """``lax.pad`` of the operand: entry ``i`` lands at ``lo + i·(interior + 1)``, and the
    entries that negative padding cuts off are dropped."""
    out = [shift(scale(e, interior + 1), lo) for e, (lo, _, interior) in zip(term.out, config)]
    terms = [set_out(term, out)]
    for d, size in enumerate(out_shape):
        nxt = []
        for t in terms:
            parts = restrict(t, d, 0, size)
            nxt.extend([fresh_axis(t, d, size)] if parts is None else parts)
        terms = nxt
    return finish(terms, src_shape)


def offset(term, src_shape, axis, delta):
    """Axis ``axis`` shifted by ``delta`` (an operand of ``concatenate``)."""
    out = list(term.out)
    out[axis] = shift(out[axis], delta)
    return [set_out(term, out)]


def window(term, src_shape, axis, lo, hi):
    """The entries ``[lo, hi)`` of one axis, shifted to start at 0 (a piece of ``split``)."""
    parts = restrict(term, axis, lo, hi)
    if parts is None:
        return finish([fresh_axis(term, axis, hi - lo)], src_shape)
    return finish([offset(p, src_shape, axis, -lo)[0] for p in parts], src_shape)


def rev(term, src_shape, in_shape, dims):
    out = [shift(scale(e, -1), in_shape[d] - 1) if d in dims else e for d, e in enumerate(term.out)]
    return finish([set_out(term, out)], src_shape)


def dot(term, src_shape, side, ndims, contract, batch, other_free_sizes):
    """An operand of ``dot_general``: the output is (batch, lhs free, rhs free); the
    contracted axes' variables are summed over, the other operand's free axes read any
    index."""
    free = [d for d in range(ndims) if d not in contract and d not in batch]
    t, fresh = with_fresh(term, other_free_sizes)
    mine = [t.out[d] for d in free]
    out = [t.out[d] for d in batch] + (mine + fresh if side == 0 else fresh + mine)
    return finish([set_out(t, out)], src_shape)


def reduce(term, src_shape, axes):
    """A reduction over ``axes``: their variables are summed over."""
    return finish([set_out(term, [e for d, e in enumerate(term.out) if d not in axes])], src_shape)


def widen(term, src_shape, axis, size):
    """Any entry along ``axis`` may depend on any other (a cumulative sum, a sort)."""
    return finish([fresh_axis(term, axis, size)], src_shape)


def anywhere(term, src_shape, out_shape):
    """Any entry of the output may depend on what the operand's entries depend on."""
    t, fresh = with_fresh(term, out_shape)
    return finish([set_out(t, fresh)], src_shape)


def take_leading(term, src_shape, t):
    """Entry ``t`` of the leading axis, which is dropped (a scan's input at step t)."""
    parts = restrict(term, 0, t, t + 1)
    if parts is None:
        return finish([set_out(term, term.out[1:])], src_shape)
    return finish([set_out(p, p.out[1:]) for p in parts], src_shape)


def put_leading(term, src_shape, t):
    """A new leading axis at index ``t`` (a scan's output at step t)."""
    return [set_out(term, (const(len(term.ranges), t), *term.out))]


def spread_leading(term, src_shape, length):
    """A new leading axis of ``length`` read at any index (a scan's stacked outputs)."""
    t, fresh = with_fresh(term, [length])
    return finish([set_out(t, (fresh[0], *t.out))], src_shape)


def shifted(term, src_shape, starts, in_shape, out_shape):
    """An update written at ``starts`` (``dynamic_update_slice`` with known starts)."""
    out = [shift(e, s) for e, s in zip(term.out, starts)]
    return finish([set_out(term, out)], src_shape)


__all__ = ["MAX_TERMS", "full", "mapped", "merge", "normalise", "transform", "union"]
