"""The step protocol for estimators that update once per window of T steps.

TBPTT and truncated UORO compute their gradient from a whole window: the model state at
the window start (and, for UORO, the tangent pair there) and the window's T inputs and
targets. :func:`windowed` turns such a *window function* into the one-step protocol:
``step`` runs the model one step (for the step's loss and output), buffers ``(x, y)``,
and on the step that closes a window calls the window function on the buffer; before
that it returns zeros with ``info.ready == False``. The whole-window fast path calls the
window function directly on a window handed over at once (what the trainer uses).

A window function is ``(params, start, xs, ys, key) -> (grads, new_start, losses,
outputs)``: ``start`` is the estimator's carry at the window start, ``xs``/``ys`` have a
leading time axis of length T, ``key`` is the key of the window's last step, and
``new_start`` the carry at the next window start. The batched variant takes ``start``
and the window with a leading stream axis (``xs``: streams, time, ...), one key for all
streams, and returns the gradient of the mean loss over streams.
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
    mean_over_stream_axis,
    model_step,
    num_streams_of,
    split_per_stream,
    validate,
    with_fast_paths,
)
from uorojax.tree import first, stack_zeros, swap_leading_axes, zeros_like

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


def windowed(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    truncation: int,
    buffers: tuple[PyTree, PyTree],
    init_start: Callable[[PyTree, PyTree], PyTree],
    state_of: Callable[[PyTree], PyTree],
    window_fn: WindowFn,
    batched_window_fn: WindowFn,
) -> Estimator:
    """An :class:`Estimator` with ``window == truncation`` from a window function.

    Args:
      apply_fn, loss_fn: the model (for the step path's per-step loss and output).
      truncation: the window length T.
      buffers: ``example_buffers(...)``.
      init_start: ``(params, state0) -> start``, the carry at the first window start.
      state_of: ``start -> model state``.
      window_fn: the single-stream window function (see the module docstring).
      batched_window_fn: its fused version over a leading stream axis.
    """
    xs0, ys0 = buffers

    def init_state(params, state0) -> WindowState:
        checks.check_params(params)
        return WindowState(init_start(params, state0), state0, xs0, ys0, jnp.zeros((), jnp.int32))

    def buffered(buffer, value, pos, batched):
        if buffer is None:  # T = 1: the window is this step
            return jax.tree.map(lambda v: jnp.expand_dims(v, 1 if batched else 0), value)
        at = (slice(None), pos) if batched else (pos,)
        return jax.tree.map(lambda b, v: b.at[at].set(v), buffer, value)

    def advance(params, carry: WindowState, x, y, key, batched: bool):
        """One step of the protocol. Batched: every argument has a leading stream axis
        and the streams move in lockstep, so one position serves them all."""
        mapped = jax.vmap if batched else (lambda f: f)
        new_state, output = mapped(lambda s, x1: model_step(apply_fn, params, s, x1))(
            carry.state, x
        )
        loss = mapped(lambda o, y1: checks.call_loss(loss_fn, o, y1))(output, y)
        pos = carry.position[0] if batched else carry.position
        xs = buffered(carry.xs, x, pos, batched)
        ys = buffered(carry.ys, y, pos, batched)
        ready = pos == truncation - 1
        fn = batched_window_fn if batched else window_fn

        def close(_):
            grads, start, _, _ = fn(params, carry.start, xs, ys, key)
            return grads, start

        grads, start = jax.lax.cond(ready, close, lambda _: (zeros_like(params), carry.start), None)
        position = (carry.position + 1) % truncation
        if carry.xs is None:  # T = 1: nothing to keep
            xs = ys = None
        new_carry = WindowState(start, new_state, xs, ys, position)
        return grads, new_carry, StepInfo(loss, output, ready)

    def whole(params, carry: WindowState, xs, ys, keys, batched: bool):
        """A whole window from a boundary (``xs``: time first, then streams if batched)."""
        fn = batched_window_fn if batched else window_fn
        swap = swap_leading_axes if batched else (lambda t: t)
        grads, start, losses, outputs = fn(params, carry.start, swap(xs), swap(ys), keys[-1])
        buffers = (None, None) if carry.xs is None else (swap(xs), swap(ys))
        new_carry = WindowState(start, state_of(start), *buffers, jnp.zeros_like(carry.position))
        ready = jnp.arange(truncation) == truncation - 1
        return grads, new_carry, StepInfo(swap(losses), swap(outputs), ready)

    def step(params, carry, x, y, key):
        validate(params, key)
        return advance(params, carry, x, y, key, False)

    def step_window(params, carry, xs, ys, keys):
        validate(params, keys[0])
        return whole(params, carry, xs, ys, keys, False)

    def per_stream_step(params, carry, xs, ys, key):
        validate(params, key)
        check_streams(num_streams_of(carry.position), xs, ys)
        return advance(params, carry, xs, ys, key, True)

    def per_stream_step_window(params, carry, xs, ys, keys):
        validate(params, keys[0])
        check_streams(num_streams_of(carry.position), first(xs), first(ys))
        return whole(params, carry, xs, ys, keys, True)

    return Estimator(
        init_state,
        with_fast_paths(
            step,
            step_window=step_window,
            per_stream_step=per_stream_step,
            per_stream_step_window=per_stream_step_window,
        ),
        window=truncation,
    )


def mean_over_streams(window_fn: WindowFn) -> WindowFn:
    """The batched window function of a single-stream one: vmapped over streams (each
    with its own key, split from the one given), gradients averaged."""

    def batched(params, start, xs, ys, key):
        keys = split_per_stream(key, num_streams_of(xs))
        grads, start, losses, outputs = jax.vmap(window_fn, in_axes=(None, 0, 0, 0, 0))(
            params, start, xs, ys, keys
        )
        return mean_over_stream_axis(grads), start, losses, outputs

    return batched
