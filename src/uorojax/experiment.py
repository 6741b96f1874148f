"""Running an online experiment in a work directory: build, train, log, checkpoint, resume.

``run(config, workdir)`` builds the task streams, model, estimator and optimizer named by
an ``ml_collections`` config (see :func:`default_config` for every field; the names go
through :mod:`uorojax.registry`), then trains online in compiled chunks. With
``num_seeds > 1`` the seeds ``seed, seed + 1, ...`` train together in one compiled
program (``jax.vmap`` over the runs). In ``workdir`` it writes:

* ``metrics.csv``: one row every ``log_every`` steps (means over those steps), with the
  UORO authors' two running metrics at the row's step: the *cumulative* loss (the mean
  since the start) and the *recent* loss ``r ← r(1 − 1/√t) + L_t/√t`` (t counts steps
  from 1), in bits per character for character tasks. With several seeds, a row per
  seed (column ``seed``). A run that stops between log points ends with a partial row,
  which a resumed run replaces. A task may add its own columns (the copy task: the loss
  and accuracy on its recall steps, and its curriculum's length).
* ``quality.csv`` (with ``quality_every``): the gradient quality of estimators against
  the exact online gradient (:func:`uorojax.diagnostics.gradient_statistics`) on a
  held-out segment of the task, at step 0 and every ``quality_every`` steps, with the
  run's params and state (its first seed and stream) at that step.
* ``tb/``: the same scalars as TensorBoard event files (tensorboardX, no TensorFlow).
* ``checkpoints/``: orbax checkpoints every ``checkpoint_every`` steps and at the end,
  the last ``keep_checkpoints`` kept: params, optimizer state, estimator carry,
  PRNG key, step count, the streams' positions and the metrics' running state
  (:mod:`uorojax.checkpoints`). A run killed mid-write resumes from the previous
  complete one.
* ``summary.json`` (final metrics, config, versions, wall time) and ``metrics.png``.

Rerunning the same command on the same workdir resumes from the latest checkpoint; with a
larger ``steps`` it continues the same run. A resumed run ends with exactly the same
params and metrics as an uninterrupted one, whatever the step counts. A workdir holding a
different config is refused unless ``overwrite=True``.

On several processes (after :func:`uorojax.distributed.initialize`; docs/distributed.md)
every process runs ``run`` with the same config and workdir, which must be on a
filesystem all of them see. Process ``p`` of ``P`` feeds streams ``[p·B/P, (p+1)·B/P)``
(seeded as on one process), the train state spans every process's devices, the gradients
are averaged over all streams, and the run logs the same numbers as on one process.
Process 0 writes the files above; every process writes its part of the checkpoints
(orbax's multi-process mode), whose host-side state holds every process's streams.

This module needs the ``run`` extra (ml_collections, orbax, tensorboardX, tqdm,
matplotlib); ``import uorojax`` does not load it.
"""

from __future__ import annotations

import dataclasses
import json
import logging as pylogging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from uorojax import checks, diagnostics, distributed, models, registry, tasks
from uorojax.checkpoints import checkpoint_manager, restore_checkpoint, save_checkpoint
from uorojax.lru import lru_stack
from uorojax.metric_log import MetricLogger, read_rows, write_rows
from uorojax.sharding import (
    carry_stream_axes,
    process_streams,
    shard_chunk,
    shard_train_state,
    stream_mesh,
)
from uorojax.structure import Structure
from uorojax.trainer import (
    Trainer,
    TrainState,
    make_trainer,
    own_buffers,
    paper_schedule,
    raise_if_halted,
)
from uorojax.tree import first, repeat_streams

# Fields that may change between invocations on one workdir without changing the run.
_RUNTIME_FIELDS = ("steps", "quiet")


