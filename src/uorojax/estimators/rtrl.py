r"""Exact real-time recurrent learning: the reference for correctness."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from uorojax import checks
from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    StepInfo,
    loss_vjp,
    model_step,
    state_jvp,
    step_loss_and_cotangent,
    validate,
)
from uorojax.tree import stack_zeros

PyTree = Any


class RTRLState(NamedTuple):
    """Exact RTRL carry: the model state and the Jacobian ``J = ds/dθ``.

    ``jacobian`` is shaped like the state, each leaf with a leading axis of size ``|Θ|``
    (the flattened parameter count): leaf ``[j]`` is column j of J, the derivative of
    that state leaf with respect to flattened parameter j.
    """

    state: PyTree
    jacobian: PyTree


def rtrl_init(params, state0) -> RTRLState:
    """A zero Jacobian: the state at the stream start does not depend on θ."""
    checks.check_init(params, state0, "rtrl")
    num_params = ravel_pytree(params)[0].size
    jacobian = stack_zeros(state0, num_params)
    return RTRLState(state0, jacobian)


def history_gradient(delta_theta, delta_s, jacobian):
    """``g = δθ + δs · J_{t-1}``, params-shaped."""
    flat_delta_theta, unravel = ravel_pytree(delta_theta)
    through_state = sum(
        jnp.tensordot(j, d, axes=d.ndim)
        for j, d in zip(jax.tree.leaves(jacobian), jax.tree.leaves(delta_s))
    )
    return unravel(flat_delta_theta + through_state.astype(flat_delta_theta.dtype))


def jacobian_update(apply_fn, params, state, x, jacobian):
    """``J_t = A_t J_{t-1} + B_t``: the columns of J pushed by one vmapped JVP, and
    ``B_t`` from ``jax.jacrev`` (|S| VJPs)."""
    a_times_j = jax.vmap(lambda col: state_jvp(apply_fn, params, state, x, col))(jacobian)
    flat_params, unravel_params = ravel_pytree(params)
    b = jax.jacrev(lambda p: apply_fn(unravel_params(p), state, x)[0])(flat_params)
    return jax.tree.map(lambda aj, bl: aj + jnp.moveaxis(bl, -1, 0), a_times_j, b)


def rtrl_step(apply_fn, loss_fn, params, carry: RTRLState, x, y, key):
    """One exact RTRL step."""
    validate(params, key)
    state, jacobian = carry
    new_state, output, loss, _, (delta_theta, delta_s) = loss_vjp(
        lambda p, s: model_step(apply_fn, p, s, x),
        step_loss_and_cotangent(loss_fn, y),
        params,
        state,
    )
    grads = history_gradient(delta_theta, delta_s, jacobian)
    new_jacobian = jacobian_update(apply_fn, params, state, x, jacobian)
    return grads, RTRLState(new_state, new_jacobian), StepInfo(loss, output, jnp.asarray(True))


def rtrl(apply_fn: ApplyFn, loss_fn: LossFn) -> Estimator:
    r"""Exact real-time recurrent learning: carries ``J_t = ds_t/dθ`` exactly.

    ``J_t = A_t J_{t-1} + B_t``: the ``|Θ|`` columns of ``J`` are pushed through the step by
    one ``jax.jvp`` under ``jax.vmap`` (no dense ``A_t``), and ``B_t`` comes from
    ``jax.jacrev`` (``|S|`` VJPs). The gradient is ``g = δs · J_{t-1} + δθ``, exactly
    ``dL_t/dθ`` for frozen params (equal to ``jax.grad`` through the unrolled sequence).

    Memory is ``|S|·|Θ|`` per stream and cost ``|Θ|`` JVPs per step: for small models and as
    the reference for correctness.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.

    Returns:
      An :class:`Estimator` whose carry is an :class:`RTRLState`.

    Example::

      est = uorojax.rtrl(apply_fn, loss_fn)
      grads, carry, info = est.step(params, est.init_state(params, h0), x, y, key)
    """
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    return Estimator(rtrl_init, functools.partial(rtrl_step, apply_fn, loss_fn))


def jacobian_matrix(carry: RTRLState) -> jax.Array:
    """RTRL's ``J = ds/dθ`` as a dense ``(|S|, |Θ|)`` matrix (``ravel_pytree`` order)."""
    leaves = jax.tree.leaves(carry.jacobian)
    return jnp.concatenate([a.reshape(a.shape[0], -1) for a in leaves], axis=1).T
