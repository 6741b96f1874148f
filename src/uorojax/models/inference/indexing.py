r"""Relation rules of the indexing primitives: ``gather``, the ``scatter`` family,
``dynamic_slice`` and ``dynamic_update_slice``.

Start indices are integers and carry no derivative. Where they are known when the model
is traced (literals, constants of the jaxpr, ``iota`` and arithmetic on them: a ``take``
with a static index array, ``x[2:5]`` lowered to a dynamic slice) and there are few of
them, the rules are exact; otherwise the gathered or sliced axes are widened: an output
entry may read any entry along them (an embedding lookup ``E[token]`` depends on every
row of ``E``). A scatter keeps the operand's relation and lets every output entry depend
on every update it may receive.

Example::

    outs = gather_relations(eqn, [operand_rels, {}], shapes, [None, idx], src_shapes)
"""

from __future__ import annotations

import numpy as np

from uorojax.models.inference.affine import Term, add_vars, const, restrict, var
from uorojax.models.inference.rules import anywhere, finish, mapped, merge, set_out, shifted, slice_

STATIC_LIMIT = 64
"""Largest number of known start vectors a gather is made exact for."""


def _clamp_start(start, size, window, fill):
    """The start a gather or dynamic slice uses, or None where ``FILL_OR_DROP`` fills."""
    if fill:
        return start if 0 <= start <= size - window else None
    return int(min(max(start, 0), size - window))


# ----------------------------------------------------------------------------- gather


def gather_dynamic(term, src_shape, operand_shape, out_shape, dn, slice_sizes):
    """``gather`` with unknown start indices: gathered axes read any index."""
    offset_dims, collapsed, start_map, op_batch, idx_batch = dn
    batch_axes = [d for d in range(len(out_shape)) if d not in offset_dims]
    out = [None] * len(out_shape)
    windows = [a for a in range(len(operand_shape)) if a not in collapsed and a not in op_batch]
    terms = [term]
    for a, o in zip(windows, offset_dims):
        if a in start_map and slice_sizes[a] < operand_shape[a]:
            continue  # widened below
        out[o] = a
        if slice_sizes[a] < operand_shape[a]:  # start 0 along an axis not indexed
            nxt = []
            for t in terms:
                parts = restrict(t, a, 0, slice_sizes[a])
                nxt.extend([t] if parts is None else parts)
            terms = nxt
    for a, i in zip(op_batch, idx_batch):
        out[batch_axes[i]] = a
    results = []
    for t in terms:
        need = [d for d in range(len(out_shape)) if out[d] is None]
        t2, vs = add_vars(t, [out_shape[d] for d in need])
        fresh = dict(zip(need, vs))
        nv = len(t2.ranges)
        exprs = [
            var(nv, fresh[d]) if out[d] is None else t2.out[out[d]] for d in range(len(out_shape))
        ]
        results.append(set_out(t2, exprs))
    return finish(results, src_shape)


def gather_static(term, src_shape, operand_shape, out_shape, dn, slice_sizes, starts, fill):
    """``gather`` with known start vectors ``starts`` (one per batch position)."""
    offset_dims, collapsed, start_map, op_batch, idx_batch = dn
    batch_axes = [d for d in range(len(out_shape)) if d not in offset_dims]
    windows = [a for a in range(len(operand_shape)) if a not in collapsed and a not in op_batch]
    batch_shape = tuple(out_shape[d] for d in batch_axes)
    results = []
    for flat, vector in enumerate(starts):
        b = np.unravel_index(flat, batch_shape) if batch_shape else ()
        begin = [0] * len(operand_shape)
        skip = False
        for a, s in zip(start_map, vector):
            begin[a] = _clamp_start(int(s), operand_shape[a], slice_sizes[a], fill)
            skip = skip or begin[a] is None
        for a, i in zip(op_batch, idx_batch):
            begin[a] = int(b[i])
        if skip:
            continue
        terms = [term]
        for a in range(len(operand_shape)):
            nxt = []
            for t in terms:
                parts = restrict(t, a, begin[a], begin[a] + slice_sizes[a])
                if parts is None:
                    return gather_dynamic(
                        term, src_shape, operand_shape, out_shape, dn, slice_sizes
                    )
                nxt.extend(parts)
            terms = nxt
        for t in terms:
            nv = len(t.ranges)
            out = [None] * len(out_shape)
            for d, v in zip(batch_axes, b):
                out[d] = const(nv, int(v))
            for a, o in zip(windows, offset_dims):
                out[o] = (t.out[a][0], t.out[a][1] - begin[a])
            results.append(set_out(t, out))
    return finish(results, src_shape)