def default_config() -> ml_collections.ConfigDict:
    """Every config field, with its default. Config files override a subset."""
    c = ml_collections.ConfigDict()
    # Task.
    c.task = "anbn"  # a key of uorojax.registry.TASKS
    c.task_args = ml_collections.ConfigDict()  # e.g. {"k": 1, "l": 32}
    # Estimator: a key of uorojax.registry.ESTIMATORS, and the hyperparameters its
    # constructor declares (every registered one's, with its default; see
    # uorojax.registry.hyperparameters): truncation, eps, num_samples, ...
    c.algorithm = "uoro"
    for name, default in registry.hyperparameter_defaults().items():
        c[name] = default
    # Model (ignored by influence_balancing).
    c.model = "gru"  # a key of uorojax.models.LINEN_CELLS, "lru_stack" or "leaky_rnn"
    c.hidden_size = 64  # units per layer (for the LRU, complex state units)
    c.num_layers = 1
    c.model_dim = 0  # lru_stack's d_model (0: hidden_size)
    c.tau = 1.0  # leaky_rnn's time constant in steps (1: a tanh RNN)
    c.embed_dim = 0  # 0: one-hot input
    c.init = "flax"  # flax | torch7 (the UORO authors' convention)
    # Optimisation.
    c.optimizer = "adam"  # adam | sgd
    c.learning_rate = 1e-3
    c.schedule = "paper"  # constant | paper (gamma / (1 + alpha sqrt(t)))
    c.schedule_alpha = 1.5e-2
    c.clip_norm = 0.0  # 0: no clipping
    # Run.
    c.steps = 10_000
    c.seed = 0
    c.num_seeds = 1  # seeds seed .. seed + num_seeds - 1, trained together
    c.num_streams = 1
    c.batch_mode = "per_stream"  # per_stream | shared
    c.chunk = 1000  # steps per compiled chunk (the last one of a run may be shorter)
    c.log_every = 100
    c.checkpoint_every = 10_000
    c.keep_checkpoints = 3
    c.nonfinite = "raise"  # raise | skip
    c.shadow_rtrl = False  # log the cosine with exact RTRL (small models)
    c.shard_streams = True  # split streams over all local devices when there are several
    # Gradient quality (quality.csv): at step 0 and every quality_every steps (0: never),
    # each estimator of quality_estimators ("algorithm" or "algorithm:name=value,...";
    # () is the run's own) against the exact online gradient, over quality_segment steps
    # of a held-out stream (seed quality_seed), quality_keys independent runs.
    c.quality_every = 0
    c.quality_estimators = ()
    c.quality_segment = 48
    c.quality_keys = 256
    c.quality_seed = 1000
    c.quiet = False
    return c


