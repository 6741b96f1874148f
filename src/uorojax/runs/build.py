"""What a config builds: the task streams, model, estimator, optimizer and trainer, each
read from its table (:data:`uorojax.tasks.TASKS`, :data:`uorojax.models.registry.MODELS`,
:data:`uorojax.registry.ESTIMATORS`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from uorojax import checks, tasks
from uorojax.estimators import registry
from uorojax.models import registry as model_registry
from uorojax.models.model import Model
from uorojax.models.structure.types import Structure
from uorojax.runs.config import (
    ChunkPlan,
    RunError,
    Setting,
    _whole_windows,
    hyperparameters_of,
    plan_chunks,
    validate_config,
)
from uorojax.tasks.registry import Floors, TaskEntry
from uorojax.training.sharding import process_streams
from uorojax.training.trainer import Trainer, make_trainer
from uorojax.training.update import TrainState, paper_schedule
from uorojax.tree import first, repeat_streams


class Experiment(NamedTuple):
    """What :func:`build` makes from a config.

    Attributes:
      config: the validated config.
      streams: one task stream per seed (on several processes, the streams this process
        feeds: :func:`uorojax.training.sharding.process_streams`).
      trainer: the online trainer (its ``estimator`` built first: its ``window`` is the
        one truth about how often the parameters move).
      init_model: ``seed -> (params, state0)`` (states with a stream axis, of this
        process's streams, when ``num_streams > 1``).
      task: the task's entry (its loss, metrics, curriculum and floors).
      floors: the task's floors for its arguments, where it knows them.
      apply_fn, loss_fn, structure: the single-stream model the estimator is built on
        (for the gradient-quality measurements and diagnostics on a trained run).
      held_out: ``seed -> stream``: one stream of the task, for quality measurements.
      plan: the chunk plan (:func:`plan_chunks`).
    """

    config: ml_collections.ConfigDict
    streams: list
    trainer: Trainer
    init_model: Callable[[int], tuple[Any, Any]]
    task: TaskEntry
    floors: Floors | None
    apply_fn: Callable
    loss_fn: Callable
    structure: Structure | None
    held_out: Callable[[int], Any]
    plan: ChunkPlan


def build_model(c: ml_collections.ConfigDict, vocab: int) -> Model:
    """The model a config names (``c.model`` and the fields it reads), reading symbols
    over ``vocab`` and predicting the next one.

    Example::

      model = build_model(default_config(), vocab=3)  # a GRU-64
    """
    fields = {name: c[name] for name in model_registry.model_fields()}
    return model_registry.build_model(c.model, vocab, **fields)


def task_model(c: ml_collections.ConfigDict, stream: Any) -> Model:
    """The model of a run: the task's own (influence balancing's linear system) or the
    config's, over the stream's symbols."""
    entry = tasks.TASKS[c.task]
    if entry.model is None:
        return build_model(c, stream.vocab_size)
    try:
        return entry.model(**c.task_args)
    except TypeError as err:
        raise checks.ConfigError(f"bad arguments for task {c.task!r}: {err}") from err


def optimizer(c: ml_collections.ConfigDict, window: int) -> optax.GradientTransformation:
    """The config's optimizer: Adam or SGD, at a constant rate or the paper's schedule
    (counted in stream steps, for an estimator that updates every ``window``), clipped
    when ``clip_norm`` is set."""
    lr = c.learning_rate
    if c.schedule == "paper":
        lr = paper_schedule(c.learning_rate, c.schedule_alpha, steps_per_update=window)
    opt = {"adam": optax.adam, "sgd": optax.sgd}[c.optimizer](lr)
    if c.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(c.clip_norm), opt)
    return opt


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Builds the streams, model, estimator, optimizer and trainer a config names.

    Raises:
      ConfigError: for a bad field (:func:`validate_config`), a hyperparameter the
        estimator's constructor refuses, ``steps`` that are not whole windows, or a
        config several processes cannot split (:func:`check_processes`).
    """
    c = validate_config(config)
    check_processes(c)
    entry = tasks.TASKS[c.task]
    num_streams = None if c.num_streams == 1 else c.num_streams
    mine = process_streams(c.num_streams)  # this process's streams (all, on one process)
    local_streams = None if num_streams is None else len(mine)

    def make(seed, n=None, first_stream=0):
        return tasks.make_stream(
            c.task, seed=seed, num_streams=n, first_stream=first_stream, **c.task_args
        )

    streams = [make(c.seed + i, local_streams, mine.start) for i in range(c.num_seeds)]
    model = task_model(c, streams[0])
    example_x, example_y = (
        jnp.asarray(a if num_streams is None else a[0]) for a in streams[0].example()
    )

    def init_model(seed):
        params, state0 = model.init(jax.random.key(seed), example_x)
        if local_streams is not None:
            state0 = repeat_streams(state0, local_streams)
        return params, state0

    batching = {"num_streams": num_streams, "batch_mode": c.batch_mode}
    estimator = registry.build_estimator(
        c.algorithm, model.apply, entry.loss, structure=model.structure,
        example_x=example_x, example_y=example_y, **batching, **hyperparameters_of(c),
    )  # fmt: skip
    window = estimator.window
    _whole_windows("steps", c.steps, window, c.algorithm)
    shadow = None
    if c.shadow_rtrl:
        shadow = registry.build_estimator("rtrl", model.apply, entry.loss, **batching)
    trainer = make_trainer(
        estimator,
        optimizer(c, window),
        nonfinite=c.nonfinite,
        cross_entropy=entry.bits,
        shadow=shadow,
        param_metrics=entry.param_metrics,
        target_metrics=entry.target_metrics,
        donate=True,  # the runner keeps only the returned train state
    )
    floors = None if entry.floors is None else entry.floors(streams[0])
    return Experiment(
        c, streams, trainer, init_model, entry, floors, model.apply, entry.loss,
        model.structure, make, plan_chunks(c, window),
    )  # fmt: skip


