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
import numpy as np

from uorojax import checks
from uorojax.estimators.base import state_jvp
from uorojax.estimators.probe_rows import ProbePlan, leaf_vectors, probe_plan
from uorojax.models.structure.check import check_single_stream
from uorojax.models.structure.dense import (
    check_layer_inputs,
    input_shape,
    kronecker_leaf,
    layer_derivative,
)
from uorojax.models.structure.numeric import point_noise, random_point, tolerance
from uorojax.models.structure.paths import leaf_names
from uorojax.models.structure.types import Structure, leaf_units
from uorojax.models.structure.verify import concrete

PyTree = Any

MODEL_HINT = (
    "uorojax.tanh_rnn and a one-layer uorojax.linen_model('simple', ...) with one-hot "
    "input provide it."
)


def check_dense_layer(structure: Structure, params, state0, who: str, x=None) -> None:
    """One dense recurrent layer with one state vector, and ``layer_inputs`` or an
    inferred program (whose leaves feed one pre-activation, checked at ``x`` when
    given: :func:`single_layer_plan`), or a ConfigError naming what is missing."""
    check_single_stream(structure, params, state0, who)
    if structure.layer_inputs is None and structure.program is None:
        raise checks.ConfigError(
            f"{who} needs a dense recurrent layer h = σ(W [x; h; 1]) and this model's "
            f"structure gives no layer_inputs. {MODEL_HINT}"
        )
    if len(jax.tree.leaves(state0)) != 1:
        raise checks.ConfigError(
            f"{who} handles one dense layer with one state vector; this state has "
            f"{len(jax.tree.leaves(state0))} leaves"
        )
    if structure.program is not None and x is not None:
        single_layer_plan(structure, params, state0, x, who)


def dense_layer(apply_fn, structure: Structure, params, state, x, who: str):
    """``(inputs, derivative)`` of one step of the dense layer ``h = σ(W a)``: the vector
    every params leaf of the layer multiplies (a scalar 1 for a bias, None for the
    others) and ``D_t = σ'(z_t)`` per unit.

    On an inferred program, the vectors are its dense uses' (in any layout: ``K @ h``,
    ``h @ K``, ``[x, h] @ K``, split leaves) and ``D_t`` is one JVP along a zero probe
    on a kernel's output (exact with or without a bias, at ``h = 0`` too); otherwise
    ``layer_inputs`` and a JVP along ``1 ⊗ a/‖a‖²``.
    """
    if structure.program is None:
        inputs = structure.layer_inputs(params, state, x)
        check_layer_inputs(structure, params, inputs, who)
        return inputs, layer_derivative(apply_fn, structure, params, state, x, inputs)
    the_plan = single_layer_plan(structure, params, state, x, who)
    inputs = leaf_vectors(structure, the_plan, params, state, x)
    return inputs, probe_derivatives(structure, the_plan, params, state, x)[0]


def probe_derivatives(structure: Structure, the_plan: ProbePlan, params, state, x) -> list:
    """``∂h/∂z`` per unit for the pre-activation of every kernel and bias of a
    one-vector layer (a kernel's by a JVP along ones on its block of a probe, a bias's
    along ones on the bias), in the order of the params leaves."""
    program = structure.program
    zeros = program.probe_zeros()
    leaves, treedef = jax.tree.flatten(params)
    n = program.sizes[0]
    out = []
    for j in sorted({*the_plan.kernels, *(j for g in the_plan.copy_groups for j in g)}):
        p_tangent = [jnp.zeros_like(a) for a in leaves]
        z_tangent = [jnp.zeros_like(z) for z in zeros]
        if j in the_plan.kernels:
            k = the_plan.kernels[j]
            z_tangent[k.use] = z_tangent[k.use].at[k.start : k.start + n].set(1)
        else:
            p_tangent[j] = jnp.ones_like(leaves[j])
        _, d = jax.jvp(
            lambda p, z: program.apply(jax.tree.unflatten(treedef, p), state, x, probes=z)[0],
            (leaves, zeros),
            (p_tangent, z_tangent),
        )
        out.append(jax.tree.leaves(d)[0])
    return out


def single_layer_plan(structure: Structure, params, state, x, who: str) -> ProbePlan:
    """The :class:`~uorojax.estimators.probe_rows.ProbePlan` of a model that is one
    dense layer ``h = σ(W a)``: every kernel and bias of the layer feeds one
    pre-activation, checked at a random point around the given one (its ``∂h/∂z`` are
    equal).

    Raises:
      ConfigError: naming two leaves that feed different pre-activations (gates).
    """
    the_plan = probe_plan(structure, params, state, who)
    given = tuple(concrete(t) for t in (params, state, x))
    with checks.concrete_evaluation():
        point = random_point(given, point_noise(given, np.random.default_rng(0)))
        derivatives = [np.asarray(d) for d in probe_derivatives(structure, the_plan, *point)]
    order = sorted({*the_plan.kernels, *(j for g in the_plan.copy_groups for j in g)})
    scale = max(float(np.abs(d).max()) for d in derivatives) if derivatives else 1.0
    atol = 1e3 * tolerance(state, None) * max(scale, 1e-30)
    names = leaf_names(params)
    for j, d in zip(order[1:], derivatives[1:]):
        if not np.allclose(d, derivatives[0], rtol=0, atol=atol):
            raise checks.ConfigError(
                f"{who} handles a single dense layer h = σ(W a): params leaves "
                f"{names[order[0]]} and {names[j]} feed different pre-activations of the "
                "units (gates, as in a GRU or an LSTM). Use snap1, eprop or es_d_rtrl, or "
                "uoro or rtrl"
            )
    return the_plan


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
