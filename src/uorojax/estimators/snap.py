r"""SnAp-1 (Menick et al. 2021): the influence matrix kept on its one-step sparsity pattern.

Menick, Elsen, Evci, Osindero, Simonyan & Graves (2021), "Practical real time recurrent
learning with a sparse approximation", ICLR.

SnAp-1 keeps only the entries of :math:`J_t = \partial s_t/\partial\theta` that one step
can reach: parameter :math:`\theta_p` of a layer moves, in one step, only its own unit
:math:`u(p)` of that layer (in every state leaf of the layer: an LSTM's ``c`` and
``h``). With :math:`M` that pattern,

.. math::  J_t \approx (B_t + A_t J_{t-1}) \odot M,

so each parameter carries one number per state leaf of its layer: memory ``O(|Θ|)`` per
stream. The update needs only the unit-diagonal blocks of :math:`A_t` (a 2×2 block per
unit for an LSTM's ``(c, h)``) and the pattern's entries of :math:`B_t`:

* :math:`B_t \odot M` for state leaf k is one params VJP with a cotangent of ones on leaf k:
  :math:`\sum_i \partial s_{k,i}/\partial\theta_p` has a single term, :math:`i = u(p)`.
* The diagonal blocks come from one VJP per state leaf of the model with its recurrent
  kernels diagonalised (:func:`~uorojax.structure.unit_jacobian_columns`).

The gradient is :math:`g = \delta\theta + \delta s \cdot J_{t-1}` (the direct gradient,
readouts included, is exact). SnAp-1 is biased for dense recurrences, and **exact**
(equal to RTRL) for a single layer whose recurrence is element-wise
(:class:`~uorojax.models.ElementwiseMGUCell`), where :math:`A_t` is diagonal and
:math:`B_t` already lies on the pattern. In a stack, a parameter's influence on the
layers above it within the same step enters the direct gradient exactly, but is not
carried to later steps. A :class:`~uorojax.structure.Feedforward` parameter (an encoder,
a norm, a layer's output map in a deep stack) carries no influence: its gradient is
its direct gradient :math:`\delta\theta` at the step. On a stack of element-wise layers
(:func:`~uorojax.lru_stack`) SnAp-1 is then exact per-layer RTRL for each layer's
recurrent parameters, spatial backpropagation within the step for every parameter, and
no temporal trace for the feedforward ones: the online rule of Zucchet et al. (2023).

**B streams in one step** (:func:`streams_step`; ``per_stream(snap1(...))``, and one
stream as B = 1). A step reads the influence twice and writes it once, the least its
equations allow without fusing a reduction with an elementwise update:

* one batched backward of the mean loss gives the averaged direct gradient and every
  stream's state cotangent ``δs_b`` (no per-stream gradient is formed);
* the history term ``Σ_b δs_b · J_{b,t-1}`` is one sum of per-stream slices a leaf,
  one read of the influence;
* the update is one elementwise operation a leaf, into which XLA fuses the pattern's
  outer products (never written out) and the guard's select.

The influence of a parameter leaf is one array with the state leaves of its layer
stacked and the leaf's unit axis first (:class:`SnApState`): each unit's factors are
then constant along the contiguous inner axis, so XLA computes them once a row (with the
unit axis last it recomputed the diagonal blocks' arithmetic for every entry), and a
layer's ``q × q`` block update is one operation. With one state leaf a layer (GRU,
Simple) that operation is elementwise and XLA updates the influence in place; with two
(LSTM, LRU) each new entry reads both old ones, and XLA's CPU backend writes the
result to a new buffer and copies it back.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    StepInfo,
    init_per_stream,
    loss_vjp,
    model_step,
    num_streams_of,
    step_loss_and_cotangent,
)
from uorojax.estimators.batching import of_streams, one_stream
from uorojax.estimators.cotangent_norm import pullback_and_squared_norms
from uorojax.models.structure.check import check_single_stream
from uorojax.models.structure.jacobian import (
    diagonalised_params,
    ones_on_each_leaf,
    unit_jacobian_columns,
)
from uorojax.models.structure.types import Structure, leaf_units, require, state_layers
from uorojax.tree import tree_finite

PyTree = Any

MODEL_HINT = (
    "uorojax.tanh_rnn, uorojax.linen_model and uorojax.from_linen_cells (LSTM, "
    "OptimizedLSTM, GRU, Simple, MGU, ElementwiseMGU and LRU cells) and uorojax.lru_stack "
    "provide model.structure."
)


class SnApState(NamedTuple):
    """SnAp-1 carry: the model state and the sparse influence.

    ``influence[j]`` belongs to parameter leaf j (flattened order): None for a leaf that
    carries no influence; otherwise an array of shape ``(q, n, *rest)`` for the ``q``
    state leaves of the leaf's layer (in flattened order), its unit axis of ``n`` units
    first and its other axes after it in their order. Entry ``[k, u(p), ...]`` holds
    ``∂s_k[u(p)]/∂θ_p``, ``u(p)`` the unit of ``p``. Per stream (``per_stream``), every
    array has a leading stream axis.

    One array per parameter leaf, with the layer's state leaves stacked, makes the
    coupled update of a layer's state leaves (an LSTM's ``(c, h)`` block) one fused
    operation; the unit axis first makes each unit's factors constant along the
    contiguous inner axis of the update and of the history term.
    """

    state: PyTree
    influence: tuple


class Layout(NamedTuple):
    """Where each parameter leaf's influence lives (see :class:`SnApState`).

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


