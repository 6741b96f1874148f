r"""The sparse influence of SnAp-1, e-prop and RFLO: one implementation for all three.

SnAp-1 (:mod:`~uorojax.estimators.snap`) keeps, of RTRL's influence :math:`J_t =
\partial s_t/\partial\theta`, the entries one step can reach (the pattern :math:`M`:
parameter :math:`\theta_p` moves only its own unit :math:`u(p)`, in every state leaf of
its layer); e-prop (:mod:`~uorojax.estimators.eprop`) and RFLO
(:mod:`~uorojax.estimators.rflo`) keep the same entries and carry them with the state
Jacobian of each unit's own dynamics. For B streams,

.. math::
    g = \frac1B \sum_b \big(\delta\theta_b + \delta s_b \cdot J_{b,t-1}\big), \qquad
    J_{b,t} = B_{b,t} \odot M + \hat A_{b,t} J_{b,t-1},

with :math:`\hat A_t` the unit-diagonal blocks of :math:`A_t = \partial s_t/\partial
s_{t-1}` (SnAp-1) or of :math:`\tilde A_t`, the same with the recurrent kernels taken out
(e-prop, ``keep_diagonal=False``), and :math:`\delta\theta`, :math:`\delta s` from one
VJP of the step through the same params. :func:`sparse_step` is that step, written once
for B streams (one stream is B = 1); :func:`sparse_estimator` builds each estimator on it.

The influence of a parameter leaf is one array with the state leaves of its layer
stacked and the leaf's unit axis first (:class:`Layout`); docs/performance.md ("SnAp-1's
layout") says why.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.base import Estimator, StepInfo, loss_vjp, model_step
from uorojax.estimators.batching import streams_estimator
from uorojax.estimators.cotangent_norm import pullback_and_squared_norms
from uorojax.estimators.shared import kept_unless_finite, mean_loss_cotangents
from uorojax.models.structure.check import check_single_stream
from uorojax.models.structure.jacobian import (
    local_apply,
    ones_on_each_leaf,
    unit_jacobian_columns,
)
from uorojax.models.structure.resolve import StructureSource
from uorojax.models.structure.types import Structure, leaf_units, state_layers
from uorojax.tree import first, tree_finite

PyTree = Any


class EPropState(NamedTuple):
    """E-prop's and RFLO's carry: the model state and the eligibility traces.

    ``trace`` is laid out as SnAp-1's influence (:class:`~uorojax.SnApState`):
    ``trace[j]`` is None or ``(q, n, *rest)`` for parameter leaf j, and its entry
    ``[k, u(p), ...]`` holds ``J̃_k[u(p), p]``, the trace of ``θ_p`` in state leaf k of
    its unit ``u(p)`` (SnAp-1's pattern).
    """

    state: PyTree
    trace: tuple


class Layout(NamedTuple):
    """Where each parameter leaf's influence lives (see :class:`~uorojax.SnApState`).

    Attributes:
      units: :func:`~uorojax.structure.leaf_units` of every parameter leaf.
      members: for every parameter leaf with units, the indices (flattened order) of the
        state leaves of its layer; None for the others.
    """

    units: list
    members: list


def layout(structure: Structure, params, state) -> Layout:
    """The :class:`Layout` of a model's influence, from its structure."""
    units = leaf_units(structure, params)
    layers = state_layers(structure, state)
    members = [
        None if u is None else tuple(k for k, layer in enumerate(layers) if layer == u.layer)
        for u in units
    ]
    return Layout(units, members)


def unit_major(leaf: jax.Array, axis: int, lead: int = 0) -> jax.Array:
    """A parameter-shaped array (after ``lead`` leading axes) with its unit ``axis``
    moved in front of the parameter's other axes."""
    return jnp.moveaxis(leaf, lead + axis, lead)


def param_major(entry: jax.Array, axis: int) -> jax.Array:
    """The inverse of :func:`unit_major` (no leading axes): the unit axis back in place."""
    return jnp.moveaxis(entry, 0, axis)


def zero_influence(structure: Structure, params, state0, who: str) -> tuple:
    """Zeros on SnAp-1's pattern (see :class:`~uorojax.SnApState`), after checking the params and
    state against ``structure`` (errors name ``who``)."""
    checks.check_init(params, state0, who)
    check_single_stream(structure, params, state0, who, feedforward=True, fused=True)
    where = layout(structure, params, state0)
    state_dtypes = [jnp.result_type(s) for s in jax.tree.leaves(state0)]
    return tuple(
        None
        if u is None  # ∂s/∂θ: the dtype the step computes it in (a float64 state promotes)
        else jnp.zeros(
            (len(members), *unit_major(p, u.axis).shape), jnp.result_type(p, *state_dtypes)
        )
        for p, u, members in zip(jax.tree.leaves(params), where.units, where.members)
    )


def influence_pattern(apply_fn, params, state, x) -> tuple[list, list]:
    """``B_t ⊙ M`` for every state leaf k and its squared norms, one stream.

    Returns, for every params leaf j (flattened order), an array ``(q, *leaf)`` whose row
    k is ``B_t ⊙ M`` on state leaf k (its meaningful entries: leaf j's own layer), and a
    ``(q,)`` array of the rows' squared norms. One params VJP per state leaf with a
    cotangent of ones on that leaf, batched over the leaves
    (:func:`~uorojax.estimators.cotangent_norm.pullback_and_squared_norms`): ``Σ_i
    ∂s_k[i]/∂θ_p`` has the single term ``i = u(p)``. A dense kernel's row is an outer
    product, whose norm comes from its factors.
    """

    def pattern_on(ones):
        return pullback_and_squared_norms(
            lambda p: apply_fn(p, state, x)[0], params, ones, batched=True
        )

    patterns, squared = jax.vmap(pattern_on)(ones_on_each_leaf(state))
    return jax.tree.leaves(patterns), jax.tree.leaves(squared)


def member_rows(stacked: jax.Array, members: tuple, axis: int = 1) -> jax.Array:
    """The rows ``members`` of a stack over all state leaves (on ``axis``): a slice when
    they are consecutive, as a layer's state leaves normally are."""
    if members == tuple(range(members[0], members[-1] + 1)):
        return jax.lax.slice_in_dim(stacked, members[0], members[-1] + 1, axis=axis)
    return jnp.take(stacked, jnp.asarray(members), axis=axis)


def weighted_sum_over_streams(weights: jax.Array, terms: jax.Array, max_terms: int = 128):
    """``Σ_b Σ_k weights[b, k, u] · terms[b, k, u, ...]``: per-stream terms ``(B, q, n,
    ...)`` weighted per stream, state leaf and unit, summed to ``(n, ...)``."""
    return sum(weighted_partial_sums(weights, terms, max_terms))


def weighted_partial_sums(
    weights: jax.Array, terms: jax.Array, max_terms: int = 128, block_terms: int = 16
) -> list:
    """:func:`weighted_sum_over_streams` as partial sums over contiguous blocks of
    streams, each at most ``block_terms`` slices ``weights[b, k] ⊙ terms[b, k]``, each
    written as a sum of slices; beyond ``max_terms`` slices, one plain reduction
    (docs/performance.md, "SnAp-1's history term").
    """
    num_streams, q = terms.shape[:2]
    if num_streams * q > max_terms:
        return [jnp.sum(along_units(weights, terms.ndim) * terms, axis=(0, 1))]
    per_block = max(1, block_terms // q)
    partials = []
    for start in range(0, num_streams, per_block):
        slices = [
            along_units(weights[b, k], terms.ndim - 2) * terms[b, k]
            for b in range(start, min(start + per_block, num_streams))
            for k in range(q)
        ]
        partials.append(sum(slices[1:], slices[0]))
    return partials


def along_units(weights: jax.Array, ndim: int) -> jax.Array:
    """Weights whose last axis runs over the units, shaped to broadcast against an
    ``ndim``-array whose matching axis is followed by ``ndim - weights.ndim`` others."""
    return jnp.reshape(weights, (*weights.shape, *([1] * (ndim - weights.ndim))))


def stream_state_weights(delta_s: list, members, groups: int = 1) -> jax.Array:
    """``(B, q, groups·n)``: the per-stream state cotangents of a layer's ``q`` state
    leaves, repeated for each block of a fused leaf (:func:`per_entry`)."""
    return per_entry(jnp.stack([delta_s[k] for k in members], axis=1), groups)


def per_entry(weights: jax.Array, groups: int) -> jax.Array:
    """Per-unit weights ``(..., n)`` for every entry of a unit axis of ``groups`` blocks
    of ``n`` (block-major, entry ``g·n + u`` is unit ``u``: fused gates), ``(...,
    groups·n)``; the weights themselves for one block."""
    if groups == 1:
        return weights
    return jnp.tile(weights, (1,) * (weights.ndim - 1) + (groups,))


def sparse_history(delta_theta, delta_s, influence, where: Layout):
    """``g = δθ + Σ_b δs_b · J_{b, t-1}`` with J on the pattern, and whether it is finite.

    Each parameter reads the state cotangents of its own unit, in every state leaf of its
    layer, summed over the leading stream axis of ``delta_s`` and ``influence`` (``δθ``
    is already summed), in partial sums over blocks of streams
    (:func:`weighted_partial_sums`). The sum is formed in the influence's unit-major
    layout and its finiteness tested there, partial sums included (a non-finite partial
    makes the gradient non-finite: the same test), before it is laid out as the params.
    """
    leaves, treedef = jax.tree.flatten(delta_theta)
    unit_major_grads, partials = {}, []
    for j, (entry, u, members) in enumerate(zip(influence, where.units, where.members)):
        if entry is not None:
            weights = stream_state_weights(delta_s, members, u.groups)
            parts = weighted_partial_sums(weights, entry)
            partials += parts
            unit_major_grads[j] = unit_major(leaves[j], u.axis) + sum(parts).astype(leaves[j].dtype)
    finite = tree_finite(
        [g for j, g in enumerate(leaves) if j not in unit_major_grads]
        + list(unit_major_grads.values())
        + partials
    )
    for j, g in unit_major_grads.items():
        leaves[j] = param_major(g, where.units[j].axis)
    return jax.tree.unflatten(treedef, leaves), finite


def sparse_influence_update(columns, patterns, influence, where: Layout):
    """``J_t = B_t ⊙ M + (diagonal blocks of A_t) J_{t-1}`` on the pattern, B streams.

    For each parameter leaf, one elementwise operation over its stacked influence
    ``(B, q, n, ...)``: the pattern rows of its layer plus the ``q × q`` unit blocks
    applied to the old influence, ``Σ_k2 A[:, :, k2] ⊙ J[:, k2]`` broadcast over the
    rows (``columns[k2]``: ``(B, q_all, n)`` from
    :func:`~uorojax.structure.unit_jacobian_columns`; ``patterns[j]``: ``(B, q_all,
    *leaf)`` from :func:`influence_pattern`), from broadcasts and slices only.
    """
    new = []
    for j, (entry, u, members) in enumerate(zip(influence, where.units, where.members)):
        if entry is None:
            new.append(None)
            continue
        update = unit_major(member_rows(patterns[j], members), u.axis, lead=2)
        if len(members) == 1:
            blocks = per_entry(member_rows(columns[members[0]], members), u.groups)  # (B, 1, n)
            new.append(update + along_units(blocks, entry.ndim) * entry)
            continue
        for kk2, k2 in enumerate(members):
            # (B, q, n): A[k, k2] for each row k
            blocks = per_entry(member_rows(columns[k2], members), u.groups)
            update = update + along_units(blocks, entry.ndim) * entry[:, kk2 : kk2 + 1]
        new.append(update)
    return tuple(new)


def influence_bound_finite(columns, squared, influence, where: Layout) -> jax.Array:
    """True when every stream's bound on the new influence is finite.

    Every entry of the new ``J_k`` is bounded by ``‖B_k ⊙ M‖ + Σ_k2 max|A_kk2| ‖J_k2‖``
    (the diagonal blocks of ``A_t`` and the old influence), so a finite bound makes the
    new influence finite without reading it. A NaN or inf in ``B``, ``A`` or the old
    ``J`` makes the bound non-finite.
    """
    q = len(columns)
    old_squared, pattern_squared, layer_of = [0.0] * q, [0.0] * q, {}
    for j, (entry, members) in enumerate(zip(influence, where.members)):
        if entry is None:
            continue
        per_row = jnp.sum(jnp.square(entry), axis=tuple(range(2, entry.ndim)))  # (B, q)
        for kk, k in enumerate(members):
            old_squared[k] = old_squared[k] + per_row[:, kk]
            pattern_squared[k] = pattern_squared[k] + squared[j][:, k]
            layer_of[k] = members
    finite = jnp.asarray(True)
    for k, members in layer_of.items():
        bound = jnp.sqrt(pattern_squared[k]) + sum(
            jnp.max(jnp.abs(columns[k2][:, k]), axis=-1) * jnp.sqrt(old_squared[k2])
            for k2 in members
        )
        finite = finite & jnp.all(jnp.isfinite(bound))
    return finite


def sparse_step(
    apply_fn, loss_fn, source, keep_diagonal, carry_type, params, carry, xs, ys, stream_keys
):
    """One step of B streams (leading axes), each with its influence: SnAp-1
    (``keep_diagonal=True``) or e-prop (``False``; see the module docstring).

    The averaged direct gradient ``δθ`` and every stream's state cotangent ``δs`` come
    from one batched backward of the mean loss (for e-prop through the params without
    recurrent kernels, :func:`~uorojax.structure.local_apply`);
    the history term ``Σ_b δs_b · J_b`` from :func:`sparse_history`; the diagonal blocks
    of ``A_t`` and the pattern ``B_t ⊙ M`` from each stream's VJPs, into
    :func:`sparse_influence_update`. The influence is kept where the gradient is not
    finite, and ``info.carry_finite`` certifies the new state and influence.

    Returns:
      ``(grads, carry_type(new_states, new_influence), info)``.
    """
    del stream_keys  # deterministic
    states, influence = carry
    structure = source.at_step(params, first(states), first(xs))
    where = layout(structure, params, first(states))
    local = local_apply(apply_fn, structure, keep_diagonal=keep_diagonal)

    new_states, outputs, losses, _, (mean_delta_theta, delta_s) = loss_vjp(
        lambda p, s: jax.vmap(lambda s1, x1: model_step(local, p, s1, x1))(s, xs),
        mean_loss_cotangents(loss_fn, ys),
        params,
        states,
    )
    grads, grads_finite = sparse_history(
        mean_delta_theta, jax.tree.leaves(delta_s), influence, where
    )
    columns = jax.vmap(
        lambda s, x: unit_jacobian_columns(
            apply_fn, structure, params, s, x, keep_diagonal=keep_diagonal
        )
    )(states, xs)
    patterns, squared = jax.vmap(lambda s, x: influence_pattern(apply_fn, params, s, x))(states, xs)
    new_influence = sparse_influence_update(columns, patterns, influence, where)
    finite = influence_bound_finite(columns, squared, influence, where)
    new_influence = kept_unless_finite(grads_finite, new_influence, influence)
    info = StepInfo(losses, outputs, jnp.asarray(True), finite & tree_finite(new_states))
    return grads, carry_type(new_states, new_influence), info


def sparse_estimator(
    who: str, carry_type, apply_fn, loss_fn, structure, *, keep_diagonal: bool, example_x=None
) -> Estimator:
    """The estimator of :func:`sparse_step` (one stream as B = 1), whose errors name
    ``who`` (``"snap1"``, ``"eprop"``, ``"rflo"``); its carry is ``carry_type(state,
    influence)``. ``structure=None`` infers the structure from ``example_x``; a
    hand-written one is checked before any gradient
    (:class:`~uorojax.models.structure.resolve.StructureSource`)."""
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    source = StructureSource(who, apply_fn, structure, example_x)

    def init_state(params, state0):
        found = source.at_init(params, state0)
        return carry_type(state0, zero_influence(found, params, state0, who))

    step = functools.partial(sparse_step, apply_fn, loss_fn, source, keep_diagonal, carry_type)
    return streams_estimator(init_state, step)
