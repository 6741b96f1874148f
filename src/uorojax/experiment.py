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
  which a resumed run replaces.
* ``tb/``: the same scalars as TensorBoard event files (tensorboardX, no TensorFlow).
* ``checkpoints/``: orbax checkpoints every ``checkpoint_every`` steps and at the end,
  the last ``keep_checkpoints`` kept: params, optimizer state, estimator carry,
  PRNG key, step count, the streams' positions and the metrics' running state. Orbax
  writes each to a temporary directory and renames it when complete, so a run killed
  mid-write resumes from the previous complete one.
* ``summary.json`` (final metrics, config, versions, wall time) and ``metrics.png``.

Rerunning the same command on the same workdir resumes from the latest checkpoint; with a
larger ``steps`` it continues the same run. A resumed run ends with exactly the same
params and metrics as an uninterrupted one, whatever the step counts. A workdir holding a
different config is refused unless ``overwrite=True``.

This module needs the ``run`` extra (ml_collections, orbax, tensorboardX, tqdm,
matplotlib); ``import uorojax`` does not load it.
"""

from __future__ import annotations

import csv
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

from uorojax import checks, models, registry, tasks
from uorojax.sharding import carry_stream_axes, shard_chunk, shard_train_state, stream_mesh
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
    # Estimator.
    c.algorithm = "uoro"  # a key of uorojax.registry.ESTIMATORS
    c.truncation = 1  # window of TBPTT and truncated UORO
    c.num_samples = 1  # UORO tangent pairs
    c.rank = 1  # OK's Kronecker terms
    c.eps = 1e-7  # UORO / KF-RTRL stabiliser (the UORO authors' code: 1e-5)
    # Model (ignored by influence_balancing).
    c.model = "gru"  # a key of uorojax.models.LINEN_CELLS
    c.hidden_size = 64
    c.num_layers = 1
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


def window_of(c: ml_collections.ConfigDict) -> int:
    """Steps between updates for the config's estimator (its truncation, or 1)."""
    uses_truncation = "truncation" in registry.ESTIMATORS[c.algorithm].uses
    return c.truncation if uses_truncation else 1


