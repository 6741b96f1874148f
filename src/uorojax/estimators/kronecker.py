r"""Pieces shared by the Kronecker-factored estimators of one dense recurrent layer.

For a dense layer :math:`h_t = \sigma(W a_t)`, :math:`a_t = [x_t; h_{t-1}; 1]` (``m``
inputs, ``n`` units), KF-RTRL (Mujika, Meier & Steger 2018, "Approximating Real-Time
Recurrent Learning with Random Kronecker Factors") and OK (Benzing, Gauy, Mujika,
Martinsson & Steger 2019, "Optimal Kronecker-Sum Approximation of Real Time Recurrent
Learning") carry the layer's influence as Kronecker terms,
:math:`J_t \approx \sum_i A_i \otimes u_i` (``A_i``: n×n unit factors, ``u_i``: m input
factors). Every step needs the same three things:

* the gradient :math:`g = \delta\theta + \delta s \cdot J_{t-1}`, whose layer part is
  :math:`\sum_i (A_i^\top \delta s) \otimes u_i` (:func:`add_kronecker_gradient`);
* the pushed unit factors :math:`H_t A_i`, :math:`H_t = \partial h_t / \partial h_{t-1}`,
  one forward-mode product per column (:func:`state_jacobian_times`);
* the input factors kept in the layer's pieces: the layer's weights may be split over
  several parameter leaves (a flax ``SimpleCell`` keeps ``W_i``, ``b_i`` and ``W_h``
  apart), and :attr:`~uorojax.structure.Structure.layer_inputs` gives, for each, the
  part of :math:`a_t` it multiplies (:func:`zero_input_factor`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.base import state_jvp
from uorojax.models.structure.check import check_single_stream
from uorojax.models.structure.dense import input_shape, kronecker_leaf
from uorojax.models.structure.types import Structure, leaf_units

PyTree = Any

MODEL_HINT = (
    "uorojax.tanh_rnn and a one-layer uorojax.linen_model('simple', ...) with one-hot "
    "input provide it."
)


def check_dense_layer(structure: Structure, params, state0, who: str) -> None:
    """One dense recurrent layer with ``layer_inputs`` and one state vector, or a
    ConfigError naming what is missing."""
    check_single_stream(structure, params, state0, who)
    if structure.layer_inputs is None:
        raise checks.ConfigError(
            f"{who} needs a dense recurrent layer h = σ(W [x; h; 1]) and this model's "
            f"structure gives no layer_inputs. {MODEL_HINT}"
        )
    if len(jax.tree.leaves(state0)) != 1:
        raise checks.ConfigError(
            f"{who} handles one dense layer with one state vector; this state has "
            f"{len(jax.tree.leaves(state0))} leaves"
        )


def zero_input_factor(structure: Structure, params, leading: tuple[int, ...] = ()) -> tuple:
    """Zero input factors in the layer's pieces: for every parameter leaf (flattened
    order) of the layer, zeros shaped ``leading + `` the part of ``a_t`` it multiplies (a
    scalar for a bias); None for other leaves."""
    pieces = []
    for leaf, u in zip(jax.tree.leaves(params), leaf_units(structure, params)):
        pieces.append(None if u is None else jnp.zeros(leading + input_shape(leaf, u), leaf.dtype))
    return tuple(pieces)


def state_jacobian_times(apply_fn, params, state, x, matrix: jax.Array) -> jax.Array:
    """:math:`H_t M` for an ``(n, k)`` matrix ``M`` (a one-vector state), each column
    pushed through the step by forward mode (``k`` JVPs under one ``jax.vmap``)."""
    state_def = jax.tree.structure(state)

    def push(column):
        tangent = jax.tree.unflatten(state_def, [column])
        return jax.tree.leaves(state_jvp(apply_fn, params, state, x, tangent))[0]

    return jax.vmap(push, in_axes=1, out_axes=1)(matrix)


def add_kronecker_gradient(delta_theta: PyTree, projected: jax.Array, input_factor, units):
    r"""``δθ`` plus the Kronecker terms :math:`\sum_i p_i \otimes u_i` on the layer's leaves.

    Args:
      delta_theta: the direct gradient (params-shaped).
      projected: :math:`p = A^\top \delta s`, an ``(n,)`` vector for one term, or
        ``(r, n)`` for r terms.
      input_factor: the input factors in the layer's pieces (None for other leaves),
        each with a leading axis of r when ``projected`` has one.
      units: :func:`~uorojax.structure.leaf_units` of the params.

    Returns:
      The gradient, params-shaped; leaves outside the layer (the readout) keep ``δθ``.
    """
    grad_leaves, treedef = jax.tree.flatten(delta_theta)
    for j, (piece, u) in enumerate(zip(input_factor, units)):
        if piece is None:
            continue
        ndim = grad_leaves[j].ndim
        if projected.ndim == 1:
            term = kronecker_leaf(projected, piece, ndim, u.axis)
        else:
            terms = jax.vmap(kronecker_leaf, in_axes=(0, 0, None, None))(
                projected, piece, ndim, u.axis
            )
            term = jnp.sum(terms, axis=0)
        grad_leaves[j] = grad_leaves[j] + term
    return jax.tree.unflatten(treedef, grad_leaves)
