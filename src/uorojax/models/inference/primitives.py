r"""The relation of every output of one jaxpr equation, from its inputs' relations.

:func:`equation_relations` dispatches on the primitive's name. Known primitives have
exact rules (:mod:`~uorojax.models.inference.rules`, :mod:`~uorojax.models.inference.indexing`);
primitives whose derivative is zero (``stop_gradient``, ``sign``, ``floor``, …) give no
relation; **any other primitive counts as full mixing**: every output entry depends on
every entry of every source its inputs depend on. A missing rule can only widen a
pattern, never narrow it. Call-like and control-flow primitives are handled by the
interpreter (:mod:`~uorojax.models.inference.analysis`), which recurses into their jaxprs.

A relation map is a ``dict`` from a source id to a non-empty relation (a frozenset of
terms); a source that does not appear has no dependence.

Example::

    outs = equation_relations(eqn, [rels_x, rels_w], [None, None], src_shapes)
"""

from __future__ import annotations

from uorojax.models.inference import indexing, rules
from uorojax.models.inference.rules import full, mapped, merge

ELEMENTWISE = frozenset(
    """add sub mul div neg exp exp2 log log1p expm1 tanh logistic sin cos tan asin acos atan
    sinh cosh asinh acosh atanh atan2 sqrt rsqrt cbrt pow integer_pow square max min abs
    select_n clamp rem erf erfc erf_inv lgamma digamma igamma igammac igamma_grad_a
    random_gamma_grad bessel_i0e bessel_i1e polygamma zeta regularized_incomplete_beta
    real imag conj complex copy copy_p reduce_precision add_any convert_element_type
    mul_add""".split()
)
"""Element-wise primitives with a derivative in every operand."""

ZERO_DERIVATIVE = frozenset(
    """stop_gradient sign floor ceil round nextafter is_finite iota rng_uniform
    rng_bit_generator random_bits random_seed random_wrap random_unwrap random_split
    random_fold_in threefry2x32 argmax argmin eq ne lt le gt ge and or not xor
    shift_left shift_right_logical shift_right_arithmetic population_count clz
    reduce_and reduce_or reduce_xor""".split()
)
"""Primitives whose outputs have no derivative (or no float output)."""

PASS_THROUGH = frozenset({"device_put", "optimization_barrier"})
"""Primitives whose output ``i`` is input ``i``."""

REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod"})
CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})
SCATTERS = frozenset(
    {
        "scatter",
        "scatter-add",
        "scatter_add",
        "scatter-mul",
        "scatter_mul",
        "scatter-min",
        "scatter_min",
        "scatter-max",
        "scatter_max",
        "scatter_sub",
    }
)


def mixing(rels_list, out_shapes, src_shapes) -> list[dict]:
    """Full mixing: every output depends on all of every source its inputs depend on."""
    sources = set()
    for rels in rels_list:
        sources.update(rels)
    return [{s: full(shape, src_shapes[s]) for s in sorted(sources)} for shape in out_shapes]


def _shape(v):
    return tuple(v.aval.shape)