def _whole_windows(name: str, value: int, window: int, algorithm: str) -> None:
    if value % window:
        lower = value // window * window
        options = f"{lower} or {lower + window}" if lower else f"{window}"
        raise checks.ConfigError(
            f"{name} ({value}) must be a whole number of {algorithm} windows (truncation "
            f"{window}): use {options}"
        )


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks names, types and ranges of every field; returns the config with defaults.

    Raises:
      ConfigError: naming the field, with a suggestion for a mistyped name or the
        nearest valid value.
    """
    c = _merge_with_defaults(config)
    checks.one_of("task", c.task, tuple(registry.TASKS))
    checks.one_of("algorithm", c.algorithm, tuple(registry.ESTIMATORS))
    checks.one_of("model", c.model, tuple(models.LINEN_CELLS))
    checks.one_of("init", c.init, models.INITS)
    checks.one_of("optimizer", c.optimizer, ("adam", "sgd"))
    checks.one_of("schedule", c.schedule, ("constant", "paper"))
    checks.one_of("batch_mode", c.batch_mode, ("per_stream", "shared"))
    checks.one_of("nonfinite", c.nonfinite, ("raise", "skip"))
    for name in ("truncation", "num_samples", "rank", "hidden_size", "num_layers", "steps"):
        checks.positive_int(name, c[name])
    for name in ("num_streams", "num_seeds", "chunk", "log_every", "checkpoint_every"):
        checks.positive_int(name, c[name])
    checks.positive_int("keep_checkpoints", c.keep_checkpoints)
    for name in ("eps", "learning_rate", "schedule_alpha", "clip_norm"):
        checks.non_negative_float(name, c[name])
    if c.embed_dim < 0:
        raise checks.ConfigError(f"embed_dim must be >= 0, got {c.embed_dim}")
    if c.num_seeds > 1 and c.shadow_rtrl:
        raise checks.ConfigError("shadow_rtrl runs with one seed (num_seeds=1)")
    _whole_windows("steps", c.steps, window_of(c), c.algorithm)
    return c


class ChunkPlan(NamedTuple):
    """How the runner cuts a run into compiled chunks (internal, not the user's concern).

    Attributes:
      chunk: longest chunk, a whole number of windows.
      checkpoint_every: steps between checkpoints, a whole number of windows.
      notices: one line per value that had to move to a window boundary.
    """

    chunk: int
    checkpoint_every: int
    notices: tuple[str, ...]


def plan_chunks(c: ml_collections.ConfigDict) -> ChunkPlan:
    """Chunk length and checkpoint spacing, moved to whole windows where needed."""
    window = window_of(c)
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
        tuple(notices),
    )


# ----------------------------------------------------------------------------- build


class Experiment(NamedTuple):
    """What :func:`build` makes from a config.

    Attributes:
      config: the validated config.
      streams: one task stream per seed.
      trainer: the online trainer.
      init_model: ``seed -> (params, state0)`` (states with a stream axis when
        ``num_streams > 1``).
      cross_entropy: the loss is a cross-entropy (metrics in bits per character).
      best_bits_per_char: the task's entropy rate, where known.
      apply_fn, loss_fn: the single-stream model the estimator is built on (for
        diagnostics on a trained run).
    """

    config: ml_collections.ConfigDict
    streams: list
    trainer: Trainer
    init_model: Callable[[int], tuple[Any, Any]]
    cross_entropy: bool
    best_bits_per_char: float | None
    apply_fn: Callable
    loss_fn: Callable


def _single_stream_example(stream, num_streams):
    example = stream.example()
    return example if num_streams is None else first(example)


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Builds the streams, model, estimator, optimizer and trainer a config names."""
    c = validate_config(config)
    num_streams = None if c.num_streams == 1 else c.num_streams
    seeds = [c.seed + i for i in range(c.num_seeds)]
    task = registry.TASKS[c.task]
    structure = None
    if c.task == "influence_balancing":
        problem = task(**dict(c.task_args), num_streams=num_streams)
        streams = [task(**dict(c.task_args), num_streams=num_streams).stream for _ in seeds]
        apply_fn, loss_fn = problem.model.apply, problem.loss_fn
        init_single = lambda seed: (problem.params, problem.state0)  # noqa: E731
        cross_entropy, best = False, None
        param_metrics = {"theta": lambda p: p["theta"]}
    else:
        streams = [
            tasks.make_stream(c.task, seed=s, num_streams=num_streams, **c.task_args) for s in seeds
        ]
        vocab = streams[0].vocab_size
        model = models.linen_model(
            c.model,
            c.hidden_size,
            vocab,
            num_layers=c.num_layers,
            vocab_size=vocab,
            embed_dim=c.embed_dim or None,
            init=c.init,
        )
        apply_fn, loss_fn, structure = model.apply, models.softmax_cross_entropy, model.structure
        init_single = lambda seed: model.init(jax.random.key(seed), jnp.zeros((), jnp.int32))  # noqa: E731
        cross_entropy, best = True, streams[0].best_bits_per_char
        param_metrics = {}

    def init_model(seed):
        params, state0 = init_single(seed)
        if num_streams is not None:
            state0 = repeat_streams(state0, num_streams)
        return params, state0

    example_x, example_y = (jnp.asarray(a) for a in _single_stream_example(streams[0], num_streams))
    options = registry.Options(
        truncation=c.truncation,
        eps=c.eps,
        num_samples=c.num_samples,
        rank=c.rank,
        structure=structure,
        example_x=example_x,
        example_y=example_y,
    )
    batching = {"num_streams": num_streams, "batch_mode": c.batch_mode}
    estimator = registry.build_estimator(
        c.algorithm, apply_fn, loss_fn, options=options, **batching
    )
    shadow = None
    if c.shadow_rtrl:
        shadow = registry.build_estimator("rtrl", apply_fn, loss_fn, **batching)
    window = estimator.window
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
        donate=True,  # the runner keeps only the returned train state
    )
    return Experiment(c, streams, trainer, init_model, cross_entropy, best, apply_fn, loss_fn)


def initial_train_state(exp: Experiment) -> TrainState:
    """The train state at step 0: one run, or the seeds' runs stacked on a leading axis."""
    c = exp.config
    states = []
    for i in range(c.num_seeds):
        params, state0 = exp.init_model(c.seed + i)
        states.append(exp.trainer.init(params, state0, jax.random.key(c.seed + i)))
    if c.num_seeds == 1:
        return states[0]
    return jax.tree.map(lambda *a: jnp.stack(a), *states)


# ----------------------------------------------------------------------------- metrics


