"""Online training: the trainer, the optax transform, sharding and runs over several
processes (:mod:`~uorojax.training.distributed`).

``uorojax.training.checkpoints`` and ``uorojax.training.metric_log`` (the runner's
checkpoints and logs) need the ``run`` extra and are imported on their own.
"""

from uorojax.training import distributed
from uorojax.training.sharding import (
    carry_stream_axes,
    process_streams,
    shard_chunk,
    shard_train_state,
    stream_mesh,
)
from uorojax.training.trainer import Trainer, make_trainer, own_buffers, raise_if_halted
from uorojax.training.transform import OnlineGradientState, as_optax
from uorojax.training.update import (
    TrainState,
    advance_counters,
    gradient_agreement,
    keep_if,
    paper_schedule,
    step_finite,
    step_key,
    step_metrics,
    when_ready,
)

__all__ = [
    "OnlineGradientState",
    "TrainState",
    "Trainer",
    "advance_counters",
    "as_optax",
    "carry_stream_axes",
    "distributed",
    "gradient_agreement",
    "keep_if",
    "make_trainer",
    "own_buffers",
    "paper_schedule",
    "process_streams",
    "raise_if_halted",
    "shard_chunk",
    "shard_train_state",
    "step_finite",
    "step_key",
    "step_metrics",
    "stream_mesh",
    "when_ready",
]
