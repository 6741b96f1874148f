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

The step is written once, for B streams, and shared with e-prop and RFLO
(:func:`~uorojax.estimators.sparse_influence.sparse_step`); one stream is B = 1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from uorojax.estimators.base import ApplyFn, Estimator, LossFn
from uorojax.estimators.sparse_influence import sparse_estimator
from uorojax.models.structure.types import Structure

PyTree = Any


class SnApState(NamedTuple):
    """SnAp-1 carry: the model state and the sparse influence.

    ``influence[j]`` belongs to parameter leaf j (flattened order): None for a leaf that
    carries no influence; otherwise an array of shape ``(q, n, *rest)`` for the ``q``
    state leaves of the leaf's layer (in flattened order), its unit axis of ``n`` units
    first and its other axes after it in their order. Entry ``[k, u(p), ...]`` holds
    ``∂s_k[u(p)]/∂θ_p``, ``u(p)`` the unit of ``p``. Per stream (``per_stream``), every
    array has a leading stream axis.

    Why this layout: docs/performance.md, "SnAp-1's layout".
    """

    state: PyTree
    influence: tuple


def snap1(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    structure: Structure | None = None,
    example_x: Any = None,
) -> Estimator:
    r"""SnAp-1: the influence matrix on its one-step sparsity pattern, ``O(|Θ|)`` memory.

    Exact RTRL for a single layer with an element-wise recurrence; a biased, low-noise
    approximation for dense recurrences (see the module docstring). One stream; use
    :func:`~uorojax.per_stream` for a batch (treating a batch as one system would need an
    entry per stream for every parameter, which is what ``per_stream`` holds anyway).

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      structure: None (the default) to infer the model's structure from ``example_x``
        (:func:`~uorojax.infer_structure`), or a :class:`~uorojax.structure.Structure`
        written by hand (``model.structure``), checked against the model before any
        gradient (at ``init_state`` with ``example_x``, else at the first step).
      example_x: one stream's input of one step (arrays or ``jax.ShapeDtypeStruct``):
        what the structure is inferred from, and checked at.

    Returns:
      An :class:`Estimator` whose carry is a :class:`SnApState`.

    Raises:
      ConfigError: (at ``init_state``) without ``structure`` or ``example_x``, for a
        model whose structure cannot be inferred (the reason, and what to use instead),
        for a hand-written structure that differs from the model (the leaf and what it
        actually moves), or for a parameter the pattern cannot hold.

    Example::

      model = uorojax.linen_model("gru", 64, vocab, vocab_size=vocab)
      est = uorojax.snap1(model.apply, uorojax.softmax_cross_entropy,
                          structure=model.structure)
    """
    return sparse_estimator(
        "snap1", SnApState, apply_fn, loss_fn, structure, keep_diagonal=True, example_x=example_x
    )
