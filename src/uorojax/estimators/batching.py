"""Batches of streams: one carry per stream (``per_stream``), or one system (``as_one_system``).

An estimator with a fused path for B streams writes its maths once, for B streams, and
runs one stream as B = 1 (:func:`streams_estimator`, :func:`one_stream`,
:func:`of_streams`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    check_streams,
    init_per_stream,
    mean_over_stream_axis,
    num_streams_of,
    run_window,
    split_per_stream,
    time_major_info,
    validate,
)
from uorojax.tree import first, swap_leading_axes

PyTree = Any


def one_info(info):
    """A vmapped step's info as one batch's: one ``ready`` flag (the streams move in
    step) and one certificate for all streams' carries."""
    finite = info.carry_finite
    return info._replace(
        ready=info.ready[0], carry_finite=None if finite is None else jnp.all(finite)
    )


def per_stream(estimator: Estimator) -> Estimator:
    """Maps an estimator over B independent streams, each with its own carry.

    ``init_state(params, states0)`` takes states with a leading stream axis;
    ``step(params, carry, xs, ys, key)`` takes inputs and targets with a leading stream
    axis, splits ``key`` into one key per stream, and returns the gradient averaged over
    streams (the gradient of the mean loss), ``info.loss`` and ``info.output`` per
    stream. For UORO this is the per-stream-tangents mode: memory ``B·|Θ|``, variance
    ``/B``.

    This is ``jax.vmap(estimator.step, in_axes=(None, 0, 0, 0, 0))`` followed by a mean
    of the gradients over the stream axis, unless the estimator carries a fused version
    in its ``per_stream`` field (UORO, TBPTT, SnAp-1, e-prop, RFLO, ES-D-RTRL: those
    built by :func:`streams_estimator`), which then is the result.

    Example::

      est = uorojax.per_stream(uorojax.uoro(apply_fn, loss_fn))
      carry = est.init_state(params, states0)          # states0: (B, ...)
      grads, carry, info = est.step(params, carry, xs_t, ys_t, key)
    """
    if estimator.per_stream is not None:
        return estimator.per_stream

    init_state = init_per_stream(estimator.init_state)

    def step(params, carry, xs, ys, key):
        num_streams = num_streams_of(carry)
        check_streams(num_streams, xs, ys)
        grads, carry, info = jax.vmap(estimator.step, in_axes=(None, 0, 0, 0, 0))(
            params, carry, xs, ys, split_per_stream(key, num_streams)
        )
        return mean_over_stream_axis(grads), carry, one_info(info)

    def window_step(params, carry, xs, ys, keys):  # xs: time, streams, ...
        num_streams = num_streams_of(carry)
        stream_keys = jax.vmap(lambda k: split_per_stream(k, num_streams))(keys)
        grads, carry, info = jax.vmap(
            lambda c, x, y, k: run_window(estimator, params, c, x, y, k), in_axes=(0, 1, 1, 1)
        )(carry, xs, ys, stream_keys)
        return mean_over_stream_axis(grads), carry, time_major_info(one_info(info))

    if estimator.window == 1:
        return Estimator(init_state, step)
    return Estimator(init_state, step, estimator.window, window_step)


def one_stream(step_of_streams: Callable, *, whole_window: bool = False) -> Callable:
    """A step of B streams as the protocol's step of one stream: B = 1.

    ``step_of_streams(params, carry, xs, ys, stream_keys) -> (grads, carry, info)`` takes
    leading stream axes and one key a stream, and returns the gradient of the mean loss.
    The stream's carry, input and target are given a leading axis of one and its key
    becomes the one stream's key (so one stream draws what stream b of ``per_stream``
    draws from its own key); the axis is removed again from the carry, the loss and the
    output. ``whole_window``: the function is a ``window_step``, ``x`` and ``y`` have a
    leading time axis, the keys are the window's (the last one is the stream's) and
    ``info``'s loss and output come back stream-major.

    Example::

      step = one_stream(functools.partial(uoro_streams_step, apply_fn, loss_fn, 1e-7, 1))
    """

    def step(params, carry, x, y, key):
        key = key[-1] if whole_window else key
        validate(params, key)
        grads, new_carry, info = step_of_streams(params, lead(carry), lead(x), lead(y), key[None])
        return grads, first(new_carry), info._replace(loss=info.loss[0], output=first(info.output))

    return step