def snap1_init(structure: Structure, params, state0) -> SnApState:
    """A zero influence on the pattern of ``structure``."""
    return SnApState(state0, zero_influence(structure, params, state0, "snap1"))


def zero_influence(structure: Structure, params, state0, who: str) -> tuple:
    """Zeros on SnAp-1's pattern (see :class:`SnApState`), after checking the params and
    state against ``structure`` (errors name ``who``)."""
    checks.check_init(params, state0, who)
    check_single_stream(structure, params, state0, who, feedforward=True)
    where = layout(structure, params, state0)
    return tuple(
        None
        if u is None
        else jnp.zeros((len(members), *unit_major(p, u.axis).shape), jnp.result_type(p))
        for p, u, members in zip(jax.tree.leaves(params), where.units, where.members)
    )


def influence_pattern(apply_fn, params, state, x) -> tuple[list, list]:
    """``B_t ⊙ M`` for every state leaf k and its squared norms, one stream.

    Returns, for every params leaf j (flattened order), an array ``(q, *leaf)`` whose row
    k is ``B_t ⊙ M`` on state leaf k (its meaningful entries: leaf j's own layer), and a
    ``(q,)`` array of the rows' squared norms. One params VJP per state leaf with a
    cotangent of ones on that leaf, batched over the leaves
    (:func:`~uorojax.estimators.cotangent_norm.pullback_and_squared_norms`): ``Σ_i ∂s_k[i]/∂θ_p``
    has the single term ``i = u(p)``. For one stream a dense kernel's row is an outer
    product whose norm comes from its factors, so its one use is the influence update,
    where XLA fuses it instead of writing it out (per stream, ``B·|Θ|`` floats a leaf).
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
    streams, each at most ``block_terms`` slices ``weights[b, k] ⊙ terms[b, k]``.

    Each partial is written as a sum of slices, which XLA fuses into one loop over the
    result that reads each slice once, contiguously; XLA's CPU backend reduces a leading
    axis fused with a broadcast product several times slower (docs/performance.md). A
    block of few slices keeps the loop's concurrent memory streams few: one loop over
    all 64 slices of an LSTM's 32 streams read at half the rate of blocks of 16 on the
    development CPU. Beyond ``max_terms`` slices (a large fusion to compile) the sum is
    one plain reduction.
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


def stream_state_weights(delta_s: list, members) -> jax.Array:
    """``(B, q, n)``: the per-stream state cotangents of a layer's ``q`` state leaves."""
    return jnp.stack([delta_s[k] for k in members], axis=1)


def sparse_history(delta_theta, delta_s, influence, where: Layout):
    """``g = δθ + Σ_b δs_b · J_{b, t-1}`` with J on the pattern, and whether it is finite.

    Each parameter reads the state cotangents of its own unit, in every state leaf of its
    layer, summed over the leading stream axis of ``delta_s`` and ``influence`` (``δθ``
    is already summed), in partial sums over blocks of streams
    (:func:`weighted_partial_sums`). The sum is formed in the influence's unit-major
    layout and its finiteness tested there, before it is laid out as the params. The
    test also reads the partial sums: a non-finite partial makes the gradient
    non-finite, so the result is the same, and the second use makes XLA write each
    partial out once instead of fusing all of them into one loop with many concurrent
    memory streams.
    """
    leaves, treedef = jax.tree.flatten(delta_theta)
    unit_major_grads, partials = {}, []
    for j, (entry, u, members) in enumerate(zip(influence, where.units, where.members)):
        if entry is not None:
            parts = weighted_partial_sums(stream_state_weights(delta_s, members), entry)
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

    For each parameter leaf, one fused elementwise operation over its stacked influence
    ``(B, q, n, ...)``: the pattern rows of its layer plus the ``q × q`` unit blocks
    applied to the old influence, ``Σ_k2 A[:, :, k2] ⊙ J[:, k2]`` broadcast over the
    rows (``columns[k2]``: ``(B, q_all, n)`` from
    :func:`~uorojax.structure.unit_jacobian_columns`; ``patterns[j]``: ``(B, q_all,
    *leaf)`` from :func:`influence_pattern`). Built from broadcasts and slices only, so
    that XLA computes each unit's factors once per row of the contiguous inner axis; with
    one state leaf it is elementwise in the old influence, which XLA then updates in
    place.
    """
    new = []
    for j, (entry, u, members) in enumerate(zip(influence, where.units, where.members)):
        if entry is None:
            new.append(None)
            continue
        update = unit_major(member_rows(patterns[j], members), u.axis, lead=2)
        if len(members) == 1:
            blocks = member_rows(columns[members[0]], members)  # (B, 1, n)
            new.append(update + along_units(blocks, entry.ndim) * entry)
            continue
        for kk2, k2 in enumerate(members):
            blocks = member_rows(columns[k2], members)  # (B, q, n): A[k, k2] for each row k
            update = update + along_units(blocks, entry.ndim) * entry[:, kk2 : kk2 + 1]
        new.append(update)
    return tuple(new)


def influence_bound_finite(columns, squared, influence, where: Layout) -> jax.Array:
    """True when every stream's bound on the new influence is finite.

    Every entry of the new ``J_k`` is bounded by ``‖B_k ⊙ M‖ + Σ_k2 max|A_kk2| ‖J_k2‖``
    (the diagonal blocks of ``A_t`` and the old influence), so a finite bound makes the
    new influence finite without reading it: the trainer's guard then keeps or replaces
    it within the update itself, instead of testing and selecting it in two more passes.
    A NaN or inf in ``B``, ``A`` or the old ``J`` makes the bound non-finite.
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


