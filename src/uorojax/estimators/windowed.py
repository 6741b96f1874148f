"""The step protocol for estimators that update once per window of T steps.

TBPTT and truncated UORO compute their gradient from a whole window: the estimator's
carry at the window start (for UORO, the state and tangent pair there) and the window's
T inputs and targets. A *window function* does that work, for B streams at once::

    window_fn(params, starts, xs, ys, stream_keys) -> (grads, new_starts, losses, outputs)

Every argument and result but ``params`` and ``grads`` has a leading stream axis (``xs``:
streams, time, ...); ``stream_keys`` holds each stream's key of the window's last step,
``new_starts`` the carries at the next window start, and ``grads`` is the gradient of the
mean over streams. :func:`mean_over_streams` makes one from a window function of one
stream. :func:`from_window_function` turns it into an :class:`~uorojax.Estimator` with
``window == T``, written once for B streams (one stream is B = 1,
:func:`~uorojax.estimators.batching.streams_estimator`):

* its ``step`` runs the model one step (for the step's loss and output), records
  ``(x, y)`` in the carry's buffers, and on the step that closes a window calls the
  window function on them; before that it returns zeros with ``info.ready == False``.
  The streams move in lockstep: one position serves them all, so the window closes
  under one ``lax.cond``, not a select that would run the window function every step;
* its ``window_step`` calls the window function directly on a window handed over at
  once (what the trainer uses).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    StepInfo,
    mean_over_stream_axis,
    model_step,
    num_streams_of,
)
from uorojax.estimators.batching import over_streams, streams_estimator
from uorojax.tree import stack_zeros, zeros_like

PyTree = Any
WindowFn = Callable[..., tuple[PyTree, PyTree, jax.Array, PyTree]]


class WindowState(NamedTuple):
    """Carry of a windowed estimator.

    Attributes:
      start: the estimator's carry at the start of the current window (for TBPTT the
        model state there; for truncated UORO its :class:`~uorojax.UOROState`).
      state: the model state after the steps of the window consumed so far.
      xs, ys: the window's inputs and targets (leading axis T); None when T = 1, where
        a window is the current step alone.
      position: steps of the current window consumed (int32).
    """

    start: PyTree
    state: PyTree
    xs: PyTree
    ys: PyTree
    position: jax.Array


def example_buffers(truncation: int, example_x, example_y, who: str):
    """Zero window buffers sized from one step's input and target (None when T = 1)."""
    if truncation == 1:
        return None, None
    if example_x is None or example_y is None:
        raise checks.ConfigError(
            f"{who} with truncation {truncation} buffers a window of inputs and targets: "
            "pass example_x and example_y (one step's input and target, arrays or "
            "jax.ShapeDtypeStruct) when you build it"
        )
    return stack_zeros(example_x, truncation), stack_zeros(example_y, truncation)


def recording_step(apply_fn, loss_fn, truncation: int, window_fn: WindowFn):
    """The ``step`` of B streams: record ``(x, y)``, and close the window on its last step."""

    def step(params, carry: WindowState, xs, ys, stream_keys):
        streams = functools.partial(over_streams, num_streams=num_streams_of(xs))
        new_states, outputs = streams(lambda s, x: model_step(apply_fn, params, s, x))(
            carry.state, xs
        )
        losses = streams(lambda o, y: checks.call_loss(loss_fn, o, y))(outputs, ys)
        position = carry.position[0]  # the streams move in lockstep

        def written(buffer, value):
            if buffer is None:  # T = 1: the window is this step
                return jax.tree.map(lambda v: jnp.expand_dims(v, 1), value)
            return jax.tree.map(lambda b, v: b.at[:, position].set(v), buffer, value)

        buffer_xs, buffer_ys = written(carry.xs, xs), written(carry.ys, ys)
        ready = position == truncation - 1
        grads, start = jax.lax.cond(
            ready,
            lambda: window_fn(params, carry.start, buffer_xs, buffer_ys, stream_keys)[:2],
            lambda: (zeros_like(params), carry.start),
        )
        if carry.xs is None:  # T = 1: nothing to keep
            buffer_xs = buffer_ys = None
        new_position = (carry.position + 1) % truncation
        return (
            grads,
            WindowState(start, new_states, buffer_xs, buffer_ys, new_position),
            StepInfo(losses, outputs, ready),
        )

    return step


def whole_window_step(truncation: int, state_of: Callable, window_fn: WindowFn):
    """The ``window_step`` of B streams (stream-major ``xs``, ``ys`` and info)."""

    def window_step(params, carry: WindowState, xs, ys, stream_keys):
        grads, start, losses, outputs = window_fn(params, carry.start, xs, ys, stream_keys)
        buffers = (None, None) if carry.xs is None else (xs, ys)
        new_carry = WindowState(start, state_of(start), *buffers, jnp.zeros_like(carry.position))
        ready = jnp.arange(truncation) == truncation - 1
        return grads, new_carry, StepInfo(losses, outputs, ready)

    return window_step


def from_window_function(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    truncation: int,
    buffers: tuple[PyTree, PyTree],
    init_start: Callable[[PyTree, PyTree], PyTree],
    state_of: Callable[[PyTree], PyTree],
    window_fn: WindowFn,
) -> Estimator:
    """An :class:`Estimator` with ``window == truncation`` from a window function.

    Args:
      apply_fn, loss_fn: the model (for the step path's per-step loss and output).
      truncation: the window length T.
      buffers: ``example_buffers(...)``.
      init_start: ``(params, state0) -> start``, the carry at the first window start.
      state_of: ``start -> model state``.
      window_fn: the window function of B streams (see the module docstring).

    Returns:
      The single-stream estimator, whose ``per_stream`` field is the estimator of B
      streams.

    Example::

      est = from_window_function(apply_fn, loss_fn, 16, example_buffers(16, x0, y0, "mine"),
                                 init_start=lambda p, s: s, state_of=lambda s: s,
                                 window_fn=my_window_of_streams)
    """
    xs0, ys0 = buffers

    def init_state(params, state0) -> WindowState:
        checks.check_init(params, state0)
        return WindowState(init_start(params, state0), state0, xs0, ys0, jnp.zeros((), jnp.int32))

    return streams_estimator(
        init_state,
        recording_step(apply_fn, loss_fn, truncation, window_fn),
        truncation,
        whole_window_step(truncation, state_of, window_fn),
    )


def mean_over_streams(window_fn: WindowFn) -> WindowFn:
    """The window function of B streams from one of one stream, ``window_fn(params,
    start, xs, ys, key)``: mapped over the streams, each with its key, gradients averaged."""

    def batched(params, starts, xs, ys, stream_keys):
        one = functools.partial(window_fn, params)
        grads, starts, losses, outputs = over_streams(one, num_streams_of(xs))(
            starts, xs, ys, stream_keys
        )
        return mean_over_stream_axis(grads), starts, losses, outputs

    return batched