def of_streams(step_of_streams: Callable, *, whole_window: bool = False) -> Callable:
    """A step of B streams (see :func:`one_stream`) as the ``step`` of a ``per_stream``
    estimator: the protocol's checks, and ``key`` split into one key a stream.
    ``whole_window``: a ``window_step``, whose inputs and info are time-major and whose
    streams draw from the keys of the window's last step."""

    def step(params, carry, xs, ys, key):
        key = key[-1] if whole_window else key
        validate(params, key)
        if whole_window:
            xs, ys = swap_leading_axes(xs), swap_leading_axes(ys)
        num_streams = num_streams_of(carry)
        check_streams(num_streams, xs, ys)
        grads, carry, info = step_of_streams(
            params, carry, xs, ys, split_per_stream(key, num_streams)
        )
        return grads, carry, time_major_info(info) if whole_window else info

    return step


def streams_estimator(
    init_state: Callable[[PyTree, PyTree], PyTree],
    step_of_streams: Callable,
    window: int = 1,
    window_of_streams: Callable | None = None,
) -> Estimator:
    """An estimator whose maths is written once, for B streams: one stream is B = 1.

    Args:
      init_state: ``(params, state0) -> carry`` of one stream.
      step_of_streams: ``(params, carry, xs, ys, stream_keys) -> (grads, carry, info)``
        with leading stream axes, the gradient of the mean loss over the streams.
      window: the estimator's window.
      window_of_streams: None, or the same for a whole window from a window boundary
        (``xs``, ``ys``: streams, time, ...; info stream-major).

    Returns:
      The one-stream estimator (:func:`one_stream`), whose ``per_stream`` field is the
      estimator of B streams (:func:`of_streams`).

    Example::

      est = streams_estimator(init_state, my_step_of_streams)
    """
    whole = functools.partial(of_streams, whole_window=True)
    streams = Estimator(
        init_per_stream(init_state),
        of_streams(step_of_streams),
        window,
        None if window_of_streams is None else whole(window_of_streams),
    )
    single_window = functools.partial(one_stream, whole_window=True)
    return Estimator(
        init_state,
        one_stream(step_of_streams),
        window,
        None if window_of_streams is None else single_window(window_of_streams),
        per_stream=streams,
    )


def lead(tree: PyTree) -> PyTree:
    """A leading axis of one on every leaf."""
    return jax.tree.map(lambda a: a[None], tree)


def over_streams(fn: Callable, num_streams: int) -> Callable:
    """Maps a function of one stream over a leading stream axis of every argument and
    result: ``jax.vmap``, and for one stream a call on the stream's own values, so that
    B = 1 compiles to the program of one stream (docs/performance.md, "One stream")."""
    if num_streams > 1:
        return jax.vmap(fn)
    return lambda *args: lead(fn(*first(args)))


def as_one_system(apply_fn: ApplyFn, loss_fn: LossFn) -> tuple[ApplyFn, LossFn]:
    """Treats a batch of B streams as one recurrent system (shared params, stacked states).

    Returns ``(batched_apply_fn, batched_loss_fn)``: states, inputs, targets and outputs
    carry a leading stream axis and the loss is the mean over streams. Any estimator built
    on the pair sees one system; for UORO that is the shared-tangents mode (one ``s̃`` of
    size ``B·|S|``, one ``θ̃``; the cost of one batched backward, no ``1/B`` variance
    reduction).

    Example::

        est = uorojax.uoro(*uorojax.as_one_system(apply_fn, loss_fn))
    """

    def batched_apply(params, states, xs):
        return jax.vmap(apply_fn, in_axes=(None, 0, 0))(params, states, xs)

    def batched_loss(outputs, ys):
        return jnp.mean(jax.vmap(loss_fn)(outputs, ys))

    return batched_apply, batched_loss
