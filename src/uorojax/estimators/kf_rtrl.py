r"""KF-RTRL (Mujika, Meier & Steger 2018): a Kronecker-factored unbiased influence estimate.

For one dense recurrent layer :math:`h_t = \sigma(W a_t)`, :math:`a_t = [x_t; h_{t-1}; 1]`
(``m`` inputs, ``n`` units), the immediate influence is a Kronecker product,
:math:`B_t = D_t \otimes a_t^\top` with :math:`D_t = \mathrm{diag}(\sigma'(z_t))`, and
KF-RTRL carries :math:`J_t \approx A_t \otimes u_t^\top` (``A``: n×n, ``u``: m). The
recursion :math:`H_t J_{t-1} + B_t = (H_t A_{t-1}) \otimes u_{t-1}^\top + D_t \otimes
a_t^\top`, :math:`H_t = \partial h_t/\partial h_{t-1}`, has two Kronecker terms, reduced
to one with independent signs :math:`c_1, c_2 = \pm 1`:

.. math::
    u_t = c_1 p_1 u_{t-1} + c_2 p_2 a_t, \qquad
    A_t = c_1 H_t A_{t-1} / p_1 + c_2 D_t / p_2,

    p_1 = \sqrt{(\|H_t A_{t-1}\| + \epsilon)/(\|u_{t-1}\| + \epsilon)}, \quad
    p_2 = \sqrt{(\|D_t\| + \epsilon)/(\|a_t\| + \epsilon)}

(the variance-minimising scales; any positive scales keep it unbiased; 0/0, the zero
factors at a stream's start, counts as 1). The gradient is
:math:`g = \delta\theta + \delta s \cdot J_{t-1}`: for the layer's weights
:math:`(A_{t-1}^\top \delta s) \otimes u_{t-1}`; the readout gets its direct gradient.
Unbiased for frozen params; memory ``O(n² + m)``; cost ``O(n³)`` a step (``H_t A`` by n
forward-mode products).

The layer's weights may be split over several parameter leaves (a flax ``SimpleCell``
keeps ``W_i``, ``b_i`` and ``W_h`` apart): :attr:`~uorojax.structure.Structure.layer_inputs`
gives, for each, the part of ``a_t`` it multiplies, and ``u`` is kept in the same pieces.
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
    loss_vjp,
    model_step,
    step_loss_and_cotangent,
    validate,
)
from uorojax.estimators.kronecker import (
    add_kronecker_gradient,
    check_dense_layer,
    dense_layer,
    state_jacobian_times,
    zero_input_factor,
)
from uorojax.estimators.shared import safe_ratio
from uorojax.models.structure.resolve import StructureSource
from uorojax.models.structure.types import Structure, leaf_units
from uorojax.tree import tree_norm

PyTree = Any


class KFRTRLState(NamedTuple):
    """KF-RTRL carry: the model state and the factors of ``J ≈ unit_factor ⊗ input_factor``.

    Attributes:
      state: the model state.
      input_factor: ``u``, in the layer's pieces: for every parameter leaf of the layer
        (flattened order) the part matching its input (a scalar for a bias), None for
        other leaves.
      unit_factor: ``A``, an ``(n, n)`` matrix.
    """

    state: PyTree
    input_factor: tuple
    unit_factor: jax.Array


def kf_rtrl_init(source: StructureSource, params, state0) -> KFRTRLState:
    """Zero factors (the structure resolved and checked by ``source``)."""
    checks.check_init(params, state0, "kf_rtrl")
    structure = source.at_init(params, state0)
    check_dense_layer(structure, params, state0, "kf_rtrl", source.example_x)
    h0 = jax.tree.leaves(state0)[0]
    n = h0.shape[0]
    return KFRTRLState(state0, zero_input_factor(structure, params), jnp.zeros((n, n), h0.dtype))


def _signs(key, dtype):
    """Two independent Rademacher signs ``c1, c2``."""
    bits = jax.random.bits(key, (2,), jnp.uint32) & 1
    return (1 - 2 * bits.astype(jnp.int32)).astype(dtype)


def kf_rtrl_step(apply_fn, loss_fn, source, eps, params, carry: KFRTRLState, x, y, key):
    """One KF-RTRL step (see the module docstring)."""
    validate(params, key)
    state = carry.state
    structure = source.at_step(params, state, x)
    units = leaf_units(structure, params)
    new_state, output, loss, _, (delta_theta, delta_s) = loss_vjp(
        lambda p, s: model_step(apply_fn, p, s, x),
        step_loss_and_cotangent(loss_fn, y),
        params,
        state,
    )
    unit_factor, input_factor = carry.unit_factor, carry.input_factor
    # g = δθ + δs · J_{t-1}; for the layer, (Aᵀ δs) ⊗ u.
    projected = unit_factor.T @ jax.tree.leaves(delta_s)[0]
    grads = add_kronecker_gradient(delta_theta, projected, input_factor, units)

    inputs, d = dense_layer(apply_fn, structure, params, state, x, "kf_rtrl")
    h_times_a = state_jacobian_times(apply_fn, params, state, x, unit_factor)
    a_pieces = [a for a in inputs if a is not None]
    u_pieces = [u for u in input_factor if u is not None]
    p1 = jnp.sqrt(safe_ratio(tree_norm(h_times_a) + eps, tree_norm(u_pieces) + eps))
    p2 = jnp.sqrt(safe_ratio(tree_norm(d) + eps, tree_norm(a_pieces) + eps))
    c1, c2 = _signs(key, unit_factor.dtype)
    new_input_factor = tuple(
        None if u is None else c1 * p1 * u + c2 * p2 * a.astype(u.dtype)
        for u, a in zip(input_factor, inputs)
    )
    new_unit_factor = c1 * h_times_a / p1 + c2 * jnp.diag(d) / p2
    new_carry = KFRTRLState(new_state, new_input_factor, new_unit_factor)
    return grads, new_carry, StepInfo(loss, output, jnp.asarray(True))


def kf_rtrl(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    structure: Structure | None = None,
    example_x: Any = None,
    eps: float = 1e-7,
) -> Estimator:
    r"""Kronecker-factored RTRL for one dense recurrent layer: unbiased, ``O(n² + m)`` memory.

    See the module docstring for the equations. One stream; use
    :func:`~uorojax.per_stream` for a batch (the factors of different streams do not
    share a Kronecker form, so a batch cannot be one system).

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      structure: None (the default) to infer the structure from ``example_x``
        (:func:`~uorojax.infer_structure`: a single dense layer ``h = σ(W a)`` in any
        layout, ``K @ h`` or ``h @ K``, its kernels split or concatenated), or a
        hand-written :class:`~uorojax.structure.Structure`, checked against the model
        before any gradient (with ``layer_inputs`` where inference refuses the model).
      example_x: one stream's input of one step: what the structure is inferred from.
      eps: the stabiliser ε of the scales ``p1``, ``p2`` (>= 0).

    Returns:
      An :class:`Estimator` whose carry is a :class:`KFRTRLState`.

    Example::

      model = uorojax.tanh_rnn(32, 4, 4)
      est = uorojax.kf_rtrl(model.apply, uorojax.squared_error, structure=model.structure)
    """
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    eps = checks.non_negative_float("eps", eps)
    source = StructureSource("kf_rtrl", apply_fn, structure, example_x)
    return Estimator(
        functools.partial(kf_rtrl_init, source),
        functools.partial(kf_rtrl_step, apply_fn, loss_fn, source, eps),
    )
