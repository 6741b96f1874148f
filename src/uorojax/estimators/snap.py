r"""SnAp-1 (Menick et al. 2021): the influence matrix kept on its one-step sparsity pattern.

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
* The diagonal blocks come from one JVP per state leaf of the model with its recurrent
  kernels diagonalised (:func:`~uorojax.structure.diagonalised_params`).

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
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.cotangent_norm import pullback_and_squared_norms
from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    StepInfo,
    loss_vjp,
    model_step,
    step_loss_and_cotangent,
    validate,
)
from uorojax.structure import (
    Structure,
    along,
    check_single_stream,
    leaf_units,
    require,
    state_layers,
    unit_jacobian,
)
from uorojax.tree import tree_finite, tree_norm

PyTree = Any

MODEL_HINT = (
    "uorojax.tanh_rnn, uorojax.linen_model and uorojax.from_linen_cells (LSTM, "
    "OptimizedLSTM, GRU, Simple, MGU, ElementwiseMGU and LRU cells) and uorojax.lru_stack "
    "provide model.structure."
)


class SnApState(NamedTuple):
    """SnAp-1 carry: the model state and the sparse influence.

    ``influence[k][j]`` is shaped like parameter leaf j (flattened order) for the
    leaves of state leaf k's layer, None elsewhere: entry ``p`` holds
    ``∂s_k[u(p)]/∂θ_p``, ``u(p)`` the unit of ``p``.
    """

    state: PyTree
    influence: tuple


def snap1_init(structure: Structure, params, state0) -> SnApState:
    """A zero influence on the pattern of ``structure``."""
    return SnApState(state0, zero_influence(structure, params, state0, "snap1"))


def zero_influence(structure: Structure, params, state0, who: str) -> tuple:
    """Zeros on SnAp-1's pattern (see :class:`SnApState`), after checking the params and
    state against ``structure`` (errors name ``who``)."""
    checks.check_init(params, state0, who)
    check_single_stream(structure, params, state0, who, feedforward=True)
    units = leaf_units(structure, params)
    return tuple(
        tuple(
            jnp.zeros_like(p) if u is not None and u.layer == layer else None
            for p, u in zip(jax.tree.leaves(params), units)
        )
        for layer in state_layers(structure, state0)
    )


def influence_pattern(apply_fn, params, state, x) -> tuple[list[list], list[list]]:
    """``B_t ⊙ M`` for every state leaf k, as the flattened params leaves, and each
    leaf's squared norm: one params VJP per state leaf with a cotangent of ones on that
    leaf (:func:`~uorojax.cotangent_norm.pullback_and_squared_norms`). For one stream a
    dense kernel's entry is an outer product whose norm comes from its factors, so its
    one use is the influence update, where XLA fuses it instead of writing it out (per
    stream, ``B·|Θ|`` floats a leaf)."""
    leaves, treedef = jax.tree.flatten(state)  # the new state is shaped like the old
    patterns, squared = [], []
    for k in range(len(leaves)):
        ones_on_k = [jnp.full_like(a, float(j == k)) for j, a in enumerate(leaves)]
        pattern, pattern_squared = pullback_and_squared_norms(
            lambda p: apply_fn(p, state, x)[0], params, jax.tree.unflatten(treedef, ones_on_k)
        )
        patterns.append(jax.tree.leaves(pattern))
        squared.append(jax.tree.leaves(pattern_squared))
    return patterns, squared


def sparse_history(delta_theta, delta_s, influence, units):
    """``g = δθ + δs · J_{t-1}`` with J on the pattern: each parameter reads the state
    cotangent of its own unit."""
    leaves, treedef = jax.tree.flatten(delta_theta)
    for k, row in enumerate(influence):
        for j, entry in enumerate(row):
            if entry is not None:
                leaves[j] = leaves[j] + along(delta_s[k], entry.ndim, units[j].axis) * entry
    return jax.tree.unflatten(treedef, leaves)


def sparse_influence_update(blocks, b_pattern, influence, units):
    """``J_t = B_t ⊙ M + (diagonal blocks of A_t) J_{t-1}`` on the pattern."""
    return tuple(
        tuple(
            None
            if entry is None
            else b_pattern[k][j]
            + sum(
                along(blocks[k][k2], entry.ndim, units[j].axis) * influence[k2][j]
                for k2 in range(len(influence))
                if blocks[k][k2] is not None
            )
            for j, entry in enumerate(row)
        )
        for k, row in enumerate(influence)
    )


def influence_step(
    apply_fn, structure, units, params, state, x, influence, *, keep_diagonal: bool = True
):
    """One stream's new influence from its state, input and old influence, and a
    certificate that it is finite. With ``keep_diagonal=False`` the diagonal blocks are
    those of the step without its recurrent kernels (e-prop's eligibility traces,
    :func:`~uorojax.structure.unit_jacobian`).

    Every entry of the new ``J_k`` is bounded by ``‖B_k ⊙ M‖ + Σ_k2 max|A_kk2| ‖J_k2‖``
    (the diagonal blocks of ``A_t`` and the old influence), so a finite bound makes the
    new influence finite without reading it: the trainer's guard then keeps or replaces
    it within the update itself, instead of testing and selecting it in two more passes.
    A NaN or inf in ``B``, ``A`` or the old ``J`` makes the bound non-finite.
    """
    blocks = unit_jacobian(apply_fn, structure, params, state, x, keep_diagonal=keep_diagonal)
    b_pattern, b_squared = influence_pattern(apply_fn, params, state, x)
    old_norms = [tree_norm([e for e in row if e is not None]) for row in influence]
    finite = jnp.asarray(True)
    for k, row in enumerate(influence):
        pattern_norm = jnp.sqrt(sum(b_squared[k][j] for j, e in enumerate(row) if e is not None))
        bound = pattern_norm + sum(
            jnp.max(jnp.abs(block)) * old_norms[k2]
            for k2, block in enumerate(blocks[k])
            if block is not None
        )
        finite = finite & jnp.isfinite(bound)
    return sparse_influence_update(blocks, b_pattern, influence, units), finite


def snap1_step(apply_fn, loss_fn, structure, params, carry: SnApState, x, y, key):
    """One SnAp-1 step (see the module docstring)."""
    validate(params, key)
    units = leaf_units(structure, params)
    new_state, output, loss, _, (delta_theta, delta_s) = loss_vjp(
        lambda p, s: model_step(apply_fn, p, s, x),
        step_loss_and_cotangent(loss_fn, y),
        params,
        carry.state,
    )
    grads = sparse_history(delta_theta, jax.tree.leaves(delta_s), carry.influence, units)
    influence, finite = influence_step(
        apply_fn, structure, units, params, carry.state, x, carry.influence
    )
    info = StepInfo(loss, output, jnp.asarray(True), finite & tree_finite(new_state))
    return grads, SnApState(new_state, influence), info


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
    return Estimator(
        functools.partial(snap1_init, structure),
        functools.partial(snap1_step, apply_fn, loss_fn, structure),
    )
