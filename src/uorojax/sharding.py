"""Streams split over devices: a stream mesh, and train states and chunks placed on it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from uorojax.estimators.base import Estimator
from uorojax.trainer import TrainState

PyTree = Any


def stream_mesh(devices: Any = None) -> jax.sharding.Mesh:
    """A 1-D device mesh over the stream axis (named ``"streams"``), all local devices
    by default. On several hosts, call ``jax.distributed.initialize()`` first and pass
    ``jax.devices()`` to span them all.

    Example::

      mesh = uorojax.stream_mesh()
    """
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("streams",))


def carry_stream_axes(estimator: Estimator, params: PyTree, states0: PyTree) -> PyTree:
    """For every leaf of the estimator carry, the index of its stream axis (or None).

    Found without guessing from shapes: the carry's shapes are computed (abstractly)
    for B and for B + 1 streams, and the axis that changes is the stream axis. A
    shared tangent ``θ̃`` has none; per-stream tildes, states and buffers have one.
    """

    def shapes(n):
        grown = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct((n, *jnp.shape(a)[1:]), jnp.result_type(a)), states0
        )
        return jax.eval_shape(lambda s: estimator.init_state(params, s), grown)

    num_streams = jnp.shape(jax.tree.leaves(states0)[0])[0]

    def axis(a, b):
        changed = [i for i, (m, n) in enumerate(zip(a.shape, b.shape)) if m != n]
        return changed[0] if changed else None

    return jax.tree.map(axis, shapes(num_streams), shapes(num_streams + 1))


def _sharding(mesh, ndim: int, axis: int | None):
    spec = [None] * ndim
    if axis is not None:
        spec[axis] = "streams"
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def shard_train_state(ts: TrainState, mesh: jax.sharding.Mesh, stream_axes: PyTree) -> TrainState:
    """Places a train state on a stream mesh: carry leaves split along their stream axis
    (see :func:`carry_stream_axes`), everything else (params, optimizer state, ``θ̃`` of
    shared tangents) replicated. The jitted trainer then runs data-parallel over streams:
    XLA averages gradients and reduces the shared-tangent inner products across devices.
    """

    def place(a, axis):
        return jax.device_put(a, _sharding(mesh, a.ndim, axis))

    def replicate(tree):
        return jax.tree.map(lambda a: place(a, None), tree)

    return ts._replace(
        params=replicate(ts.params),
        opt_state=replicate(ts.opt_state),
        carry=jax.tree.map(place, ts.carry, stream_axes),
        step=replicate(ts.step),
        num_skipped=replicate(ts.num_skipped),
        halted_at=replicate(ts.halted_at),
        pending=replicate(ts.pending),
        shadow_carry=replicate(ts.shadow_carry),
    )


def shard_chunk(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    """Places a chunk of inputs or targets, shaped ``(time, streams, ...)``, on the mesh."""
    return jax.tree.map(lambda a: jax.device_put(a, _sharding(mesh, a.ndim, 1)), tree)
