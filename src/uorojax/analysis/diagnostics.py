"""Diagnostics: how good is an estimator's gradient, against the exact one?

:func:`gradient_statistics` runs an estimator with frozen params over a stream segment
with many PRNG keys and compares its gradient at every step with the exact online
gradient (exact RTRL, equal to ``jax.grad`` through the unrolled segment): bias, variance,
relative error and cosine. A windowed estimator (TBPTT, truncated UORO) is compared with
the exact gradient of its window's summed loss. The trainer's ``shadow=`` option
(:func:`uorojax.make_trainer`) gives the same cosine and norm ratio live during training.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from uorojax import checks
from uorojax.estimators.base import ApplyFn, Estimator, LossFn, forward_sequence


class GradientStatistics(NamedTuple):
    """Per-step statistics of an estimator's gradient over ``num_keys`` runs.

    Every field has a leading time axis (one entry per step of the segment). The target
    ``g*_t`` is the exact ``dL_t/dθ`` for an estimator with ``window == 1``; for a
    windowed one, the exact gradient of the summed loss of the window's steps up to t
    (at a window's last step, the whole window's), which it matches in expectation where
    it emits a gradient (see :func:`emitted_steps`).

    Attributes:
      exact_norm: ``‖g*_t‖``, the exact gradient's norm.
      relative_bias: ``‖E[g_t] - g*_t‖ / ‖g*_t‖`` with E the mean over keys (it falls
        like ``1/sqrt(num_keys)`` for an unbiased estimator).
      relative_variance: ``E‖g_t - E[g_t]‖² / ‖g*_t‖²``, the variance of one estimate.
      mean_cosine: mean over keys of ``cos(g_t, g*_t)`` for a single estimate.
      mean_norm_ratio: mean over keys of ``‖g_t‖ / ‖g*_t‖``.
    """

    exact_norm: jax.Array
    relative_bias: jax.Array
    relative_variance: jax.Array
    mean_cosine: jax.Array
    mean_norm_ratio: jax.Array


def exact_online_gradients(
    apply_fn: ApplyFn, loss_fn: LossFn, params: Any, state0: Any, xs: Any, ys: Any
) -> Any:
    """The exact ``dL_t/dθ`` for every step t of a segment that starts at ``state0``.

    Equal to what exact RTRL emits from a zero Jacobian at ``state0``, computed by reverse
    mode through the unrolled segment (one ``jax.grad`` per step, vmapped), which is
    cheaper than RTRL for wide models. Returns params-shaped leaves with a time axis.
    """
    length = jax.tree.leaves(xs)[0].shape[0]

    def loss_at(p, t):
        _, losses, _ = forward_sequence(apply_fn, loss_fn, p, state0, xs, ys)
        return losses[t]

    return jax.vmap(jax.grad(loss_at), in_axes=(None, 0))(params, jnp.arange(length))


def emitted_steps(estimator: Estimator, length: int) -> np.ndarray:
    """Indices of the steps of a segment (from a window boundary) where the estimator
    emits a gradient: every step, or every window's last step."""
    window = estimator.window
    return np.arange(window - 1, length, window)


