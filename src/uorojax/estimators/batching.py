"""Batches of streams: one carry per stream (``per_stream``), or one system (``as_one_system``)."""

from __future__ import annotations

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
from uorojax.tree import first


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
    in its ``per_stream`` field (UORO, the windowed ones), which then is the result.

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


def one_stream(step_of_streams):
    """A step of B streams (``(params, carry, xs, ys) -> (grads, carry, info)``, leading
    stream axes, the gradient of the mean loss) as the protocol's step of one stream: the
    stream's carry, input and target given a leading axis of one, removed again from the
    carry, the loss and the output.

    Example::

      step = one_stream(functools.partial(snap1_streams, apply_fn, loss_fn, structure))
    """

    def step(params, carry, x, y, key):
        validate(params, key)
        lead = lambda tree: jax.tree.map(lambda a: a[None], tree)  # noqa: E731
        grads, new_carry, info = step_of_streams(params, lead(carry), lead(x), lead(y))
        return grads, first(new_carry), info._replace(loss=info.loss[0], output=first(info.output))

    return step


def of_streams(step_of_streams):
    """A step of B streams as the ``step`` of a ``per_stream`` estimator: the protocol's
    checks, and its key (unused by deterministic estimators)."""

    def step(params, carry, xs, ys, key):
        validate(params, key)
        check_streams(num_streams_of(carry), xs, ys)
        return step_of_streams(params, carry, xs, ys)

    return step


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