def config_from_file(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The config of a config file (its ``get_config()``) with ``overrides`` applied.

    Example::

      c = experiment.config_from_file("configs/anbn.py", {"algorithm": "tbptt", "truncation": 16})
    """
    import importlib.util

    if not os.path.isfile(path):
        raise checks.ConfigError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location("_uorojax_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for name, value in (overrides or {}).items():
        config[name] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return config


def _merge_with_defaults(config) -> ml_collections.ConfigDict:
    """The config on top of the defaults, each field's name and type checked."""
    defaults = default_config()
    merged = default_config()
    for name, value in config.items():
        checks.known_config_field(name, list(defaults.keys()))
        expected = defaults[name]
        if isinstance(expected, ml_collections.ConfigDict):
            merged[name] = ml_collections.ConfigDict(dict(value))
            continue
        if isinstance(expected, bool) != isinstance(value, bool) or (
            isinstance(expected, (int, float, str))
            and not isinstance(value, type(expected))
            and not (isinstance(expected, float) and isinstance(value, int))
        ):
            raise checks.ConfigError(
                f"config field {name!r} must be {type(expected).__name__}, got {value!r}"
            )
        merged[name] = float(value) if isinstance(expected, float) else value
    return merged


def _whole_windows(name: str, value: int, window: int, algorithm: str) -> None:
    if value % window:
        lower = value // window * window
        options = f"{lower} or {lower + window}" if lower else f"{window}"
        raise checks.ConfigError(
            f"{name} ({value}) must be a whole number of {algorithm} windows (truncation "
            f"{window}): use {options}"
        )


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks names, types and ranges of every field but the estimator's hyperparameters,
    which its constructor checks (:func:`build`); returns the config with defaults.

    Raises:
      ConfigError: naming the field, with a suggestion for a mistyped name or the
        nearest valid value.
    """
    c = _merge_with_defaults(config)
    checks.one_of("task", c.task, tuple(registry.TASKS))
    checks.one_of("algorithm", c.algorithm, tuple(registry.ESTIMATORS))
    checks.one_of("model", c.model, (*models.LINEN_CELLS, "lru_stack", "leaky_rnn"))
    checks.one_of("init", c.init, models.INITS)
    checks.one_of("optimizer", c.optimizer, ("adam", "sgd"))
    checks.one_of("schedule", c.schedule, ("constant", "paper"))
    checks.one_of("batch_mode", c.batch_mode, ("per_stream", "shared"))
    checks.one_of("nonfinite", c.nonfinite, ("raise", "skip"))
    for name in ("hidden_size", "num_layers", "steps", "num_streams", "num_seeds", "chunk"):
        checks.positive_int(name, c[name])
    for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
        checks.positive_int(name, c[name])
    for name in ("quality_segment", "quality_keys"):
        checks.positive_int(name, c[name])
    for name in ("learning_rate", "schedule_alpha", "clip_norm"):
        checks.non_negative_float(name, c[name])
    if c.model in ("lru_stack", "leaky_rnn") and (c.embed_dim or c.init != "flax"):
        raise checks.ConfigError(
            f"{c.model} has its own encoder and init: set embed_dim=0, init='flax'"
        )
    if c.model == "leaky_rnn" and c.num_layers != 1:
        raise checks.ConfigError(f"leaky_rnn has one layer, got num_layers={c.num_layers}")
    for name in ("embed_dim", "quality_every", "model_dim"):
        if c[name] < 0:
            raise checks.ConfigError(f"{name} must be >= 0, got {c[name]}")
    for spec in c.quality_estimators:
        registry.parse_method(spec)
    if c.num_seeds > 1 and c.shadow_rtrl:
        raise checks.ConfigError("shadow_rtrl runs with one seed (num_seeds=1)")
    return c


def hyperparameters_of(c: ml_collections.ConfigDict) -> dict:
    """The config's values of every registered hyperparameter (the registry refuses the
    ones its algorithm does not take, unless they are at their defaults)."""
    return {name: c[name] for name in registry.hyperparameter_defaults()}


class ChunkPlan(NamedTuple):
    """How the runner cuts a run into compiled chunks (internal, not the user's concern).

    Attributes:
      chunk: longest chunk, a whole number of windows.
      checkpoint_every: steps between checkpoints, a whole number of windows.
      quality_every: steps between gradient-quality measurements (0: none).
      notices: one line per value that had to move to a window boundary.
    """

    chunk: int
    checkpoint_every: int
    quality_every: int
    notices: tuple[str, ...]


def plan_chunks(c: ml_collections.ConfigDict, window: int) -> ChunkPlan:
    """Chunk length, checkpoint and quality spacing, moved to whole windows where needed
    (``window``: the estimator's)."""
    notices = []

    def to_windows(name, value):
        if value % window == 0:
            return value
        moved = max(window, round(value / window) * window)
        notices.append(
            f"notice: {name} {value} moved to {moved}, the nearest whole number of "
            f"{c.algorithm} windows (truncation {window})"
        )
        return moved

    return ChunkPlan(
        to_windows("chunk", c.chunk),
        to_windows("checkpoint_every", c.checkpoint_every),
        to_windows("quality_every", c.quality_every) if c.quality_every else 0,
        tuple(notices),
    )


# ----------------------------------------------------------------------------- build


class Experiment(NamedTuple):
    """What :func:`build` makes from a config.

    Attributes:
      config: the validated config.
      streams: one task stream per seed (on several processes, the streams this process
        feeds: :func:`uorojax.sharding.process_streams`).
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
    task = registry.TASKS[c.task]
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


# ----------------------------------------------------------------------------- quality


def quality_specs(c: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The estimators whose gradient quality a run measures: ``quality_estimators``, or
    the run's own algorithm with its hyperparameters."""
    if c.quality_estimators:
        return tuple(c.quality_estimators)
    own = [f"{h.name}={c[h.name]}" for h in registry.hyperparameters(c.algorithm)]
    return (f"{c.algorithm}:{','.join(own)}" if own else c.algorithm,)


def measure_quality(exp: Experiment, ts: TrainState, step: int) -> list[dict]:
    """One row per estimator of :func:`quality_specs`: its gradient statistics against
    the exact online gradient over a held-out segment, with the run's params and state
    at ``step`` (:func:`uorojax.diagnostics.summarise`). An estimator the model does not
    fit (KF-RTRL on a gated cell) is left out."""
    c = exp.config
    params, state = distributed.to_host(one_stream_model(exp, ts))
    xs, ys = (jnp.asarray(a) for a in exp.held_out(c.quality_seed).next_chunk(c.quality_segment))
    key = jax.random.fold_in(jax.random.key(c.quality_seed), step)
    rows = []
    for spec in quality_specs(c):
        algorithm, values = registry.parse_method(spec)
        estimator = registry.build_estimator(
            algorithm, exp.apply_fn, exp.loss_fn, structure=exp.structure,
            example_x=xs[0], example_y=ys[0], **values,
        )  # fmt: skip
        try:
            estimator.init_state(params, state)
        except checks.ConfigError:
            continue
        stats = diagnostics.gradient_statistics(
            estimator, exp.apply_fn, exp.loss_fn, params, state, xs, ys, key,
            num_keys=c.quality_keys,
        )  # fmt: skip
        rows.append({"step": step, "estimator": spec, **diagnostics.summarise(stats, estimator)})
    return rows


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass
class Job:
    """A run in progress: what :func:`run`'s stages share.

    ``done`` counts stream steps; ``rows`` and ``quality_rows`` are the complete rows of
    ``metrics.csv`` and ``quality.csv``.
    """

    exp: Experiment
    workdir: str
    ts: TrainState
    done: int
    started_at: int
    logger: MetricLogger
    rows: list
    quality_rows: list
    manager: Any
    advance: Callable
    place_chunk: Callable
    writer: Any = None
    bar: Any = None
    wall: float = 0.0

    def close(self) -> None:
        for closeable in (self.bar, self.writer, self.manager):
            if closeable is not None:
                closeable.close()


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
    """Runs (or resumes) the online experiment a config describes in ``workdir``.

    Args:
      config: an ``ml_collections.ConfigDict`` with fields of :func:`default_config`.
      workdir: output directory; created if needed.
      overwrite: replace a workdir that holds a run with a different config.

    Returns:
      The summary written to ``workdir/summary.json``.
    """
    job = start(config, workdir, overwrite)
    try:
        train(job)
    finally:
        job.close()
    return finish(job)


def start(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> Job:
    """Builds the run, prepares ``workdir``, restores its latest checkpoint (or starts at
    step 0), places the train state on the devices and opens the logs."""
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    pylogging.getLogger("tensorboardX.x2num").setLevel(pylogging.ERROR)  # a NaN loss, once per row
    given = json.loads(ml_collections.ConfigDict(config).to_json())
    distributed.check_same_config({**given, "overwrite": overwrite})
    exp = build(config)
    c = exp.config
    _prepare_workdir(workdir, c, overwrite)
    writer = distributed.is_writer()
    for notice in exp.plan.notices:
        if not c.quiet and writer:
            print(notice, file=sys.stderr)
    ts, advance, place_chunk = _placed(exp, initial_train_state(exp))
    streams = exp.streams[0]
    logger = MetricLogger(
        c.log_every,
        c.num_seeds,
        exp.cross_entropy,
        applied_only=tuple(getattr(streams, "target_metrics", None) or ()),
        ratios=getattr(streams, "ratio_metrics", None),
    )
    manager = checkpoint_manager(workdir, c.keep_checkpoints)
    rows, quality_rows = [], []
    restored = restore_checkpoint(manager, ts)  # into the placed state's shardings
    if restored is not None:
        ts, meta = restored
        for stream, state in zip(exp.streams, _own_stream_states(meta, workdir)):
            stream.set_state(state)
        logger.restore(meta["logger"])
        rows = read_rows(os.path.join(workdir, "metrics.csv"), meta["metric_rows"])
        quality_rows = read_rows(os.path.join(workdir, "quality.csv"), meta.get("quality_rows", 0))
    done = int(np.ravel(ts.step)[0])
    job = Job(
        exp, workdir, ts, done, done, logger, rows, quality_rows, manager, advance, place_chunk
    )
    from tensorboardX import SummaryWriter
    from tqdm.auto import tqdm

    if writer:  # process 0 writes the logs
        job.writer = SummaryWriter(os.path.join(workdir, "tb"), purge_step=done)
    chars_per_step = c.num_streams * c.num_seeds
    job.bar = tqdm(
        total=c.steps * chars_per_step,
        initial=done * chars_per_step,
        disable=c.quiet or not writer,
        unit="char",
        unit_scale=True,
        dynamic_ncols=True,
        desc=f"{c.task}/{c.algorithm}",
    )
    job.wall = time.time()
    return job


def _own_stream_states(meta: dict, workdir: str) -> list:
    """This process's streams' states (one per seed) in a checkpoint's host-side state."""
    by_process = meta.get("streams_by_process") or [meta["streams"]]
    if len(by_process) != jax.process_count():
        raise checks.ConfigError(
            f"the checkpoints in {workdir!r} were written by {len(by_process)} process(es); "
            f"resume the run with {len(by_process)}, not {jax.process_count()}"
        )
    return by_process[jax.process_index()]


def _placed(exp: Experiment, ts: TrainState):
    """The train state on its devices, the compiled chunk step and the chunk placement:
    streams split over the devices when there are several (one seed; on several
    processes, over all of theirs), the seeds' runs vmapped together when there are
    several."""
    c = exp.config
    place_chunk = lambda tree: tree  # noqa: E731
    if c.num_seeds == 1 and c.shard_streams and c.num_streams > 1 and jax.device_count() > 1:
        if c.num_streams % jax.device_count():
            raise checks.ConfigError(
                f"num_streams ({c.num_streams}) must be a multiple of the device count "
                f"({jax.device_count()}) to shard streams; or set shard_streams=False"
            )
        mesh = stream_mesh()
        params, states0 = exp.init_model(c.seed)
        ts = shard_train_state(ts, mesh, carry_stream_axes(exp.trainer.estimator, params, states0))
        place_chunk = lambda tree: shard_chunk(tree, mesh)  # noqa: E731
    run_chunk = exp.trainer.run_chunk
    if c.num_seeds > 1:
        run_chunk = jax.jit(jax.vmap(run_chunk), donate_argnums=0)
    return ts, lambda ts, xs, ys: run_chunk(own_buffers(ts), xs, ys), place_chunk


def train(job: Job) -> None:
    """The chunk loop: the next chunk of every stream, one compiled call, its rows
    logged, the task's curriculum advanced, and at their steps a quality measurement
    and a checkpoint."""
    c, plan = job.exp.config, job.exp.plan
    if plan.quality_every and job.done == 0 and not job.quality_rows:
        _add_quality(job)
    while job.done < c.steps:
        length = min(plan.chunk, c.steps - job.done, *_to_next(job.done, plan))
        xs, ys = _next_chunk(job.exp.streams, length, c.num_seeds)
        job.ts, metrics = job.advance(job.ts, job.place_chunk(xs), job.place_chunk(ys))
        metrics = distributed.to_host(metrics)
        if c.nonfinite == "raise":
            raise_if_halted(job.ts)
        metrics = _with_task_metrics(job.exp.streams, metrics, c.num_seeds)
        new_rows = job.logger.add(metrics, job.done)
        job.done += length
        _log(job, new_rows, length)
        if plan.quality_every and job.done % plan.quality_every == 0:
            _add_quality(job)
        if job.done % plan.checkpoint_every == 0 or job.done >= c.steps:
            _checkpoint(job)


def _to_next(done: int, plan: ChunkPlan) -> list[int]:
    """Steps to the next checkpoint and the next quality measurement."""
    marks = [plan.checkpoint_every] + ([plan.quality_every] if plan.quality_every else [])
    return [(done // m + 1) * m - done for m in marks]


def _next_chunk(streams, length: int, num_seeds: int):
    chunks = [s.next_chunk(length) for s in streams]
    xs = np.stack([x for x, _ in chunks]) if num_seeds > 1 else chunks[0][0]
    ys = np.stack([y for _, y in chunks]) if num_seeds > 1 else chunks[0][1]
    return jnp.asarray(xs), jnp.asarray(ys)


def _with_task_metrics(streams, metrics: dict, num_seeds: int) -> dict:
    """A task with a curriculum sees the chunk's metrics and may move to a harder
    setting; its ``curriculum_metrics`` (the copy task's length) join the chunk's."""
    if not hasattr(streams[0], "curriculum_metrics"):
        return metrics
    metrics = dict(metrics)
    per_seed = [jax.tree.map(lambda m, s=s: m[s], metrics) for s in range(num_seeds)]
    extra = [
        stream.curriculum_metrics(m)
        for stream, m in zip(streams, per_seed if num_seeds > 1 else [metrics])
    ]
    for name in extra[0]:
        values = np.stack([e[name] for e in extra]) if num_seeds > 1 else extra[0][name]
        metrics[name] = values
    return metrics


def _log(job: Job, new_rows: list[dict], length: int) -> None:
    """New rows into metrics.csv (rewritten with the partial row of the current log
    interval), TensorBoard and the progress bar."""
    c = job.exp.config
    job.rows.extend(new_rows)
    if job.writer is None:  # not process 0: nothing to write
        return
    for row in new_rows:
        suffix = f"/seed{row['seed']}" if "seed" in row else ""
        for name, value in row.items():
            if name not in ("step", "seed"):
                job.writer.add_scalar(name + suffix, float(value), row["step"])
    done = job.done
    write_rows(os.path.join(job.workdir, "metrics.csv"), job.rows + job.logger.partial_rows(done))
    job.bar.update(length * c.num_streams * c.num_seeds)
    postfix = (
        f"step {done:,}/{c.steps:,} recent {job.logger.unit} {np.median(job.logger.recent):.3f}"
    )
    if hasattr(job.exp.streams[0], "length"):
        postfix += f" length {job.exp.streams[0].length}"
    job.bar.set_postfix_str(postfix)


def _add_quality(job: Job) -> None:
    rows = measure_quality(job.exp, job.ts, job.done)
    job.quality_rows.extend(rows)
    if job.writer is None:
        return
    write_rows(os.path.join(job.workdir, "quality.csv"), job.quality_rows)
    for row in rows:
        for name in ("mean_cosine", "relative_variance"):
            job.writer.add_scalar(f"quality/{row['estimator']}/{name}", float(row[name]), job.done)


def _checkpoint(job: Job) -> None:
    """A checkpoint of the train state (every process writes its part) and the run's
    host-side state, which holds every process's streams (``streams_by_process``, one
    entry per process, on several processes)."""
    streams = [s.get_state() for s in job.exp.streams]
    meta = {
        "metric_rows": len(job.rows),
        "quality_rows": len(job.quality_rows),
        "logger": job.logger.state(),
        "step": job.done,
    }
    if jax.process_count() > 1:
        meta["streams_by_process"] = distributed.allgather_json(streams)
    else:
        meta["streams"] = streams
    save_checkpoint(job.manager, job.ts, job.done, meta)


def finish(job: Job) -> dict:
    """Writes ``summary.json`` and ``metrics.png`` (process 0); returns the summary."""
    elapsed = time.time() - job.wall
    all_rows = job.rows + job.logger.partial_rows(job.done)
    summary = _summarise(
        job.exp.config, job.exp, job.ts, all_rows, elapsed, job.done - job.started_at
    )
    if not distributed.is_writer():
        return summary
    with open(os.path.join(job.workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    from uorojax import plots

    plots.plot_workdir(job.workdir)
    return summary


# ----------------------------------------------------------------------------- workdir


def _config_for_compare(c: ml_collections.ConfigDict) -> dict:
    d = json.loads(c.to_json())
    for name in _RUNTIME_FIELDS:
        d.pop(name, None)
    return d


def _prepare_workdir(workdir: str, c: ml_collections.ConfigDict, overwrite: bool) -> None:
    """Refuses a workdir of another config (every process reads it), then process 0
    replaces or creates it; every process then checks that it sees process 0's files."""
    path = os.path.join(workdir, "config.json")
    replace = False
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        new = _config_for_compare(c)
        if old != new:
            if not overwrite:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise checks.ConfigError(
                    f"workdir {workdir!r} holds a run with a different config (fields "
                    f"{diff} differ); use another workdir or overwrite=True (--overwrite)"
                )
            replace = True
    distributed.barrier("uorojax: workdir read")
    if distributed.is_writer():
        if replace:
            shutil.rmtree(workdir)
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(_config_for_compare(c), f, indent=2, sort_keys=True)
    if jax.process_count() > 1:
        distributed.barrier("uorojax: workdir written")
        missing = [
            i for i, seen in enumerate(distributed.allgather_json(os.path.isfile(path))) if not seen
        ]
        if missing:
            raise checks.ConfigError(
                f"process(es) {missing} do not see {path!r}, which process 0 wrote: the "
                "workdir must be on a filesystem that every process shares"
            )


def load_train_state(workdir: str) -> tuple[TrainState, Experiment]:
    """The train state of a workdir's latest checkpoint, and the experiment it belongs to.

    For notebooks and analysis: ``ts.params`` are the trained params, ``ts.carry`` the
    estimator carry (for UORO, the tangent pair); with several seeds, every leaf has a
    leading seed axis.
    """
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    exp = build(config)
    manager = checkpoint_manager(workdir, exp.config.keep_checkpoints)
    try:
        restored = restore_checkpoint(manager, initial_train_state(exp))
    finally:
        manager.close()
    if restored is None:
        raise FileNotFoundError(f"no complete checkpoint in {workdir}/checkpoints")
    return restored[0], exp


def versions() -> dict:
    """Python, platform, JAX, flax and optax versions, the backend and its devices."""
    import flax

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
    }


def _final_metrics(rows: list[dict]) -> dict:
    """Means over the last 10 % of rows (at least one) of every metric."""
    tail = rows[-max(1, len(rows) // 10) :]
    return {
        k: float(np.mean([float(r[k]) for r in tail])) for k in tail[0] if k not in ("step", "seed")
    }


def _summarise(c, exp: Experiment, ts, rows: list[dict], elapsed: float, steps_run: int):
    seeds = sorted({int(r.get("seed", 0)) for r in rows})
    per_seed = [_final_metrics([r for r in rows if int(r.get("seed", 0)) == s]) for s in seeds]
    final = (
        per_seed[0]
        if len(per_seed) == 1
        else {k: float(np.median([m[k] for m in per_seed])) for k in per_seed[0]}
    )
    last = {
        k: [float(r[k]) for r in rows if r["step"] == rows[-1]["step"]]
        for k in rows[-1]
        if k.startswith(("cumulative_", "recent_"))
    }
    summary = {
        "final_metrics_last_10pct": final,
        "final_running_metrics": {k: v[0] if len(v) == 1 else v for k, v in last.items()},
        "steps": int(np.ravel(ts.step)[0]),
        "num_skipped": np.asarray(ts.num_skipped).tolist(),
        "params_finite": all(
            bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(distributed.to_host(ts.params))
        ),
        "best_bits_per_char": exp.best_bits_per_char,
        "wall_time_s": elapsed,
        "steps_per_s_this_invocation": steps_run / elapsed if elapsed > 0 else math.nan,
        "config": json.loads(c.to_json()),
        "versions": versions(),
    }
    if len(per_seed) > 1:
        summary["per_seed"] = per_seed
    if "theta" in ts.params:
        summary["final_theta"] = np.asarray(ts.params["theta"], np.float64).tolist()
    return summary