def check_processes(c: ml_collections.ConfigDict) -> None:
    """What a run of several processes needs of its config: one seed, sharded streams, and
    ``num_streams`` a multiple of the number of processes.

    Raises:
      ConfigError: naming the field.
    """
    count = jax.process_count()
    if count == 1:
        return
    if c.num_seeds > 1:
        raise RunError(
            f"num_seeds ({c.num_seeds}) > 1 runs on one process; on {count} processes run "
            "each seed as its own run ({}, one workdir per seed)",
            Setting("num_seeds", 1),
        )
    if not c.shard_streams:
        raise RunError(
            f"shard_streams=False keeps the streams on one device, but a run of {count} "
            "processes splits them over the processes; set {}",
            Setting("shard_streams", True),
        )
    if c.num_streams % count:
        raise checks.ConfigError(
            f"num_streams ({c.num_streams}) must be a multiple of the number of processes "
            f"({count}): each process feeds num_streams / {count} streams"
        )


def initial_train_state(exp: Experiment) -> TrainState:
    """The train state at step 0: one run, or the seeds' runs stacked on a leading axis.
    On several processes, this process's part (its streams' carry).

    Raises:
      RunError: the estimator does not fit the config's model, naming the models it fits.
    """
    c = exp.config
    states = []
    for i in range(c.num_seeds):
        params, state0 = exp.init_model(c.seed + i)
        try:
            states.append(exp.trainer.init(params, state0, jax.random.key(c.seed + i)))
        except checks.ConfigError as err:
            if exp.task.model is not None:
                raise
            raise misfit(c, err, exp.held_out(c.seed)) from err
    if c.num_seeds == 1:
        return states[0]
    return jax.tree.map(lambda *a: jnp.stack(a), *states)


def _fits(c: ml_collections.ConfigDict, name: str, stream: Any) -> bool:
    """Whether the config's estimator takes a narrow model ``name`` with the config's
    other settings."""
    if model_registry.unread_fields(name, {k: c[k] for k in model_registry.model_fields()}):
        return False
    probe = ml_collections.ConfigDict({**c.to_dict(), "model": name, "hidden_size": 2})
    model = build_model(probe, stream.vocab_size)
    x, y = (jnp.asarray(a) for a in stream.example())
    try:
        estimator = registry.build_estimator(
            c.algorithm, model.apply, tasks.TASKS[c.task].loss, structure=None,
            example_x=x, example_y=y, **hyperparameters_of(c),
        )  # fmt: skip
        estimator.init_state(*model.init(jax.random.key(0), x))
    except checks.ConfigError:
        return False
    return True


def misfit(c: ml_collections.ConfigDict, err: Exception, stream: Any) -> RunError:
    """The error for an estimator that refuses the config's model: the estimator's reason
    (its first sentence) and the models of the table it takes with these settings."""
    reason = str(err).split(". ")[0].rstrip(".").replace("{", "{{").replace("}", "}}")
    fits = [name for name in model_registry.MODELS if _fits(c, name, stream)]
    if fits:
        tail = "; it takes " + " or ".join("{}" for _ in fits) + " with these settings"
    else:
        tail = "; no model takes it with these settings"
    return RunError(
        "{} does not fit {}: " + reason + tail,
        Setting("algorithm", c.algorithm),
        Setting("model", c.model),
        *(Setting("model", name) for name in fits),
    )


def one_stream_model(exp: Experiment, ts: TrainState) -> tuple[Any, Any]:
    """The params and model state of the run's first seed and first stream."""
    params, state = ts.params, ts.carry.state
    if exp.config.num_seeds > 1:
        params, state = first(params), first(state)
    if exp.config.num_streams > 1:  # per-stream carries and shared systems both stack
        state = first(state)
    return params, state
