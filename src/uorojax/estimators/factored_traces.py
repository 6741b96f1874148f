r"""The bookkeeping of ES-D-RTRL's factored traces (:mod:`~uorojax.estimators.es_d_rtrl`).

What a step reads of the model's structure, and the signals of one batched backward:

* where each dense leaf's traces live in the carry (:func:`trace_layout`): the input
  traces of a layer's kernels stacked by input width, its unit traces one array a state
  leaf with a row per dense leaf;
* which leaves feed which pre-activation :math:`z` (:class:`Plan`), and per-stream
  copies of the leaves whose cotangent gives :math:`\partial L_t/\partial z`
  (:func:`signal_readers`: a pre-activation's bias);
* one forward and its backward for the loss and for each state leaf
  (:func:`local_backward`), whose cotangents give every stream's
  :math:`\delta\tilde s_{t-1}`, the unit-diagonal blocks of :math:`D_t`,
  :math:`\partial L_t/\partial z` and :math:`D^f_t = \partial s_t/\partial z`
  (:func:`preactivation_rows`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from uorojax.estimators.base import model_step, num_streams_of
from uorojax.estimators.shared import mean_loss_cotangents
from uorojax.models.structure.dense import check_dense_inputs, dense_inputs
from uorojax.models.structure.jacobian import ones_on_each_leaf
from uorojax.models.structure.types import (
    DenseInput,
    Structure,
    along,
    leaf_units,
    state_layers,
)
from uorojax.tree import zeros_like


class TraceLayout(NamedTuple):
    """Where every dense leaf's traces live in the carry (:class:`~uorojax.ESDRTRLState`).

    Attributes:
      groups: the kernels stacked into one input trace each, by flattened leaf index.
      rows: for every layer, the rows of its unit traces, each ``(leaf, block)``: a leaf
        of ``groups`` fused gate blocks (:class:`~uorojax.structure.Units`) has a row
        per block, each over the layer's ``n`` units. The groups' kernels first, group
        by group, then the other leaves of the layer (biases, per-unit vectors), so each
        group's rows are one contiguous slice.
    """

    groups: tuple
    rows: dict


def trace_layout(leaves: list, units: list) -> TraceLayout:
    """The carry's layout: kernels (2-d leaves with units) grouped by ``(layer, input
    width, unit axis, blocks, dtype)`` in the order they first occur, and each layer's
    rows."""
    keys: dict = {}
    for j, (leaf, u) in enumerate(zip(leaves, units)):
        if u is not None and leaf.ndim == 2:
            key = (u.layer, leaf.shape[1 - u.axis], u.axis, u.groups, jnp.dtype(leaf.dtype))
            keys.setdefault(key, []).append(j)
    groups = tuple(tuple(g) for g in keys.values())
    rows: dict = {}
    for g in groups:
        rows.setdefault(units[g[0]].layer, []).extend(
            (j, b) for j in g for b in range(units[j].groups)
        )
    for j, (leaf, u) in enumerate(zip(leaves, units)):
        if u is not None and leaf.ndim == 1:
            rows.setdefault(u.layer, []).extend((j, b) for b in range(u.groups))
    return TraceLayout(groups, {layer: tuple(r) for layer, r in rows.items()})


def signal_readers(inputs: list, names: list) -> dict:
    """For every pre-activation, the leaves whose per-stream direct gradients give its
    cotangent ``∂L_t/∂z``: its biases (a scalar input), whose gradient is ``∂L_t/∂z``
    itself, when it has one; otherwise all its leaves (:func:`preactivation_cotangents`)."""
    readers = {}
    for name in names:
        members = [j for j, d in enumerate(inputs) if d is not None and d.preactivation == name]
        biases = [j for j in members if jnp.ndim(inputs[j].vector) == 0]
        readers[name] = biases or members
    return readers


def stacked_copies(leaves: list, copied: list) -> list:
    """The leaves copied per stream, grouped by shape and dtype (each group one stacked
    copy), in the order they occur."""
    groups: dict = {}
    for j in copied:
        groups.setdefault((leaves[j].shape, jnp.dtype(leaves[j].dtype)), []).append(j)
    return [tuple(g) for g in groups.values()]


class Plan(NamedTuple):
    """What a step reads of the structure, the same for every stream.

    Attributes:
      units: :func:`~uorojax.structure.leaf_units` of every params leaf.
      layout: the carry's :class:`TraceLayout`.
      inputs: one stream's :class:`~uorojax.structure.DenseInput` of every params leaf.
      names: the pre-activations, in the order they first occur.
      copy_groups: the leaves copied per stream for the signal (:func:`signal_readers`),
        grouped into stacked copies (:func:`stacked_copies`).
      layers: the layer of every state leaf.
    """

    units: list
    layout: TraceLayout
    inputs: list
    names: list
    copy_groups: list
    layers: list


def plan(structure: Structure, params, state, x) -> Plan:
    """The :class:`Plan` of a step, from one stream's state and input."""
    units = leaf_units(structure, params)
    leaves = jax.tree.leaves(params)
    inputs = dense_inputs(structure, params, state, x)
    check_dense_inputs(structure, params, inputs, "es_d_rtrl")
    names = list(dict.fromkeys(d.preactivation for d in inputs if d is not None))
    copied = sorted({j for js in signal_readers(inputs, names).values() for j in js})
    layers = state_layers(structure, state)
    return Plan(
        units, trace_layout(leaves, units), inputs, names, stacked_copies(leaves, copied), layers
    )


