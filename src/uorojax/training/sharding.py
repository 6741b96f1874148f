"""Streams split over devices: a stream mesh, and train states and chunks placed on it.

On one process the mesh holds its local devices. On several processes (after
:func:`uorojax.distributed.initialize`) it holds every device of every process, process
by process, so that process ``p`` of ``P`` holds the contiguous block of streams
``[p·B/P, (p+1)·B/P)`` (:func:`process_streams`). Each process then feeds only its own
streams: :func:`shard_train_state` and :func:`shard_chunk` take process-local data and
build global arrays from it (``jax.make_array_from_process_local_data``). Under
``jax.jit`` the trainer's chunk then runs on every process's shard at once, and the mean
of the gradients over streams becomes an all-reduce across devices and processes, so
the estimators, ``per_stream``, ``as_optax`` and the trainer run unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from uorojax import checks
from uorojax.estimators.base import Estimator
from uorojax.training.update import TrainState

PyTree = Any


def stream_mesh(devices: Any = None) -> jax.sharding.Mesh:
    """A 1-D device mesh over the stream axis (named ``"streams"``).

    By default every device of every process (``jax.devices()``; on one process, its
    local devices), ordered process by process, so that each process's devices hold a
    contiguous block of streams (:func:`process_streams`).

    Example::

      mesh = uorojax.stream_mesh()
    """
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: d.process_index)  # stable: local order
    return jax.sharding.Mesh(np.asarray(devices), ("streams",))


def spans_processes(mesh: jax.sharding.Mesh) -> bool:
    """Whether the mesh holds devices of more than one process."""
    return len({d.process_index for d in mesh.devices.flat}) > 1


def process_streams(num_streams: int, mesh: jax.sharding.Mesh | None = None) -> range:
    """The streams this process feeds: the block of the stream axis its devices hold.

    With ``P`` processes of as many devices each, on :func:`stream_mesh`'s default mesh,
    process ``p`` feeds streams ``[p·B/P, (p+1)·B/P)``; on one process, all ``B``.

    Raises:
      ConfigError: when ``num_streams`` is not a multiple of the mesh's device count, or
        this process's devices do not hold one contiguous block.

    Example::

      streams = uorojax.training.sharding.process_streams(8)  # range(4, 8) on process 1 of 2
    """
    if mesh is None and jax.process_count() == 1:
        return range(num_streams)
    mesh = stream_mesh() if mesh is None else mesh
    if num_streams % mesh.size:
        raise checks.ConfigError(
            f"num_streams ({num_streams}) must be a multiple of the device count "
            f"({mesh.size}) of the stream mesh"
        )
    indices = _sharding(mesh, 1, 0).addressable_devices_indices_map((num_streams,))
    blocks = sorted({(index[0].start or 0, index[0].stop) for index in indices.values()})
    if any(a[1] != b[0] for a, b in zip(blocks, blocks[1:])):
        raise checks.ConfigError(
            f"process {jax.process_index()}'s devices hold streams {blocks}, not one "
            "contiguous block; build the mesh with stream_mesh() (devices process by process)"
        )
    return range(blocks[0][0], blocks[-1][1])


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


def _place(a: Any, mesh: jax.sharding.Mesh, axis: int | None) -> jax.Array:
    """``a`` on the mesh, split along ``axis`` (None: replicated). On a mesh of several
    processes ``a`` is this process's part: its block of ``axis``, or the whole value
    (the same on every process) when replicated."""
    sharding = _sharding(mesh, np.ndim(a), axis)
    if not spans_processes(mesh):
        return jax.device_put(a, sharding)
    if jax.dtypes.issubdtype(jnp.result_type(a), jax.dtypes.prng_key):
        data = _place(jax.random.key_data(a), mesh, axis)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.make_array_from_process_local_data(sharding, np.asarray(a))


def shard_train_state(ts: TrainState, mesh: jax.sharding.Mesh, stream_axes: PyTree) -> TrainState:
    """Places a train state on a stream mesh: carry leaves split along their stream axis
    (see :func:`carry_stream_axes`), everything else (params, optimizer state, key,
    ``θ̃`` of shared tangents) replicated. The jitted trainer then runs data-parallel over
    streams: XLA averages gradients and reduces the shared-tangent inner products across
    devices.

    On a mesh of several processes, ``ts`` is this process's: its carry holds the streams
    the process feeds (:func:`process_streams`; ``trainer.init`` on those streams' states
    builds it), every other leaf the same value on every process. The carry of B streams
    is the carry of each block of streams side by side (a stream's initial carry depends
    on its own state only), so the global train state equals the one a single process
    would build.

    Example::

      mesh = uorojax.stream_mesh()
      ts = trainer.init(params, states0, key)  # states0: this process's streams
      ts = uorojax.shard_train_state(ts, mesh, uorojax.carry_stream_axes(est, params, states0))
    """

    def replicate(tree):
        return jax.tree.map(lambda a: _place(a, mesh, None), tree)

    return ts._replace(
        params=replicate(ts.params),
        opt_state=replicate(ts.opt_state),
        carry=jax.tree.map(lambda a, axis: _place(a, mesh, axis), ts.carry, stream_axes),
        key=replicate(ts.key),
        step=replicate(ts.step),
        num_skipped=replicate(ts.num_skipped),
        halted_at=replicate(ts.halted_at),
        pending=replicate(ts.pending),
        shadow_carry=replicate(ts.shadow_carry),
    )


def shard_chunk(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    """Places a chunk of inputs or targets, shaped ``(time, streams, ...)``, on the mesh.

    On a mesh of several processes, ``tree`` holds this process's streams
    (:func:`process_streams`) and the result the chunk of all streams.

    Example::

      xs, ys = stream.next_chunk(100)  # (100, streams of this process)
      ts, metrics = trainer.run(ts, uorojax.shard_chunk(xs, mesh), uorojax.shard_chunk(ys, mesh))
    """
    return jax.tree.map(lambda a: _place(a, mesh, 1), tree)
