"""Checkpoints of an online run: the train state and the run's host-side state, by orbax.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
run killed mid-write resumes from the previous complete one.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from uorojax.trainer import TrainState


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


def restore_checkpoint(manager, template: TrainState):
    """The latest complete checkpoint as ``(train_state, meta)`` in ``template``'s
    structure, or None."""
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), _to_saveable(template)
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            train_state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    ts = restored["train_state"]
    ts = TrainState(*ts) if not isinstance(ts, TrainState) else ts
    return ts._replace(key=jax.random.wrap_key_data(ts.key)), restored["meta"]
