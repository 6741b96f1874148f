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
  (:mod:`uorojax.training.checkpoints`). A run killed mid-write resumes from the previous
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
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from uorojax import checks
from uorojax.runs.build import Experiment, build, initial_train_state
from uorojax.runs.config import ChunkPlan
from uorojax.runs.quality import measure_quality
from uorojax.runs.workdir import Found, _prepare_workdir, _summarise, leave_as_found
from uorojax.training import distributed
from uorojax.training.checkpoints import checkpoint_manager, restore_checkpoint, save_checkpoint
from uorojax.training.metric_log import MetricLogger, read_rows, write_rows
from uorojax.training.sharding import (
    carry_stream_axes,
    shard_chunk,
    shard_train_state,
    stream_mesh,
)
from uorojax.training.trainer import own_buffers, raise_if_halted
from uorojax.training.update import TrainState


@dataclasses.dataclass
class Job:
    """A run in progress: what :func:`run`'s stages share.

    ``done`` counts stream steps; ``rows`` and ``quality_rows`` are the complete rows of
    ``metrics.csv`` and ``quality.csv``; ``found`` is what the workdir held before.
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
    found: Found
    writer: Any = None
    bar: Any = None
    wall: float = 0.0
    saved: bool = False  # this job wrote a checkpoint
    progress: dict = dataclasses.field(default_factory=dict)  # the task's, for the bar

    def close(self) -> None:
        for closeable in (self.bar, self.writer, self.manager):
            if closeable is not None:
                closeable.close()
        self.bar = self.writer = self.manager = None


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> dict:
    """Runs (or resumes) the online experiment a config describes in ``workdir``.

    Everything is built and checked before anything is written; a run that fails before
    its first checkpoint leaves the workdir as it found it.

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
    except BaseException:
        job.close()
        if not job.saved:
            leave_as_found(workdir, job.found)
        raise
    job.close()
    return finish(job)


def start(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> Job:
    """Builds the run and its train state (checking everything), prepares ``workdir``,
    restores its latest checkpoint (or starts at step 0), places the train state on the
    devices and opens the logs."""
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    pylogging.getLogger("tensorboardX.x2num").setLevel(pylogging.ERROR)  # a NaN loss, once per row
    given = json.loads(ml_collections.ConfigDict(config).to_json())
    distributed.check_same_config({**given, "overwrite": overwrite})
    exp = build(config)
    ts, advance, place_chunk = _placed(exp, initial_train_state(exp))
    found = _prepare_workdir(workdir, exp.config, overwrite)
    try:
        return _open(exp, workdir, found, ts, advance, place_chunk)
    except BaseException:
        leave_as_found(workdir, found)
        raise


def _open(exp: Experiment, workdir: str, found: Found, ts, advance, place_chunk) -> Job:
    """The job of a prepared workdir: its checkpoint restored, its logs opened."""
    c = exp.config
    writer = distributed.is_writer()
    for notice in exp.plan.notices:
        if not c.quiet and writer:
            print(notice, file=sys.stderr)
    logger = MetricLogger(
        c.log_every,
        c.num_seeds,
        exp.task.bits,
        applied_only=tuple(exp.task.target_metrics),
        ratios=exp.task.ratio_metrics,
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
        exp, workdir, ts, done, done, logger, rows, quality_rows, manager, advance, place_chunk,
        found,
    )  # fmt: skip
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
        metrics, job.progress = _with_task_metrics(job.exp, metrics)
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


def _with_task_metrics(exp: Experiment, metrics: dict) -> tuple[dict, dict]:
    """A task with a curriculum sees the chunk's metrics and may move to a harder
    setting; what it reports (the copy task's length) joins the chunk's metrics. Returns
    them, and the last value of each reported metric (the first seed's)."""
    curriculum, num_seeds = exp.task.curriculum, exp.config.num_seeds
    if curriculum is None:
        return metrics, {}
    metrics = dict(metrics)
    per_seed = [jax.tree.map(lambda m, s=s: m[s], metrics) for s in range(num_seeds)]
    extra = [
        curriculum(stream, m)
        for stream, m in zip(exp.streams, per_seed if num_seeds > 1 else [metrics])
    ]
    for name in extra[0]:
        values = np.stack([e[name] for e in extra]) if num_seeds > 1 else extra[0][name]
        metrics[name] = values
    return metrics, {name: float(np.ravel(values)[-1]) for name, values in extra[0].items()}


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
    postfix += "".join(f" {name} {value:g}" for name, value in job.progress.items())
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
    job.saved = True


def finish(job: Job) -> dict:
    """Writes ``summary.json`` and ``metrics.png`` (process 0); returns the summary."""
    elapsed = time.time() - job.wall
    all_rows = job.rows + job.logger.partial_rows(job.done)
    summary = _summarise(job.exp, job.ts, all_rows, elapsed, job.done - job.started_at)
    if not distributed.is_writer():
        return summary
    with open(os.path.join(job.workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    from uorojax.analysis import plots

    plots.plot_workdir(job.workdir)
    return summary
