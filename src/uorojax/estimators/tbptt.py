r"""Truncated backpropagation through time over non-overlapping windows.

The window's gradient is written once, for B streams (the gradient of their mean loss
from one batched backward); one stream is B = 1 (:mod:`uorojax.estimators.windowed`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.base import ApplyFn, Estimator, LossFn, forward_sequence, num_streams_of
from uorojax.estimators.batching import over_streams
from uorojax.estimators.windowed import example_buffers, from_window_function


def tbptt(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    truncation: int = 1,
    *,
    example_x=None,
    example_y=None,
    reduction: str = "sum",
) -> Estimator:
    r"""Truncated backpropagation through time over non-overlapping windows.

    The stream is cut into windows of ``truncation`` steps. The step that closes a
    window emits

    .. math::  g = \nabla_\theta \sum_{t \in \text{window}} L_t

    backpropagated from the state at the window start, which is treated as a constant:
    the influence of θ on earlier states is truncated. Inside a window ``step`` buffers
    ``(x, y)`` in the carry and returns zeros with ``info.ready == False``.
    ``reduction="mean"`` divides by ``truncation``; with ``"sum"`` (the default) plain
    SGD applies the same rate to every token as the per-step estimators do.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      truncation: window length T (>= 1).
      example_x, example_y: one step's input and target (arrays or
        ``jax.ShapeDtypeStruct``), which size the window buffers; needed when T > 1.
      reduction: ``"sum"`` or ``"mean"`` of the window's losses.

    Returns:
      An :class:`Estimator` with ``window == truncation`` whose carry is a
      :class:`~uorojax.WindowState` (its ``start`` is the window-start state).

    Example::

      est = uorojax.tbptt(apply_fn, loss_fn, 16, example_x=xs[0], example_y=ys[0])
      carry = est.init_state(params, state0)
    """
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    truncation = checks.positive_int("truncation", truncation)
    checks.one_of("reduction", reduction, ("sum", "mean"))
    scale = 1.0 if reduction == "sum" else 1.0 / truncation

    def window_fn(params, start_states, xs, ys, stream_keys):
        """The gradient of the window's (scaled) summed loss, averaged over B streams
        (leading axes), from one batched backward; and the forward's results."""
        del stream_keys

        def total(p):
            run = functools.partial(forward_sequence, apply_fn, loss_fn, p)
            final_states, losses, outputs = over_streams(run, num_streams_of(xs))(
                start_states, xs, ys
            )
            mean = scale * jnp.sum(losses) / num_streams_of(xs)
            return mean, (final_states, losses, outputs)

        (_, (final_states, losses, outputs)), grads = jax.value_and_grad(total, has_aux=True)(
            params
        )
        return grads, final_states, losses, outputs

    return from_window_function(
        apply_fn,
        loss_fn,
        truncation,
        example_buffers(truncation, example_x, example_y, "tbptt"),
        init_start=lambda params, state0: state0,
        state_of=lambda start: start,
        window_fn=window_fn,
    )
