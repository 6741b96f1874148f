"""The pieces of one online update: the train state, the optimizer gated on a
window's close, the non-finite guard, the counters and the metrics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from uorojax import checks
from uorojax.estimators.base import StepInfo
from uorojax.tree import tree_finite, tree_norm, tree_vdot

PyTree = Any


class TrainState(NamedTuple):
    """Everything an online run carries from step to step (a pytree).

    Attributes:
      params: model parameters.
      opt_state: the optax optimizer state.
      carry: the estimator carry (model state, tangents or Jacobian, buffers).
      key: the base PRNG key; step t uses ``fold_in(key, t)``.
      step: number of stream steps consumed (int32).
      num_skipped: steps dropped for non-finite values (``nonfinite="skip"``).
      halted_at: -1, or the step of the first non-finite value (``nonfinite="raise"``).
      pending: steps consumed since the last gradient (the part of a window that
        ``step`` has buffered; 0 at a window boundary), from ``info.ready``.
      shadow_carry: exact-RTRL carry run beside the estimator, or None.
    """

    params: PyTree
    opt_state: PyTree
    carry: PyTree
    key: jax.Array
    step: jax.Array
    num_skipped: jax.Array
    halted_at: jax.Array
    pending: jax.Array
    shadow_carry: PyTree = None


def paper_schedule(gamma: float, alpha: float, steps_per_update: int = 1) -> optax.Schedule:
    r"""The UORO paper's learning rate :math:`\eta_t = \gamma / (1 + \alpha\sqrt{t})`.

    ``t`` counts stream steps (characters). Optax schedules see the number of updates,
    so for an estimator that updates every ``steps_per_update`` steps (its window)
    ``t = count * steps_per_update``.

    Example::

      optax.adam(uorojax.paper_schedule(1e-3, 1.5e-2))
    """
    gamma = checks.non_negative_float("gamma", gamma)
    alpha = checks.non_negative_float("alpha", alpha)
    steps_per_update = checks.positive_int("steps_per_update", steps_per_update)

    def schedule(count):
        t = jnp.asarray(count, jnp.float32) * steps_per_update
        return gamma / (1.0 + alpha * jnp.sqrt(t))

    return schedule


def step_key(key: jax.Array, step: int | jax.Array) -> jax.Array:
    """The PRNG key the trainer hands the estimator at stream step ``step``."""
    return jax.random.fold_in(key, step)


def step_finite(info: StepInfo, grads: PyTree, carry: PyTree) -> jax.Array:
    """Loss, gradient and new carry all finite. The carry's test comes from the
    estimator's certificate (``info.carry_finite``) where it gives one."""
    carry_finite = tree_finite(carry) if info.carry_finite is None else jnp.all(info.carry_finite)
    return tree_finite((info.loss, grads)) & carry_finite


def gradient_agreement(estimate: PyTree, exact: PyTree) -> dict:
    """Cosine and norm ratio of an estimated gradient against the exact one.

    Example::

      uorojax.gradient_agreement(grads, exact_grads)["cosine"]
    """
    dot, n_est, n_exact = tree_vdot(estimate, exact), tree_norm(estimate), tree_norm(exact)
    tiny = jnp.finfo(jnp.result_type(dot)).tiny
    return {
        "cosine": dot / jnp.maximum(n_est * n_exact, tiny),
        "norm_ratio": n_est / jnp.maximum(n_exact, tiny),
    }


def when_ready(
    optimizer: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``optimizer`` moved only on the steps where a gradient is ready.

    ``update(grads, state, params, *, ready)`` is ``optimizer.update`` where ``ready`` (a
    JAX bool) holds, and zero updates with the state unchanged elsewhere, in the manner
    of optax's ``MultiSteps`` and ``apply_if_finite``: a windowed estimator's zeros
    inside a window are not optimizer steps (Adam's count, moments and schedule do not
    move). ``ready=True`` (a Python bool) skips the conditional.

    Example::

      tx = uorojax.training.when_ready(optax.adam(1e-3))
      updates, opt_state = tx.update(grads, opt_state, params, ready=info.ready)
    """

    def update_fn(updates, state, params=None, *, ready=True, **extra_args):
        del extra_args
        if ready is True:
            return optimizer.update(updates, state, params)
        return jax.lax.cond(
            ready,
            lambda: optimizer.update(updates, state, params),
            lambda: (jax.tree.map(jnp.zeros_like, updates), state),
        )

    return optax.GradientTransformationExtraArgs(optimizer.init, update_fn)


def keep_if(accept: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """The non-finite guard: ``new`` where ``accept``, ``old`` elsewhere, leaf by leaf.

    A select per leaf rather than a conditional: each select fuses into the fusion that
    writes the new value, so a certified carry (UORO's tangents) is neither re-read nor
    copied.
    """
    return jax.tree.map(lambda n, o: jnp.where(accept, n, o), new, old)


def advance_counters(
    ts: TrainState, num_steps: int, finite: jax.Array, window_closed: jax.Array, first_bad, skip
) -> dict:
    """The train state's counters after an update covering ``num_steps`` stream steps.

    A finite update is accepted unless the run has halted. With ``skip`` a rejected
    update is dropped and counted (``num_skipped``) and the stream moves on; otherwise
    the run halts before it (``halted_at``: the step of the first non-finite loss,
    ``first_bad`` steps into the update) and ``step`` stays. ``pending`` counts the
    steps since the last gradient, 0 when a window closed. Returns the new ``step``,
    ``num_skipped``, ``halted_at``, ``pending`` and the ``accept`` flag.
    """
    halted = ts.halted_at >= 0
    accept = finite & ~halted
    rejected = ~finite & ~halted
    pending = jnp.where(window_closed, 0, ts.pending + num_steps).astype(ts.pending.dtype)
    if skip:
        return {
            "step": ts.step + num_steps,
            "num_skipped": ts.num_skipped + num_steps * rejected,
            "halted_at": ts.halted_at,
            "pending": jnp.where(accept, pending, ts.pending),
            "accept": accept,
        }
    return {
        "step": ts.step + num_steps * accept,
        "num_skipped": ts.num_skipped,
        "halted_at": jnp.where(rejected, ts.step + first_bad, ts.halted_at),
        "pending": jnp.where(accept, pending, ts.pending),
        "accept": accept,
    }


def step_metrics(loss: jax.Array, grads: PyTree, accept: jax.Array, num_steps: int) -> dict:
    """Per-step metrics of an update covering ``num_steps`` steps: the loss of each step
    (mean over streams), the gradient's norm and whether the update was dropped."""
    return {
        "loss": jnp.mean(jnp.reshape(loss, (num_steps, -1)), axis=1),
        "grad_norm": jnp.broadcast_to(tree_norm(grads), (num_steps,)),
        "skipped": jnp.broadcast_to(~accept, (num_steps,)),
    }