def contract_input(cotangent: jax.Array, a: jax.Array, axis: int) -> jax.Array:
    """``cotangent[i, :] · a`` per unit ``i`` (``axis`` the leaf's unit axis); a bias's
    cotangent times its scalar input. The adjoint of
    :func:`~uorojax.structure.kronecker_leaf` in its unit factor."""
    if cotangent.ndim == 1:
        return cotangent * a
    other = 1 - axis
    return jnp.sum(cotangent * along(a, 2, other), axis=other)


def preactivation_cotangents(delta_theta: list, inputs: list, units: list, names: list) -> list:
    """``∂L_t/∂z`` per unit for every named pre-activation, from the direct gradients of
    its leaves: ``Σ_W δθ_W · a_W / Σ_W ‖a_W‖²`` (``δθ_W = ∂L_t/∂z ⊗ a_W``)."""
    cotangents = []
    for name in names:
        members = [
            (g, d.vector, u.axis)
            for g, d, u in zip(delta_theta, inputs, units)
            if d is not None and d.preactivation == name
        ]
        norm_sq = sum(jnp.sum(jnp.square(a)) for _, a, _ in members)
        total = sum(contract_input(g, a, axis) for g, a, axis in members)
        cotangents.append(total / jnp.where(norm_sq > 0, norm_sq, 1))
    return cotangents