def gather_relations(eqn, rels, shapes, consts, src_shapes):
    """Output relations of a ``gather`` equation (the indices carry none)."""
    p = eqn.params
    d = p["dimension_numbers"]
    dn = (
        tuple(d.offset_dims),
        tuple(d.collapsed_slice_dims),
        tuple(d.start_index_map),
        tuple(getattr(d, "operand_batching_dims", ())),
        tuple(getattr(d, "start_indices_batching_dims", ())),
    )
    operand_shape, out_shape = shapes[0], tuple(eqn.outvars[0].aval.shape)
    sizes = tuple(int(s) for s in p["slice_sizes"])
    fill = "FILL" in str(p.get("mode", "")).upper()
    indices = consts[1]
    if indices is not None and not dn[3]:
        vectors = np.asarray(indices).reshape(-1, np.shape(indices)[-1])
        if len(vectors) <= STATIC_LIMIT:
            starts = tuple(tuple(int(s) for s in v) for v in vectors)
            static = (operand_shape, out_shape, dn, sizes, starts, fill)
            return [mapped(rels[0], gather_static, out_shape, static, src_shapes)]
    static = (operand_shape, out_shape, dn, sizes)
    return [mapped(rels[0], gather_dynamic, out_shape, static, src_shapes)]


# ----------------------------------------------------------------------------- others


def scatter_relations(eqn, rels, shapes, consts, src_shapes):
    """``scatter``, ``scatter-add`` and the like: the operand's entries stay in place; any
    entry may receive any update."""
    out_shape = tuple(eqn.outvars[0].aval.shape)
    kept = rels[0]
    spread = mapped(rels[2], anywhere, out_shape, (out_shape,), src_shapes)
    return [merge([kept, spread], out_shape, src_shapes)]


def dynamic_slice_relations(eqn, rels, shapes, consts, src_shapes):
    """``dynamic_slice``: exact with known starts (clamped as XLA does), else the axes
    that are cut read any index of the operand."""
    operand_shape, out_shape = shapes[0], tuple(eqn.outvars[0].aval.shape)
    sizes = tuple(int(s) for s in eqn.params["slice_sizes"])
    starts = consts[1:]
    if all(s is not None for s in starts):
        begin = tuple(
            _clamp_start(int(s), n, w, False) for s, n, w in zip(starts, operand_shape, sizes)
        )
        limits = tuple(b + w for b, w in zip(begin, sizes))
        static = (begin, limits, (1,) * len(sizes))
        return [mapped(rels[0], slice_, out_shape, static, src_shapes)]
    static = (operand_shape, sizes)
    return [mapped(rels[0], _dynamic_window, out_shape, static, src_shapes)]


def _dynamic_window(term, src_shape, operand_shape, sizes):
    cut = [d for d, (n, w) in enumerate(zip(operand_shape, sizes)) if w < n]
    t, vs = add_vars(term, [sizes[d] for d in cut])
    out = list(t.out)
    for d, v in zip(cut, vs):
        out[d] = var(len(t.ranges), v)
    return finish([Term(t.ranges, tuple(out), t.src)], src_shape)


def dynamic_update_slice_relations(eqn, rels, shapes, consts, src_shapes):
    """``dynamic_update_slice``: the operand's relation (kept whole) and the update's,
    placed at known starts or anywhere along the axes it does not fill."""
    operand_shape, update_shape = shapes[0], shapes[1]
    out_shape = tuple(eqn.outvars[0].aval.shape)
    starts = consts[2:]
    if all(s is not None for s in starts):
        begin = tuple(
            _clamp_start(int(s), n, w, False)
            for s, n, w in zip(starts, operand_shape, update_shape)
        )
        placed = mapped(rels[1], shifted, out_shape, (begin, update_shape, out_shape), src_shapes)
    else:
        placed = mapped(rels[1], _spread_axes, out_shape, (operand_shape, update_shape), src_shapes)
    return [merge([rels[0], placed], out_shape, src_shapes)]


def _spread_axes(term, src_shape, operand_shape, update_shape):
    cut = [d for d, (n, w) in enumerate(zip(operand_shape, update_shape)) if w < n]
    t, vs = add_vars(term, [operand_shape[d] for d in cut])
    out = list(t.out)
    for d, v in zip(cut, vs):
        out[d] = var(len(t.ranges), v)
    return finish([Term(t.ranges, tuple(out), t.src)], src_shape)


__all__ = [
    "dynamic_slice_relations",
    "dynamic_update_slice_relations",
    "gather_relations",
    "scatter_relations",
]