def window_targets(exact: jax.Array, window: int) -> jax.Array:
    """The exact per-step gradients ``(T, P)`` summed within each window up to each step."""
    if window == 1:
        return exact
    length = exact.shape[0]
    padded = -(-length // window) * window
    blocks = jnp.pad(exact, ((0, padded - length), (0, 0))).reshape(-1, window, exact.shape[1])
    return jnp.cumsum(blocks, axis=1).reshape(padded, -1)[:length]


def gradient_statistics(
    estimator: Estimator,
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    params: Any,
    state0: Any,
    xs: Any,
    ys: Any,
    key: jax.Array,
    *,
    num_keys: int = 100,
    key_batch_size: int = 16,
) -> GradientStatistics:
    """Bias, variance and cosine of an estimator's gradient against the exact one.

    The estimator starts from its ``init_state`` at ``state0`` (zero tangents) and runs
    over ``xs, ys`` with frozen ``params`` once per key; its gradient at every step is
    compared with :func:`exact_online_gradients` (summed within windows for a windowed
    estimator). Steps inside a window, which emit zeros, are compared too: read the rows
    :func:`emitted_steps` names.

    Args:
      estimator: the estimator to judge (single stream).
      apply_fn, loss_fn: the model the estimator was built on.
      params: frozen parameters.
      state0: the model state at the segment start.
      xs, ys: the segment (leading time axis).
      key: PRNG key; split into ``num_keys`` runs.
      num_keys: number of independent runs.
      key_batch_size: runs computed together; memory grows with it (the batch size used
        is the largest common divisor of the two).

    Returns:
      :class:`GradientStatistics`.

    Example::

      stats = uorojax.diagnostics.gradient_statistics(
          uorojax.uoro(apply, loss), apply, loss, params, h0, xs, ys, jax.random.key(0))
      stats.mean_cosine[-1]
    """
    num_keys = checks.positive_int("num_keys", num_keys)
    checks.check_key(key)
    length = jax.tree.leaves(xs)[0].shape[0]
    checks.check_leading_axis("ys", ys, length, "time")

    def one_run(run_key):
        carry = estimator.init_state(params, state0)

        def body(carry, inp):
            x, y, k = inp
            grads, carry, _ = estimator.step(params, carry, x, y, k)
            return carry, ravel_pytree(grads)[0]

        _, grads = jax.lax.scan(body, carry, (xs, ys, jax.random.split(run_key, length)))
        return grads

    batch = math.gcd(num_keys, key_batch_size)

    @jax.jit
    def compute(key):
        exact = jax.vmap(lambda g: ravel_pytree(g)[0])(
            exact_online_gradients(apply_fn, loss_fn, params, state0, xs, ys)
        )  # (T, P)
        exact = window_targets(exact, estimator.window)
        tiny = jnp.finfo(exact.dtype).tiny
        exact_norm = jnp.linalg.norm(exact, axis=-1)
        denom = jnp.maximum(exact_norm, tiny)

        def accumulate(totals, batch_keys):
            # Only per-step sums leave the batch: memory is batch x T x P, not keys x T x P.
            estimates = jax.vmap(one_run)(batch_keys)  # (batch, T, P)
            norms = jnp.linalg.norm(estimates, axis=-1)  # (batch, T)
            cosines = jnp.einsum("ktp,tp->kt", estimates, exact) / jnp.maximum(
                norms * exact_norm, tiny
            )
            total, total_sq, total_cos, total_norm = totals
            return (
                total + estimates.sum(0),
                total_sq + jnp.sum(jnp.square(norms), 0),
                total_cos + cosines.sum(0),
                total_norm + norms.sum(0),
            ), None

        zeros_t = jnp.zeros(exact.shape[:1], exact.dtype)
        keys = jax.random.split(key, num_keys)
        keys = keys.reshape(num_keys // batch, batch, *keys.shape[1:])
        (total, total_sq, total_cos, total_norm), _ = jax.lax.scan(
            accumulate, (jnp.zeros_like(exact), zeros_t, zeros_t, zeros_t), keys
        )
        mean = total / num_keys
        variance = total_sq / num_keys - jnp.sum(jnp.square(mean), -1)
        return GradientStatistics(
            exact_norm=exact_norm,
            relative_bias=jnp.linalg.norm(mean - exact, axis=-1) / denom,
            relative_variance=jnp.maximum(variance, 0.0) / jnp.square(denom),
            mean_cosine=total_cos / num_keys,
            mean_norm_ratio=total_norm / num_keys / denom,
        )

    return compute(key)


def summarise(stats: GradientStatistics, estimator: Estimator) -> dict:
    """A segment's statistics as one row, over the steps where the estimator emits a
    gradient and the exact gradient is not zero (a step without a target, such as the
    copy task's storing steps, has nothing to compare): their means after the first such
    step (where every estimator starting from zero history is exact), their values at
    the last one, and the first one's cosine.

    Returns:
      ``target`` (``"step"``, or ``"window sum"`` for a windowed estimator), then
      ``relative_bias``, ``relative_variance``, ``mean_cosine``, ``mean_norm_ratio``
      (means), the same four prefixed ``last_``, and ``first_mean_cosine`` (NaN where
      no step qualifies).

    Example::

      row = uorojax.diagnostics.summarise(stats, est)
    """
    exact_norm = np.asarray(stats.exact_norm)
    emitted = emitted_steps(estimator, exact_norm.shape[0])
    compared = emitted[exact_norm[emitted] > 0]
    later = compared[1:] if len(compared) > 1 else compared
    row = {"target": "window sum" if estimator.window > 1 else "step"}
    for field in ("relative_bias", "relative_variance", "mean_cosine", "mean_norm_ratio"):
        values = np.asarray(getattr(stats, field), np.float64)
        row[field] = float(np.mean(values[later])) if len(later) else math.nan
        row[f"last_{field}"] = float(values[compared[-1]]) if len(compared) else math.nan
    cosine = np.asarray(stats.mean_cosine, np.float64)
    row["first_mean_cosine"] = float(cosine[compared[0]]) if len(compared) else math.nan
    return row
