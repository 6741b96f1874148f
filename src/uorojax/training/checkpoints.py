"""Checkpoints of an online run: the train state and the run's host-side state, by orbax.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
run killed mid-write resumes from the previous complete one. On several processes orbax
runs in its multi-process mode: every process writes the shards of the train state its
devices hold, process 0 the host-side state and the final rename; all of them must call
:func:`save_checkpoint` and :func:`restore_checkpoint` together, on a shared filesystem.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from uorojax.training.update import TrainState


def checkpoint_manager(workdir: str, keep: int):
    """An orbax manager of ``workdir/checkpoints`` keeping the last ``keep``."""
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        ),
    )


def _to_saveable(ts: TrainState):
    return ts._replace(key=jax.random.key_data(ts.key))


def save_checkpoint(manager, ts: TrainState, step: int, meta: dict) -> None:
    """Saves the train state and the run's host-side state (atomically, by orbax)."""
    import orbax.checkpoint as ocp

    manager.save(
        step,
        args=ocp.args.Composite(
            train_state=ocp.args.StandardSave(_to_saveable(ts)), meta=ocp.args.JsonSave(meta)
        ),
    )
    manager.wait_until_finished()


def _abstract(a) -> jax.ShapeDtypeStruct:
    """Shape, dtype and (for a JAX array) sharding of a template leaf."""
    sharding = a.sharding if isinstance(a, jax.Array) else None
    dtype = a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
    return jax.ShapeDtypeStruct(np.shape(a), dtype, sharding=sharding)


def restore_checkpoint(manager, template: TrainState):
    """The latest complete checkpoint as ``(train_state, meta)`` in ``template``'s
    structure, or None. Arrays come back with the template's shardings (on several
    processes, each process reads the shards its devices hold)."""
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(_abstract, _to_saveable(template))
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            train_state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    ts = restored["train_state"]
    ts = TrainState(*ts) if not isinstance(ts, TrainState) else ts
    return ts._replace(key=jax.random.wrap_key_data(ts.key)), restored["meta"]
