"""The step protocol for estimators that update once per window of T steps.

TBPTT and truncated UORO compute their gradient from a whole window: the estimator's
carry at the window start (for UORO, the state and tangent pair there) and the window's
T inputs and targets. A *window function* does that work::

    window_fn(params, start, xs, ys, key) -> (grads, new_start, losses, outputs)

``xs``/``ys`` have a leading time axis of length T, ``key`` is the key of the window's
last step and ``new_start`` the carry at the next window start.
:func:`from_window_function` turns it into an :class:`~uorojax.Estimator` with ``window
== T``. Its ``step`` runs the model one step (for the step's loss and output), records
``(x, y)`` in the carry's buffers, and on the step that closes a window calls the window
function on them; before that it returns zeros with ``info.ready == False``. Its
``window_step`` calls the window function directly on a window handed over at once
(what the trainer uses).

The estimator's ``per_stream`` field is the same construction over B streams: the
recording step mapped over the streams, which move in lockstep (one position serves
them all, so the window closes under one ``lax.cond``, not a select that would run the
window function at every step), and a window function of all streams at once, whose
arguments have a leading stream axis (``xs``: streams, time, ...), with one key for all
streams, returning the gradient of the mean loss.
"""

from __future__ import annotations

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
    check_streams,
    init_per_stream,
    mean_over_stream_axis,
    model_step,
    num_streams_of,
    split_per_stream,
    validate,
)
from uorojax.tree import stack_zeros, swap_leading_axes, zeros_like

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


class _Layout(NamedTuple):
    """How one variant of a windowed estimator lays out its streams.

    Attributes:
      map_streams: maps a one-stream function over the streams (identity for one).
      time_axis: the buffers' time axis (0 for one stream, 1 after the stream axis).
      check: ``(carry, x, y)`` checks of the step's arguments.
    """

    map_streams: Callable
    time_axis: int
    check: Callable


def _single_check(carry, x, y):
    del carry, x, y


def _streams_check(carry, x, y):
    check_streams(num_streams_of(carry.position), x, y)


SINGLE = _Layout(lambda f: f, 0, _single_check)
STREAMS = _Layout(jax.vmap, 1, _streams_check)


def _assemble(apply_fn, loss_fn, truncation, init_state, state_of, window_fn, layout):
    """The estimator of one layout: recording step, window closing, whole-window path."""

    def transpose_streams(tree):  # time-major <-> the buffers' layout (an involution)
        return tree if layout.time_axis == 0 else swap_leading_axes(tree)

    def record(params, carry: WindowState, x, y):
        """One step: the model's loss and output, and ``(x, y)`` at the window position."""
        new_state, output = layout.map_streams(lambda s, x1: model_step(apply_fn, params, s, x1))(
            carry.state, x
        )
        loss = layout.map_streams(lambda o, y1: checks.call_loss(loss_fn, o, y1))(output, y)
        position = jnp.reshape(carry.position, (-1,))[0]  # the streams move in lockstep

        def written(buffer, value):
            if buffer is None:  # T = 1: the window is this step
                return jax.tree.map(lambda v: jnp.expand_dims(v, layout.time_axis), value)
            at = (slice(None),) * layout.time_axis + (position,)
            return jax.tree.map(lambda b, v: b.at[at].set(v), buffer, value)

        return new_state, loss, output, written(carry.xs, x), written(carry.ys, y), position

    def step(params, carry: WindowState, x, y, key):
        validate(params, key)
        layout.check(carry, x, y)
        new_state, loss, output, xs, ys, position = record(params, carry, x, y)
        ready = position == truncation - 1
        grads, start = jax.lax.cond(
            ready,
            lambda: window_fn(params, carry.start, xs, ys, key)[:2],
            lambda: (zeros_like(params), carry.start),
        )
        if carry.xs is None:  # T = 1: nothing to keep
            xs = ys = None
        new_position = (carry.position + 1) % truncation
        return (
            grads,
            WindowState(start, new_state, xs, ys, new_position),
            StepInfo(loss, output, ready),
        )

    def window_step(params, carry: WindowState, xs, ys, keys):
        validate(params, keys[0])
        layout.check(carry, jax.tree.map(lambda a: a[0], xs), jax.tree.map(lambda a: a[0], ys))
        xs, ys = transpose_streams(xs), transpose_streams(ys)
        grads, start, losses, outputs = window_fn(params, carry.start, xs, ys, keys[-1])
        buffers = (None, None) if carry.xs is None else (xs, ys)
        new_carry = WindowState(start, state_of(start), *buffers, jnp.zeros_like(carry.position))
        ready = jnp.arange(truncation) == truncation - 1
        return (
            grads,
            new_carry,
            StepInfo(transpose_streams(losses), transpose_streams(outputs), ready),
        )

    return Estimator(init_state, step, truncation, window_step)


def from_window_function(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    truncation: int,
    buffers: tuple[PyTree, PyTree],
    init_start: Callable[[PyTree, PyTree], PyTree],
    state_of: Callable[[PyTree], PyTree],
    window_fn: WindowFn,
    per_stream_window_fn: WindowFn | None = None,
) -> Estimator:
    """An :class:`Estimator` with ``window == truncation`` from a window function.

    Args:
      apply_fn, loss_fn: the model (for the step path's per-step loss and output).
      truncation: the window length T.
      buffers: ``example_buffers(...)``.
      init_start: ``(params, state0) -> start``, the carry at the first window start.
      state_of: ``start -> model state``.
      window_fn: the single-stream window function (see the module docstring).
      per_stream_window_fn: its fused version over a leading stream axis; None maps
        ``window_fn`` over the streams (:func:`mean_over_streams`).

    Returns:
      The single-stream estimator, whose ``per_stream`` field is the estimator of B
      streams.
    """
    xs0, ys0 = buffers

    def init_state(params, state0) -> WindowState:
        checks.check_init(params, state0)
        return WindowState(init_start(params, state0), state0, xs0, ys0, jnp.zeros((), jnp.int32))

    init_streams = init_per_stream(init_state)
    per_stream_window_fn = per_stream_window_fn or mean_over_streams(window_fn)
    common = (apply_fn, loss_fn, truncation)
    streams = _assemble(*common, init_streams, state_of, per_stream_window_fn, STREAMS)
    single = _assemble(*common, init_state, state_of, window_fn, SINGLE)
    return single._replace(per_stream=streams)


def mean_over_streams(window_fn: WindowFn) -> WindowFn:
    """The window function of B streams from a single-stream one: vmapped over streams
    (each with its own key, split from the one given), gradients averaged."""

    def batched(params, start, xs, ys, key):
        keys = split_per_stream(key, num_streams_of(xs))
        grads, start, losses, outputs = jax.vmap(window_fn, in_axes=(None, 0, 0, 0, 0))(
            params, start, xs, ys, keys
        )
        return mean_over_stream_axis(grads), start, losses, outputs

    return batched
