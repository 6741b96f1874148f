r"""Pieces of maths that several estimators share, beyond the protocol (``base``).

No estimator imports another: what two of them compute alike lives here, or in a helper
module of its family (``sparse_influence`` for SnAp-1, e-prop and RFLO; ``kronecker``
for KF-RTRL and OK).

* :func:`mean_loss_cotangents`: the per-stream losses of B streams and the cotangents of
  their mean, for the one batched backward that gives the averaged direct gradient
  :math:`\frac1B \sum_b \partial L_{b,t}/\partial\theta` without forming any stream's.
* :func:`kept_unless_finite`: a carry's new value where the gradient is finite, its old
  one elsewhere.
* :func:`safe_ratio`: a ratio of norms with 0/0 = 1, for the rescalings of UORO and
  KF-RTRL.
* :func:`without_recurrent_kernels`: the params of e-prop's and ES-D-RTRL's state
  Jacobian, each unit's own dynamics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from uorojax.estimators.base import LossFn, step_loss_and_cotangent
from uorojax.estimators.batching import over_streams
from uorojax.models.structure.jacobian import diagonalised_params
from uorojax.models.structure.types import Structure

PyTree = Any


def mean_loss_cotangents(loss_fn: LossFn, ys: PyTree) -> Callable:
    r"""``outputs -> (losses, d_outputs)`` for B streams (leading axes).

    ``losses[b] = loss_fn(outputs[b], ys[b])`` and ``d_outputs`` is the cotangent of
    their mean, :math:`\frac1B \partial L_b/\partial o_b`: pulled back through one
    batched step (:func:`~uorojax.estimators.base.loss_vjp`), it gives the gradient of the
    mean loss.

    Example::

      new_states, outputs, losses, d_outputs, (mean_delta_theta,) = loss_vjp(
          batched_forward, mean_loss_cotangents(loss_fn, ys), params)
    """

    def losses_and_cotangents(outputs):
        num_streams = jax.tree.leaves(outputs)[0].shape[0]
        one = lambda o, y: step_loss_and_cotangent(loss_fn, y)(o)  # noqa: E731
        losses, d_outputs = over_streams(one, num_streams)(outputs, ys)
        return losses, jax.tree.map(lambda d: d / num_streams, d_outputs)

    return losses_and_cotangents


def kept_unless_finite(finite: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """``new`` where ``finite``, ``old`` elsewhere (a select a leaf).

    A step whose gradient is not finite leaves the carry's large part (UORO's tangent
    pair, SnAp-1's influence) as it was: the trainer and ``as_optax`` drop such a step
    anyway. The select also orders the gradient's reading of the old value before the
    update that overwrites it (docs/performance.md, "In place").
    """
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, and 1 for 0/0.

    A zero pair of factors (a stream's start) has no scale to balance, and any positive
    scale leaves it zero: this is what makes ``eps = 0`` usable from zero factors. Other
    values are untouched.
    """
    both_zero = (numerator == 0) & (denominator == 0)
    return jnp.where(both_zero, 1.0, numerator / jnp.where(both_zero, 1.0, denominator))


def without_recurrent_kernels(structure: Structure, params: PyTree, state: PyTree) -> PyTree:
    r"""The params with every recurrent kernel zero and its product with ``state`` (held
    constant) in its bias: the same step values, the state Jacobian of each unit's own
    dynamics (e-prop's :math:`\tilde A_t`), and the exact params derivatives."""
    return diagonalised_params(structure, params, state, keep_diagonal=False)