def local_backward(local, loss_fn, copy_groups, params, states, xs, ys, probes=None):
    """One forward of the step without recurrent kernels (``local``:
    :func:`~uorojax.structure.local_apply`), with
    per-stream copies of the leaves :func:`signal_readers` names, and its backward for
    ``1 + q`` rows of cotangents (``q`` state leaves).

    Row 0 is the mean loss's (``∂L/∂output``, no state cotangent): it gives every
    stream's ``δs̃_{t-1}``, the averaged direct gradient of the leaves that move no state,
    and each stream's ``∂L_t/∂z`` from the copies' cotangents. Row ``1 + k`` is ones on
    state leaf k and nothing on the output (the model without recurrent kernels is
    unit-diagonal in a layer): it gives row k of the diagonal blocks of ``D_t`` as its
    state cotangent (as :func:`~uorojax.structure.unit_jacobian_columns`), and ``D^f_t =
    ∂s_k/∂z`` per unit from its copies' cotangents (the adjoint of the JVP along ``1 ⊗
    a/‖a‖²``, :func:`~uorojax.structure.preactivation_derivatives`). The ``q`` state rows
    run through the pullback of the new state alone, batched: they never go through the
    readout, and no params gradient is formed for them.

    With ``probes`` (one stream's zero probes of the inferred program, one per dense
    use), ``local(params, state, x, probes)`` adds them to its dense uses' outputs, and
    their cotangents give every dense use's ``∂L_t/∂z`` (row 0) and ``∂s_k/∂z`` (row
    ``1 + k``) per output entry, exactly, with or without a bias and at any input.

    Returns:
      ``(new_states, outputs, losses, d_theta, d_copies, d_probes, d_states)``:
      ``d_theta`` the mean loss's params cotangent, and the last three with a leading
      axis of ``1 + q`` rows (``d_probes`` None without probes).
    """
    p_leaves, treedef = jax.tree.flatten(params)
    num_streams = num_streams_of(states)
    if probes is not None:
        probes = [jnp.broadcast_to(z, (num_streams, *z.shape)) for z in probes]

    def batched_forward(p, copies, zs, s):
        def one(s1, x1, z1, *group_copies):
            leaves = jax.tree.leaves(p)
            for group, stack in zip(copy_groups, group_copies):
                for r, j in enumerate(group):
                    leaves[j] = stack[r]
            p1 = jax.tree.unflatten(treedef, leaves)
            if z1 is None:
                return model_step(local, p1, s1, x1)
            return local(p1, s1, x1, z1)

        return jax.vmap(one)(s, xs, zs, *copies)

    copies = [
        jnp.broadcast_to(
            jnp.stack([p_leaves[j] for j in g]), (num_streams, len(g), *p_leaves[g[0]].shape)
        )
        for g in copy_groups
    ]
    primals = (params, copies, probes, states)
    (new_states, outputs), pullback = jax.vjp(batched_forward, *primals)
    losses, d_outputs = mean_loss_cotangents(loss_fn, ys)(outputs)
    d_theta, *loss_row = pullback((zeros_like(new_states), d_outputs))
    _, state_pullback = jax.vjp(lambda p, c, z, s: batched_forward(p, c, z, s)[0], *primals)
    state_rows = jax.vmap(lambda ones: state_pullback(ones)[1:])(ones_on_each_leaf(new_states))
    d_copies, d_probes, d_states = jax.tree.map(
        lambda first_row, rows: jnp.concatenate([first_row[None], rows]),
        tuple(loss_row),
        state_rows,
    )
    return new_states, outputs, losses, d_theta, d_copies, d_probes, d_states


def preactivation_rows(the_plan: Plan, num_leaves: int, d_copies, vectors) -> list:
    """Per pre-activation, ``(1 + q, B, n)``: row 0 ``∂L_t/∂z``, row ``1 + k`` ``D^f_t`` of
    state leaf k, from the copies' cotangents (:func:`preactivation_cotangents`)."""
    copied = {j for g in the_plan.copy_groups for j in g}
    read_vectors = [v if j in copied else None for j, v in enumerate(vectors)]

    def signal_cotangents(group_cotangents, read):
        theta = [None] * num_leaves
        for group, d in zip(the_plan.copy_groups, group_cotangents):
            for r, j in enumerate(group):
                theta[j] = d[r]
        dense = [
            None if v is None else DenseInput(the_plan.inputs[j].preactivation, v)
            for j, v in enumerate(read)
        ]
        return preactivation_cotangents(theta, dense, the_plan.units, the_plan.names)

    return jax.vmap(jax.vmap(signal_cotangents), in_axes=(0, None))(d_copies, read_vectors)


def as_rows(per_name: list, names: list, inputs: list, rows) -> jax.Array:
    """Per-pre-activation ``(..., n)`` arrays laid out as a layer's rows, ``(..., P, n)``:
    row r the array of the pre-activation that the r-th row's leaf feeds (one
    concatenation)."""
    return jnp.stack([per_name[names.index(inputs[j].preactivation)] for j, _ in rows], axis=-2)