def kept_unless_finite(finite, new, old):
    """The new influence where the gradient is finite, the old one elsewhere.

    A step whose gradient is not finite leaves the influence as it was (the trainer and
    ``as_optax`` drop such a step anyway). The select also orders the gradient's read of
    the old influence before the update that overwrites it, so that XLA updates the
    influence in place in whatever loop runs the step (see
    :func:`uorojax.estimators.uoro.kept_unless_finite`).
    """
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def streams_step(
    apply_fn, loss_fn, structure, params, states, influence, xs, ys, *, keep_diagonal=True
):
    """B streams of SnAp-1 (``keep_diagonal=False``: e-prop), each with its influence.

    The averaged direct gradient ``δθ`` and every stream's state cotangent ``δs`` come
    from one batched backward of the mean loss (for e-prop through the params without
    recurrent kernels, :func:`~uorojax.structure.diagonalised_params`); the history
    term ``Σ_b δs_b · J_b`` from one sum over streams a leaf; the diagonal blocks of
    ``A_t`` and the pattern ``B_t ⊙ M`` from each stream's JVPs and VJPs, fused into the
    update of its influence.

    Returns:
      ``(grads, new_states, new_influence, losses, outputs, carry_finite)``.
    """
    num_streams = num_streams_of(states)
    where = layout(structure, params, jax.tree.map(lambda s: s[0], states))

    def local(p, s):
        return p if keep_diagonal else diagonalised_params(structure, p, s, keep_diagonal=False)

    def losses_and_cotangents(outputs):
        """Per-stream losses, and the cotangents of their mean over streams."""
        losses, d_outputs = jax.vmap(lambda o, y1: step_loss_and_cotangent(loss_fn, y1)(o))(
            outputs, ys
        )
        return losses, jax.tree.map(lambda d: d / num_streams, d_outputs)

    new_states, outputs, losses, _, (mean_delta_theta, delta_s) = loss_vjp(
        lambda p, s: jax.vmap(lambda s1, x1: model_step(apply_fn, local(p, s1), s1, x1))(s, xs),
        losses_and_cotangents,
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
    return grads, new_states, new_influence, losses, outputs, finite & tree_finite(new_states)


def snap1_streams(apply_fn, loss_fn, structure, params, carry: SnApState, xs, ys):
    """SnAp-1 on B streams (leading axes): ``(grads, carry, info)``."""
    grads, states, influence, losses, outputs, finite = streams_step(
        apply_fn, loss_fn, structure, params, carry.state, carry.influence, xs, ys
    )
    return grads, SnApState(states, influence), StepInfo(losses, outputs, jnp.asarray(True), finite)


def snap1(apply_fn: ApplyFn, loss_fn: LossFn, *, structure: Structure | None) -> Estimator:
    r"""SnAp-1: the influence matrix on its one-step sparsity pattern, ``O(|Θ|)`` memory.

    Exact RTRL for a single layer with an element-wise recurrence; a biased, low-noise
    approximation for dense recurrences (see the module docstring). One stream; use
    :func:`~uorojax.per_stream` for a batch (treating a batch as one system would need an
    entry per stream for every parameter, which is what ``per_stream`` holds anyway).

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      structure: the model's :class:`~uorojax.structure.Structure` (``model.structure``).

    Returns:
      An :class:`Estimator` whose carry is a :class:`SnApState`.

    Raises:
      ConfigError: without a structure, or (at ``init_state``) for a parameter the
        pattern cannot hold, such as a learned input embedding.

    Example::

      model = uorojax.linen_model("gru", 64, vocab, vocab_size=vocab)
      est = uorojax.snap1(model.apply, uorojax.softmax_cross_entropy,
                          structure=model.structure)
    """
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    structure = require(structure, "snap1", MODEL_HINT)
    streams = functools.partial(snap1_streams, apply_fn, loss_fn, structure)
    init_state = functools.partial(snap1_init, structure)
    return Estimator(
        init_state,
        one_stream(streams),
        per_stream=Estimator(init_per_stream(init_state), of_streams(streams)),
    )
