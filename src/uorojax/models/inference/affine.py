r"""Index relations in a size-independent symbolic form.

A *relation* says which entries ``S[p]`` of a source array each entry ``V[i]`` of a value
depends on. It is a finite union of :class:`Term`\ s. A term has integer variables
``t_0 … t_{k-1}``, ``t_v ∈ [0, ranges[v])``, and

.. math::
    \{(i, p) : ∃ t,\; i_d = \textstyle\sum_v a_{dv} t_v + a_d \;\; ∀d,\;\;
    p_e = \sum_v c_{ev} t_v + c_e \;\; ∀e \text{ not FREE}\}

where a FREE source axis (``None``) takes any index. A variable that appears in no output
axis is summed over (a contracted or reduced index); one that appears in several axes
ties them (a diagonal). Every rule keeps each term's images inside the arrays' bounds, so
terms never need the shapes to be read, and their cost does not depend on the sizes: a
GRU with 1024 units has the same terms as one with 8.

:func:`canonical` puts a term in a normal form (unused and unit variables dropped,
variables oriented and ordered, digits of a merged axis fused back, full-range source
axes made FREE) so that equal terms compare equal; :func:`~uorojax.models.inference.patterns.
materialise` draws a relation as a boolean array, for tests.

Example (with :func:`~uorojax.models.inference.patterns.materialise`)::

    t = Term((4,), (((1,), 0),), (((1,), 2), None))   # V[i] <- S[i + 2, :]
    materialise(frozenset([t]), (4,), (6, 3))[1, 3]    # True for every column
"""

from __future__ import annotations

from math import gcd
from typing import NamedTuple

Affine = tuple[tuple[int, ...], int]
"""``(coefficients over the term's variables, constant)``."""


class Term(NamedTuple):
    """One term of a relation (see the module docstring)."""

    ranges: tuple[int, ...]
    out: tuple[Affine, ...]
    src: tuple[Affine | None, ...]


Relation = frozenset
"""A frozenset of :class:`Term` (empty: no dependence)."""


def bounds(ranges: tuple[int, ...], e: Affine) -> tuple[int, int]:
    """The least and greatest value of ``e`` over the box ``t_v ∈ [0, ranges[v])``."""
    coefs, lo = e
    hi = lo
    for a, r in zip(coefs, ranges):
        if a > 0:
            hi += a * (r - 1)
        elif a < 0:
            lo += a * (r - 1)
    return lo, hi


def const(nv: int, c: int) -> Affine:
    """The constant ``c`` over ``nv`` variables."""
    return ((0,) * nv, int(c))


def var(nv: int, v: int, coef: int = 1, c: int = 0) -> Affine:
    """``coef · t_v + c`` over ``nv`` variables."""
    coefs = [0] * nv
    coefs[v] = coef
    return (tuple(coefs), int(c))


def shift(e: Affine, c: int) -> Affine:
    return (e[0], e[1] + int(c))


def scale(e: Affine, k: int) -> Affine:
    return (tuple(a * k for a in e[0]), e[1] * k)


def plus(e: Affine, f: Affine) -> Affine:
    return (tuple(a + b for a, b in zip(e[0], f[0])), e[1] + f[1])


def minus(e: Affine, f: Affine) -> Affine:
    return plus(e, scale(f, -1))