class MetricLogger:
    """Per-step metrics in, logged rows out, for every seed.

    Keeps the steps since the last complete row and the running state of the authors'
    cumulative and recent losses (float64 on the host), and can save and restore both, so
    that a resumed run logs exactly what an uninterrupted one does. Steps the trainer
    skipped (``nonfinite="skip"``) count in the ``skipped`` column and nowhere else: the
    loss columns and the running losses are over the steps that were applied, with ``t``
    counting those.
    """

    LOSSES = ("loss", "bits_per_char")

    def __init__(self, log_every: int, num_seeds: int, cross_entropy: bool):
        self.log_every = log_every
        self.num_seeds = num_seeds
        self.unit = "bits_per_char" if cross_entropy else "loss"
        self.scale = 1.0 / math.log(2.0) if cross_entropy else 1.0
        self.counts = [0] * num_seeds
        self.total = [0.0] * num_seeds
        self.recent = [0.0] * num_seeds
        self.pending: list[dict[str, list[float]]] = [{} for _ in range(num_seeds)]

    def state(self) -> dict:
        """JSON-serialisable running state."""
        return {
            "counts": self.counts,
            "total": self.total,
            "recent": self.recent,
            "pending": self.pending,
        }

    def restore(self, state: dict) -> None:
        """Continues from :meth:`state`."""
        self.counts, self.total, self.recent = state["counts"], state["total"], state["recent"]
        self.pending = state["pending"]

    def add(self, metrics: dict, first_step: int) -> list[dict]:
        """Consumes a chunk's per-step metrics (leading seed axis when seeds > 1);
        returns the rows completed by it."""
        arrays = {n: np.asarray(v, np.float64) for n, v in metrics.items()}
        if self.num_seeds == 1:
            arrays = {n: v[None] for n, v in arrays.items()}
        length = arrays["loss"].shape[1]
        rows = []
        for s in range(self.num_seeds):
            pending = self.pending[s]
            done_before = len(pending.get("loss", []))
            ends = range(self.log_every - done_before - 1, length, self.log_every)
            running = self._running(s, arrays["loss"][s] * self.scale, arrays["skipped"][s], ends)
            values = {n: pending.get(n, []) + v[s].tolist() for n, v in arrays.items()}
            for block, (end, (cumulative, recent)) in enumerate(zip(ends, running)):
                lo, hi = block * self.log_every, (block + 1) * self.log_every
                means = {n: v[lo:hi] for n, v in values.items()}
                rows.append(self._row(first_step + end + 1, s, means, cumulative, recent))
            used = len(ends) * self.log_every
            self.pending[s] = {n: v[used:] for n, v in values.items()}
        return sorted(rows, key=lambda r: (r["step"], r.get("seed", 0)))

    def _running(self, s: int, losses, skipped, ends) -> list[tuple]:
        """Advances seed s's cumulative sum and recent loss over the applied steps of a
        chunk (float64), returning ``(cumulative, recent)`` at the chunk indices ``ends``."""
        total, recent, t = self.total[s], self.recent[s], self.counts[s]
        out, marks = [], set(ends)
        for i, (loss, skip) in enumerate(zip(losses.tolist(), skipped.tolist())):
            if not skip:
                t += 1
                rate = 1.0 / math.sqrt(t)
                total += loss
                recent = recent * (1.0 - rate) + loss * rate
            if i in marks:
                out.append((total / t if t else math.nan, recent if t else math.nan))
        self.total[s], self.recent[s], self.counts[s] = total, recent, t
        return out

    def partial_rows(self, step: int) -> list[dict]:
        """Rows for the steps since the last complete row (an incomplete log interval)."""
        return [
            self._row(
                step,
                s,
                self.pending[s],
                self.total[s] / self.counts[s] if self.counts[s] else math.nan,
                self.recent[s] if self.counts[s] else math.nan,
            )
            for s in range(self.num_seeds)
            if self.pending[s].get("loss")
        ]

    def _row(self, step, seed, values, cumulative, recent) -> dict:
        row = {"step": step}
        if self.num_seeds > 1:
            row["seed"] = seed
        applied = ~np.asarray(values["skipped"], bool)
        for name in sorted(values):
            v = np.asarray(values[name])
            if name in self.LOSSES:
                v = v[applied]  # skipped steps count in "skipped" only
            row[name] = repr(float(np.mean(v))) if v.size else "nan"
        row[f"cumulative_{self.unit}"] = repr(cumulative)
        row[f"recent_{self.unit}"] = repr(recent)
        return row


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint_manager(workdir: str, keep: int):
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


# ----------------------------------------------------------------------------- workdir


def _config_for_compare(c: ml_collections.ConfigDict) -> dict:
    d = json.loads(c.to_json())
    for name in _RUNTIME_FIELDS:
        d.pop(name, None)
    return d


def _prepare_workdir(workdir: str, c: ml_collections.ConfigDict, overwrite: bool) -> None:
    path = os.path.join(workdir, "config.json")
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
            shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_config_for_compare(c), f, indent=2, sort_keys=True)


