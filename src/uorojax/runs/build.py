"""What a config builds: the task streams, model, estimator, optimizer and trainer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from uorojax import checks, models, tasks
from uorojax.estimators import registry
from uorojax.models.lru_stack import lru_stack
from uorojax.models.structure.types import Structure
from uorojax.runs.config import (
    ChunkPlan,
    _whole_windows,
    hyperparameters_of,
    plan_chunks,
    validate_config,
)
from uorojax.training.sharding import (
    process_streams,
)
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
      cross_entropy: the loss is a cross-entropy (metrics in bits per character).
      best_bits_per_char: the task's entropy rate, where known.
      apply_fn, loss_fn, structure: the single-stream model the estimator is built on
        (for the gradient-quality measurements and diagnostics on a trained run).
      held_out: ``seed -> stream``: one stream of the task, for quality measurements.
      plan: the chunk plan (:func:`plan_chunks`).
    """

    config: ml_collections.ConfigDict
    streams: list
    trainer: Trainer
    init_model: Callable[[int], tuple[Any, Any]]
    cross_entropy: bool
    best_bits_per_char: float | None
    apply_fn: Callable
    loss_fn: Callable
    structure: Structure | None
    held_out: Callable[[int], Any]
    plan: ChunkPlan


def build_model(c: ml_collections.ConfigDict, vocab: int) -> models.Model:
    """The model a config names, reading tokens over ``vocab`` symbols and predicting
    the next one."""
    if c.model == "lru_stack":
        d_model = c.model_dim or c.hidden_size
        return lru_stack(c.num_layers, d_model, c.hidden_size, vocab, vocab_size=vocab)
    if c.model == "leaky_rnn":  # one layer
        return models.leaky_rnn(c.hidden_size, vocab, vocab, tau=c.tau, vocab_size=vocab)
    return models.linen_model(
        c.model,
        c.hidden_size,
        vocab,
        num_layers=c.num_layers,
        vocab_size=vocab,
        embed_dim=c.embed_dim or None,
        init=c.init,
    )


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Builds the streams, model, estimator, optimizer and trainer a config names.

    Raises:
      ConfigError: for a bad field (:func:`validate_config`), a hyperparameter the
        estimator's constructor refuses, ``steps`` that are not whole windows, or a
        config several processes cannot split (:func:`check_processes`).
    """
    c = validate_config(config)
    check_processes(c)
    num_streams = None if c.num_streams == 1 else c.num_streams
    mine = process_streams(c.num_streams)  # this process's streams (all, on one process)
    local_streams = None if num_streams is None else len(mine)
    seeds = [c.seed + i for i in range(c.num_seeds)]
    task = tasks.TASKS[c.task]
    structure = None
    if c.task == "influence_balancing":
        problem = task(**dict(c.task_args), num_streams=num_streams)
        streams = [task(**dict(c.task_args), num_streams=local_streams).stream for _ in seeds]
        held_out = lambda seed: task(**dict(c.task_args)).stream  # noqa: E731
        apply_fn, loss_fn = problem.model.apply, problem.loss_fn
        init_single = lambda seed: (problem.params, problem.state0)  # noqa: E731
        cross_entropy, best = False, None
        param_metrics = {"theta": lambda p: p["theta"]}
    else:
        make = lambda seed, n=None, first=0: tasks.make_stream(
            c.task, seed=seed, num_streams=n, first_stream=first, **c.task_args
        )  # noqa: E731
        streams = [make(s, local_streams, mine.start) for s in seeds]
        held_out = make
        vocab = streams[0].vocab_size
        model = build_model(c, vocab)
        apply_fn, loss_fn, structure = model.apply, models.softmax_cross_entropy, model.structure
        init_single = lambda seed: model.init(jax.random.key(seed), jnp.zeros((), jnp.int32))  # noqa: E731
        cross_entropy, best = True, streams[0].best_bits_per_char
        param_metrics = {}

    def init_model(seed):
        params, state0 = init_single(seed)
        if local_streams is not None:
            state0 = repeat_streams(state0, local_streams)
        return params, state0

    example = streams[0].example()
    example_x, example_y = (jnp.asarray(a if num_streams is None else a[0]) for a in example)
    batching = {"num_streams": num_streams, "batch_mode": c.batch_mode}
    estimator = registry.build_estimator(
        c.algorithm,
        apply_fn,
        loss_fn,
        structure=structure,
        example_x=example_x,
        example_y=example_y,
        **batching,
        **hyperparameters_of(c),
    )
    window = estimator.window
    _whole_windows("steps", c.steps, window, c.algorithm)
    shadow = None
    if c.shadow_rtrl:
        shadow = registry.build_estimator("rtrl", apply_fn, loss_fn, **batching)
    if c.schedule == "paper":
        lr = paper_schedule(c.learning_rate, c.schedule_alpha, steps_per_update=window)
    else:
        lr = c.learning_rate
    opt = optax.adam(lr) if c.optimizer == "adam" else optax.sgd(lr)
    if c.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(c.clip_norm), opt)
    trainer = make_trainer(
        estimator,
        opt,
        nonfinite=c.nonfinite,
        cross_entropy=cross_entropy,
        shadow=shadow,
        param_metrics=param_metrics,
        target_metrics=getattr(streams[0], "target_metrics", None),
        donate=True,  # the runner keeps only the returned train state
    )
    return Experiment(
        c,
        streams,
        trainer,
        init_model,
        cross_entropy,
        best,
        apply_fn,
        loss_fn,
        structure,
        held_out,
        plan_chunks(c, window),
    )


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
        raise checks.ConfigError(
            f"num_seeds ({c.num_seeds}) > 1 runs on one process; on {count} processes run "
            "each seed as its own run (num_seeds=1, one workdir per seed)"
        )
    if not c.shard_streams:
        raise checks.ConfigError(
            f"shard_streams=False keeps the streams on one device, but a run of {count} "
            "processes splits them over the processes; set shard_streams=True"
        )
    if c.num_streams % count:
        raise checks.ConfigError(
            f"num_streams ({c.num_streams}) must be a multiple of the number of processes "
            f"({count}): each process feeds num_streams / {count} streams"
        )


def initial_train_state(exp: Experiment) -> TrainState:
    """The train state at step 0: one run, or the seeds' runs stacked on a leading axis.
    On several processes, this process's part (its streams' carry)."""
    c = exp.config
    states = []
    for i in range(c.num_seeds):
        params, state0 = exp.init_model(c.seed + i)
        states.append(exp.trainer.init(params, state0, jax.random.key(c.seed + i)))
    if c.num_seeds == 1:
        return states[0]
    return jax.tree.map(lambda *a: jnp.stack(a), *states)


def one_stream_model(exp: Experiment, ts: TrainState) -> tuple[Any, Any]:
    """The params and model state of the run's first seed and first stream."""
    params, state = ts.params, ts.carry.state
    if exp.config.num_seeds > 1:
        params, state = first(params), first(state)
    if exp.config.num_streams > 1:  # per-stream carries and shared systems both stack
        state = first(state)
    return params, state