def equation_relations(eqn, rels_list, consts, src_shapes) -> list[dict]:
    """The relation map of each output of ``eqn``.

    Args:
      eqn: a jaxpr equation (not call-like, not control flow).
      rels_list: the relation map of each input.
      consts: each input's value where known at trace time (small integer arrays), else
        None; only index rules read them.
      src_shapes: the shape of every source id.

    Returns:
      One relation map per output (before the rule that integer outputs have none).
    """
    name = eqn.primitive.name
    p = eqn.params
    in_shapes = [_shape(v) for v in eqn.invars]
    out_shapes = [_shape(v) for v in eqn.outvars]
    out_shape = out_shapes[0] if out_shapes else ()
    if name in ZERO_DERIVATIVE:
        return [{} for _ in out_shapes]
    if name in PASS_THROUGH:
        return list(rels_list)
    if name in ELEMENTWISE:
        parts = [
            rels
            if shape == out_shape
            else mapped(rels, rules.elementwise, out_shape, (shape, out_shape), src_shapes)
            for rels, shape in zip(rels_list, in_shapes)
        ]
        return [merge(parts, out_shape, src_shapes)]
    if name == "broadcast_in_dim":
        static = (in_shapes[0], out_shape, tuple(p["broadcast_dimensions"]))
        return [mapped(rels_list[0], rules.broadcast, out_shape, static, src_shapes)]
    if name == "reshape":
        rels, shape = rels_list[0], in_shapes[0]
        if p.get("dimensions") is not None:
            perm = tuple(p["dimensions"])
            shape = tuple(shape[i] for i in perm)
            rels = mapped(rels, rules.transpose, shape, (perm,), src_shapes)
        return [mapped(rels, rules.reshape, out_shape, (shape, out_shape), src_shapes)]
    if name == "squeeze":
        dims = tuple(d % len(in_shapes[0]) for d in p["dimensions"])
        return [mapped(rels_list[0], rules.squeeze, out_shape, (dims,), src_shapes)]
    if name == "transpose":
        return [
            mapped(rels_list[0], rules.transpose, out_shape, (tuple(p["permutation"]),), src_shapes)
        ]
    if name == "slice":
        strides = p["strides"] or (1,) * len(out_shape)
        static = (tuple(p["start_indices"]), tuple(p["limit_indices"]), tuple(strides))
        return [mapped(rels_list[0], rules.slice_, out_shape, static, src_shapes)]
    if name == "pad":
        config = tuple(tuple(int(c) for c in cfg) for cfg in p["padding_config"])
        body = mapped(rels_list[0], rules.pad, out_shape, (config, out_shape), src_shapes)
        value = mapped(rels_list[1], rules.anywhere, out_shape, (out_shape,), src_shapes)
        return [merge([body, value], out_shape, src_shapes)]
    if name == "concatenate":
        axis, start, parts = p["dimension"], 0, []
        for rels, shape in zip(rels_list, in_shapes):
            parts.append(mapped(rels, rules.offset, out_shape, (axis, start), src_shapes))
            start += shape[axis]
        return [merge(parts, out_shape, src_shapes)]
    if name == "split":
        axis, start, outs = p["axis"], 0, []
        for shape in out_shapes:
            size = shape[axis]
            outs.append(
                mapped(rels_list[0], rules.window, shape, (axis, start, start + size), src_shapes)
            )
            start += size
        return outs
    if name == "rev":
        static = (in_shapes[0], tuple(p["dimensions"]))
        return [mapped(rels_list[0], rules.rev, out_shape, static, src_shapes)]
    if name == "dot_general":
        return [dot_relations(p, rels_list, in_shapes, out_shape, src_shapes)]
    if name in REDUCTIONS:
        return [mapped(rels_list[0], rules.reduce, out_shape, (tuple(p["axes"]),), src_shapes)]
    if name in CUMULATIVE:
        axis = p["axis"]
        static = (axis, out_shape[axis])
        return [mapped(rels_list[0], rules.widen, out_shape, static, src_shapes)]
    if name == "sort":
        dim = p["dimension"]
        static = (dim, out_shape[dim])
        spread = merge(
            [mapped(r, rules.widen, out_shape, static, src_shapes) for r in rels_list],
            out_shape,
            src_shapes,
        )
        return [spread for _ in out_shapes]
    if name == "gather":
        return indexing.gather_relations(eqn, rels_list, in_shapes, consts, src_shapes)
    if name in SCATTERS:
        return indexing.scatter_relations(eqn, rels_list, in_shapes, consts, src_shapes)
    if name == "dynamic_slice":
        return indexing.dynamic_slice_relations(eqn, rels_list, in_shapes, consts, src_shapes)
    if name == "dynamic_update_slice":
        return indexing.dynamic_update_slice_relations(
            eqn, rels_list, in_shapes, consts, src_shapes
        )
    return mixing(rels_list, out_shapes, src_shapes)


def dot_relations(params, rels_list, in_shapes, out_shape, src_shapes) -> dict:
    """``dot_general``: each operand's entries reach the outputs that read them."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    contract, batch = (tuple(lc), tuple(rc)), (tuple(lb), tuple(rb))
    parts = []
    for side in (0, 1):
        other = 1 - side
        other_shape = in_shapes[other]
        other_free = tuple(
            n
            for d, n in enumerate(other_shape)
            if d not in contract[other] and d not in batch[other]
        )
        static = (side, len(in_shapes[side]), contract[side], batch[side], other_free)
        parts.append(mapped(rels_list[side], rules.dot, out_shape, static, src_shapes))
    return merge(parts, out_shape, src_shapes)


__all__ = ["ELEMENTWISE", "ZERO_DERIVATIVE", "equation_relations", "merge", "mixing"]