def read_rows(path: str, keep: int | None = None) -> list[dict]:
    """The rows of a ``metrics.csv`` (the first ``keep`` of them)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows if keep is None else rows[:keep]


def _write_rows(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def load_train_state(workdir: str) -> tuple[TrainState, Experiment]:
    """The train state of a workdir's latest checkpoint, and the experiment it belongs to.

    For notebooks and analysis: ``ts.params`` are the trained params, ``ts.carry`` the
    estimator carry (for UORO, the tangent pair); with several seeds, every leaf has a
    leading seed axis.
    """
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    exp = build(config)
    manager = _checkpoint_manager(workdir, exp.config.keep_checkpoints)
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
    }


# ----------------------------------------------------------------------------- run


def _next_chunk(streams, length: int, num_seeds: int):
    chunks = [s.next_chunk(length) for s in streams]
    xs = np.stack([x for x, _ in chunks]) if num_seeds > 1 else chunks[0][0]
    ys = np.stack([y for _, y in chunks]) if num_seeds > 1 else chunks[0][1]
    return jnp.asarray(xs), jnp.asarray(ys)


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
    """Runs (or resumes) the online experiment a config describes in ``workdir``.

    Args:
      config: an ``ml_collections.ConfigDict`` with fields of :func:`default_config`.
      workdir: output directory; created if needed.
      overwrite: replace a workdir that holds a run with a different config.

    Returns:
      The summary written to ``workdir/summary.json``.
    """
    c = validate_config(config)
    plan = plan_chunks(c)
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    pylogging.getLogger("tensorboardX.x2num").setLevel(pylogging.ERROR)  # a NaN loss, once per row
    exp = build(c)
    _prepare_workdir(workdir, c, overwrite)
    for notice in plan.notices:
        if not c.quiet:
            print(notice, file=sys.stderr)
    ts = initial_train_state(exp)
    manager = _checkpoint_manager(workdir, c.keep_checkpoints)
    metrics_path = os.path.join(workdir, "metrics.csv")
    logger = MetricLogger(c.log_every, c.num_seeds, exp.cross_entropy)
    rows: list[dict] = []
    restored = restore_checkpoint(manager, ts)
    if restored is not None:
        ts, meta = restored
        for stream, state in zip(exp.streams, meta["streams"]):
            stream.set_state(state)
        logger.restore(meta["logger"])
        rows = read_rows(metrics_path, meta["metric_rows"])
    done = int(np.ravel(ts.step)[0])
    start = done
    mesh = None
    if c.num_seeds == 1 and c.shard_streams and c.num_streams > 1 and jax.device_count() > 1:
        if c.num_streams % jax.device_count():
            raise checks.ConfigError(
                f"num_streams ({c.num_streams}) must be a multiple of the device count "
                f"({jax.device_count()}) to shard streams; or set shard_streams=False"
            )
        mesh = stream_mesh()
        params, states0 = exp.init_model(c.seed)
        ts = shard_train_state(ts, mesh, carry_stream_axes(exp.trainer.estimator, params, states0))
    run_chunk = exp.trainer.run_chunk
    if c.num_seeds > 1:
        run_chunk = jax.jit(jax.vmap(run_chunk), donate_argnums=0)

    def advance(ts, xs, ys):
        return run_chunk(own_buffers(ts), xs, ys)

    from tensorboardX import SummaryWriter
    from tqdm.auto import tqdm

    writer = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start)
    chars_per_step = c.num_streams * c.num_seeds
    bar = tqdm(
        total=c.steps * chars_per_step,
        initial=start * chars_per_step,
        disable=c.quiet,
        unit="char",
        unit_scale=True,
        dynamic_ncols=True,
        desc=f"{c.task}/{c.algorithm}",
    )
    wall = time.time()
    try:
        while done < c.steps:
            next_checkpoint = (done // plan.checkpoint_every + 1) * plan.checkpoint_every
            length = min(plan.chunk, next_checkpoint - done, c.steps - done)
            xs, ys = _next_chunk(exp.streams, length, c.num_seeds)
            if mesh is not None:
                xs, ys = shard_chunk(xs, mesh), shard_chunk(ys, mesh)
            ts, metrics = advance(ts, xs, ys)
            if c.nonfinite == "raise":
                raise_if_halted(ts)
            new_rows = logger.add(metrics, done)
            done += length
            rows.extend(new_rows)
            for row in new_rows:
                suffix = f"/seed{row['seed']}" if "seed" in row else ""
                for name, value in row.items():
                    if name not in ("step", "seed"):
                        writer.add_scalar(name + suffix, float(value), row["step"])
            _write_rows(metrics_path, rows + logger.partial_rows(done))
            bar.update(length * chars_per_step)
            unit = logger.unit
            bar.set_postfix_str(
                f"step {done:,}/{c.steps:,} recent {unit} {np.median(logger.recent):.3f}"
            )
            if done % plan.checkpoint_every == 0 or done >= c.steps:
                meta = {
                    "streams": [s.get_state() for s in exp.streams],
                    "metric_rows": len(rows),
                    "logger": logger.state(),
                    "step": done,
                }
                save_checkpoint(manager, ts, done, meta)
    finally:
        bar.close()
        writer.close()
        manager.close()
    elapsed = time.time() - wall
    all_rows = rows + logger.partial_rows(done)
    summary = _summarise(c, exp, ts, all_rows, elapsed, done - start)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    from uorojax import plots

    plots.plot_workdir(workdir)
    return summary


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
        "params_finite": all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(ts.params)),
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