def exact_div(e: Affine, k: int) -> Affine | None:
    """``e / k`` where every coefficient and the constant divide, else None."""
    if e[1] % k or any(a % k for a in e[0]):
        return None
    return (tuple(a // k for a in e[0]), e[1] // k)


def used(e: Affine | None) -> set[int]:
    return set() if e is None else {v for v, a in enumerate(e[0]) if a}


# ----------------------------------------------------------------------------- variables


def remap(term: Term, ranges: tuple[int, ...], var_map: list[Affine]) -> Term:
    """The term with old variable ``i`` replaced by ``var_map[i]``, an affine expression
    of new variables with the given ranges."""
    nv = len(ranges)

    def tr(e):
        if e is None:
            return None
        coefs, k = e
        new = [0] * nv
        for i, a in enumerate(coefs):
            if a:
                mc, mk = var_map[i]
                k += a * mk
                for j, b in enumerate(mc):
                    if b:
                        new[j] += a * b
        return (tuple(new), k)

    return Term(tuple(ranges), tuple(tr(e) for e in term.out), tuple(tr(e) for e in term.src))


def _identity_map(nv_old: int, nv_new: int) -> list[Affine]:
    return [var(nv_new, i) for i in range(nv_old)]


def add_vars(term: Term, sizes) -> tuple[Term, list[int]]:
    """The term with fresh variables of the given ranges, and their indices."""
    nv = len(term.ranges)
    ranges = term.ranges + tuple(int(s) for s in sizes)
    return remap(term, ranges, _identity_map(nv, len(ranges))), list(range(nv, len(ranges)))


def fix_var(term: Term, v: int, value: int) -> Term:
    """The term with ``t_v = value``."""
    nv = len(term.ranges)
    var_map = _identity_map(nv, nv)
    var_map[v] = const(nv, value)
    return remap(term, term.ranges, var_map)


def window_var(term: Term, v: int, lo: int, hi: int) -> Term:
    """The term with ``t_v`` restricted to ``[lo, hi)`` (``t_v = lo + t'``)."""
    nv = len(term.ranges)
    var_map = _identity_map(nv, nv)
    var_map[v] = var(nv, v, 1, lo)
    ranges = list(term.ranges)
    ranges[v] = hi - lo
    return remap(term, tuple(ranges), var_map)


def split_var(term: Term, v: int, k: int) -> Term:
    """``t_v = k·t_hi + t_lo``, ``t_lo ∈ [0, k)``; needs ``k`` to divide its range."""
    nv = len(term.ranges)
    ranges = list(term.ranges) + [k]
    ranges[v] = term.ranges[v] // k
    var_map = _identity_map(nv, nv + 1)
    var_map[v] = (tuple(k if j == v else (1 if j == nv else 0) for j in range(nv + 1)), 0)
    return remap(term, tuple(ranges), var_map)


def stride_var(term: Term, v: int, start: int, step: int) -> Term:
    """``t_v = start + step·t'`` over the values of ``t_v`` it reaches."""
    nv = len(term.ranges)
    count = -(-(term.ranges[v] - start) // step)
    var_map = _identity_map(nv, nv)
    var_map[v] = var(nv, v, step, start)
    ranges = list(term.ranges)
    ranges[v] = count
    return remap(term, tuple(ranges), var_map)


# ----------------------------------------------------------------------------- normal form


def canonical(term: Term, src_shape: tuple[int, ...]) -> Term | None:
    """The normal form of a term (see the module docstring); None if it is empty."""
    ranges = term.ranges
    if any(r <= 0 for r in ranges):
        return None
    n_out = len(term.out)
    src = [None if size == 1 else e for e, size in zip(term.src, src_shape)]
    exprs = list(term.out) + src
    nv = len(ranges)
    count = [0] * nv
    for e in exprs:
        if e is not None:
            for v, a in enumerate(e[0]):
                if a:
                    count[v] += 1
    # a source axis read through one variable of its own over the whole axis is FREE
    for j, (e, size) in enumerate(zip(src, src_shape)):
        if e is None:
            continue
        vs = [v for v, a in enumerate(e[0]) if a]
        if len(vs) == 1 and count[vs[0]] == 1 and ranges[vs[0]] == size:
            a = e[0][vs[0]]
            if (a == 1 and e[1] == 0) or (a == -1 and e[1] == size - 1):
                exprs[n_out + j] = None
                count[vs[0]] = 0
    keep = [v for v in range(nv) if count[v] and ranges[v] > 1]
    cols = {v: [0 if e is None else e[0][v] for e in exprs] for v in keep}
    consts = [0 if e is None else e[1] for e in exprs]
    rng = {v: ranges[v] for v in keep}
    for v in keep:  # orient: the first non-zero coefficient is positive
        first = next(a for a in cols[v] if a)
        if first < 0:
            consts = [c + a * (rng[v] - 1) for c, a in zip(consts, cols[v])]
            cols[v] = [-a for a in cols[v]]
    merged = True
    while merged:  # fuse digits: t_b's column is range(t_a) times t_a's
        merged = False
        for a in keep:
            for b in keep:
                if a != b and all(y == rng[a] * x for x, y in zip(cols[a], cols[b])):
                    rng[a] *= rng[b]
                    keep.remove(b)
                    merged = True
                    break
            if merged:
                break
    order = sorted(keep, key=lambda v: (cols[v], rng[v]))
    new_ranges = tuple(rng[v] for v in order)

    def build(i):
        if exprs[i] is None:
            return None
        return (tuple(cols[v][i] for v in order), consts[i])

    return Term(
        new_ranges,
        tuple(build(i) for i in range(n_out)),
        tuple(build(n_out + j) for j in range(len(src))),
    )


def full_term(out_shape: tuple[int, ...], src_ndim: int) -> Term:
    """Every entry of the value depends on every entry of the source."""
    sizes = [s for s in out_shape if s > 1]
    nv, v, out = len(sizes), 0, []
    for s in out_shape:
        if s > 1:
            out.append(var(nv, v))
            v += 1
        else:
            out.append(const(nv, 0))
    return Term(tuple(sizes), tuple(out), (None,) * src_ndim)


def expr_at(term: Term, pos: int) -> Affine | None:
    """Output axis ``pos``, or source axis ``pos - len(out)``."""
    n = len(term.out)
    return term.out[pos] if pos < n else term.src[pos - n]


# ----------------------------------------------------------------------------- restriction

ENUMERATE_LIMIT = 16
"""Largest variable range :func:`restrict` splits into one term per value."""


def _cdiv(a: int, b: int) -> int:
    return -((-a) // b)


def restrict(term: Term, pos: int, lo: int, hi: int) -> list[Term] | None:
    """The term with the expression at ``pos`` (:func:`expr_at`) confined to ``[lo, hi)``,
    as terms; None where it is not representable (several variables that overlap)."""
    e = expr_at(term, pos)
    emin, emax = bounds(term.ranges, e)
    if emin >= lo and emax < hi:
        return [term]
    if emax < lo or emin >= hi:
        return []
    vs = [v for v, a in enumerate(e[0]) if a]
    if len(vs) == 1:
        v, a, k = vs[0], e[0][vs[0]], e[1]
        if a > 0:
            t_lo, t_hi = _cdiv(lo - k, a), (hi - 1 - k) // a
        else:
            t_lo, t_hi = _cdiv(hi - 1 - k, a), (lo - k) // a
        t_lo, t_hi = max(t_lo, 0), min(t_hi, term.ranges[v] - 1)
        return [] if t_lo > t_hi else [window_var(term, v, t_lo, t_hi + 1)]
    # the variable of largest reach: the values of it whose whole span falls inside form
    # one run, and only the few values that straddle a bound are split off
    v = max(vs, key=lambda w: abs(e[0][w]) * (term.ranges[w] - 1))
    a, top = e[0][v], term.ranges[v] - 1
    rest = (tuple(0 if w == v else c for w, c in enumerate(e[0])), e[1])
    rmin, rmax = bounds(term.ranges, rest)
    if a > 0:
        i_lo, i_hi = _cdiv(lo - rmin, a), (hi - 1 - rmax) // a
        o_lo, o_hi = _cdiv(lo - rmax, a), (hi - 1 - rmin) // a
    else:
        i_lo, i_hi = _cdiv(hi - 1 - rmax, a), (lo - rmin) // a
        o_lo, o_hi = _cdiv(hi - 1 - rmin, a), (lo - rmax) // a
    i_lo, i_hi = max(i_lo, 0), min(i_hi, top)
    o_lo, o_hi = max(o_lo, 0), min(o_hi, top)
    if i_lo > i_hi:
        partial = list(range(o_lo, o_hi + 1))
    else:
        partial = [*range(o_lo, i_lo), *range(i_hi + 1, o_hi + 1)]
    if len(partial) > ENUMERATE_LIMIT:
        return None
    terms = [window_var(term, v, i_lo, i_hi + 1)] if i_lo <= i_hi else []
    for t in partial:
        sub = restrict(fix_var(term, v, t), pos, lo, hi)
        if sub is None:
            return None
        terms.extend(sub)
    return terms


def _inverse(a: int, m: int) -> int:
    return pow(a, -1, m) if m > 1 else 0


def restrict_mod(term: Term, pos: int, r: int, s: int) -> list[Term] | None:
    """The term with the expression at ``pos`` confined to values ``≡ r (mod s)``; None
    where it is not representable."""
    e = expr_at(term, pos)
    off = [v for v, a in enumerate(e[0]) if a % s]
    if not off:
        return [term] if (e[1] - r) % s == 0 else []
    if len(off) == 1:
        v, a = off[0], e[0][off[0]]
        g = gcd(a, s)
        if (r - e[1]) % g:
            return []
        m = s // g
        t0 = ((r - e[1]) // g * _inverse((a // g) % m, m)) % m
        return [] if t0 >= term.ranges[v] else [stride_var(term, v, t0, m)]
    v = min(off, key=lambda w: term.ranges[w])
    if term.ranges[v] > ENUMERATE_LIMIT:
        return None
    terms = []
    for t in range(term.ranges[v]):
        sub = restrict_mod(fix_var(term, v, t), pos, r, s)
        if sub is None:
            return None
        terms.extend(sub)
    return terms


__all__ = ["Affine", "Relation", "Term", "canonical", "full_term", "restrict"]
