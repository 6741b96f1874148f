"""Running an online experiment in a work directory: build, train, log, checkpoint, resume.

``run(config, workdir)`` builds the task stream, model, estimator and optimizer named by
an ``ml_collections`` config (see :func:`default_config` for every field), then trains
online in compiled chunks. In ``workdir`` it writes:

* ``metrics.csv``: one row every ``log_every`` steps (means over those steps).
* ``tb/``: the same scalars as TensorBoard event files (tensorboardX, no TensorFlow).
* ``checkpoints/``: orbax checkpoints every ``checkpoint_every`` steps, the last
  ``keep_checkpoints`` kept: params, optimizer state, estimator carry (tangent pair),
  model state, PRNG key, step count and the data stream's position. Orbax writes each to
  a temporary directory and renames it when complete, so a run killed mid-write resumes
  from the previous complete one.
* ``summary.json`` (final metrics, config, versions, wall time) and ``metrics.png``.

Rerunning the same command on the same workdir resumes from the latest checkpoint; with a
larger ``steps`` it continues the same run. A resumed run ends with exactly the same
params and metrics as an uninterrupted one. A workdir holding a different config is
refused unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import platform
import shutil
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from uorojax import checks, estimators, models, tasks, training

# Fields that may change between invocations on one workdir without changing the run.
_RUNTIME_FIELDS = ("steps", "quiet")


def default_config() -> ml_collections.ConfigDict:
    """Every config field, with its default. Config files override a subset."""
    c = ml_collections.ConfigDict()
    # Task.
    c.task = "anbn"  # anbn | distant_brackets | text | delayed_copy | influence_balancing
    c.task_args = ml_collections.ConfigDict()  # e.g. {"k": 1, "l": 32}
    # Estimator.
    c.algorithm = "uoro"  # uoro | rtrl | tbptt
    c.truncation = 1  # TBPTT window
    c.num_samples = 1  # UORO tangent pairs
    c.eps = 1e-7  # UORO stabiliser
    # Model (ignored by influence_balancing).
    c.model = "gru"  # lstm | optimized_lstm | gru | simple | mgu
    c.hidden_size = 64
    c.num_layers = 1
    c.embed_dim = 0  # 0: one-hot input
    # Optimisation.
    c.optimizer = "adam"  # adam | sgd
    c.learning_rate = 1e-3
    c.schedule = "paper"  # constant | paper (gamma / (1 + alpha sqrt(t)))
    c.schedule_alpha = 1.5e-2
    c.clip_norm = 0.0  # 0: no clipping
    # Run.
    c.steps = 10_000
    c.seed = 0
    c.num_streams = 1
    c.batch_mode = "per_stream"  # per_stream | shared
    c.chunk = 1000  # steps per compiled chunk
    c.log_every = 100
    c.checkpoint_every = 10_000
    c.keep_checkpoints = 3
    c.nonfinite = "raise"  # raise | skip
    c.shadow_rtrl = False  # log the cosine with exact RTRL (small models)
    c.shard_streams = True  # split streams over all local devices when there are several
    c.quiet = False
    return c


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks names, types and ranges of every field; returns the config with defaults.

    Raises:
      ConfigError: naming the field, with a suggestion for a mistyped name.
    """
    defaults = default_config()
    merged = default_config()
    for name, value in config.items():
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults.keys()), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise checks.ConfigError(f"unknown config field {name!r}{hint}")
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
    c = merged
    checks.one_of(
        "task", c.task, ("anbn", "distant_brackets", "text", "delayed_copy", "influence_balancing")
    )
    checks.one_of("algorithm", c.algorithm, ("uoro", "rtrl", "tbptt"))
    checks.one_of("model", c.model, tuple(models.LINEN_CELLS))
    checks.one_of("optimizer", c.optimizer, ("adam", "sgd"))
    checks.one_of("schedule", c.schedule, ("constant", "paper"))
    checks.one_of("batch_mode", c.batch_mode, ("per_stream", "shared"))
    checks.one_of("nonfinite", c.nonfinite, ("raise", "skip"))
    for name in ("truncation", "num_samples", "hidden_size", "num_layers", "steps", "num_streams"):
        checks.positive_int(name, c[name])
    for name in ("chunk", "log_every", "checkpoint_every", "keep_checkpoints"):
        checks.positive_int(name, c[name])
    for name in ("eps", "learning_rate", "schedule_alpha", "clip_norm"):
        checks.non_negative_float(name, c[name])
    if c.embed_dim < 0:
        raise checks.ConfigError(f"embed_dim must be >= 0, got {c.embed_dim}")
    window = c.truncation if c.algorithm == "tbptt" else 1
    if c.chunk % window:
        raise checks.ConfigError(f"chunk ({c.chunk}) must be a multiple of truncation ({window})")
    if c.chunk % c.log_every:
        raise checks.ConfigError(
            f"chunk ({c.chunk}) must be a multiple of log_every ({c.log_every})"
        )
    if c.checkpoint_every % c.chunk:
        raise checks.ConfigError(
            f"checkpoint_every ({c.checkpoint_every}) must be a multiple of chunk ({c.chunk})"
        )
    if c.steps % c.log_every or c.steps % window:
        raise checks.ConfigError(
            f"steps ({c.steps}) must be a multiple of log_every ({c.log_every}) and of the "
            f"truncation ({window})"
        )
    return c


class Experiment(NamedTuple):
    """What :func:`build` makes from a config."""

    stream: Any
    trainer: training.Trainer
    params: Any
    state0: Any
    cross_entropy: bool
    best_bits_per_char: float | None


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Builds the stream, model, estimator, optimizer and trainer a config names."""
    c = validate_config(config)
    num_streams = None if c.num_streams == 1 else c.num_streams
    key = jax.random.key(c.seed)
    if c.task == "influence_balancing":
        ib = tasks.influence_balancing(**dict(c.task_args), num_streams=num_streams)
        stream, apply_fn, loss_fn = ib.stream, ib.model.apply, ib.loss_fn
        params, state0 = ib.params, ib.state0
        cross_entropy, best = False, None
        param_metrics = {"theta": lambda p: p["theta"]}
    else:
        stream = tasks.make_stream(c.task, seed=c.seed, num_streams=num_streams, **c.task_args)
        vocab = stream.vocab_size
        model = models.linen_model(
            c.model,
            c.hidden_size,
            vocab,
            num_layers=c.num_layers,
            vocab_size=vocab,
            embed_dim=c.embed_dim or None,
        )
        apply_fn, loss_fn = model.apply, models.softmax_cross_entropy
        params, state0 = model.init(key, jnp.zeros((), jnp.int32))
        cross_entropy, best = True, stream.best_bits_per_char
        param_metrics = {}
    if num_streams is not None:
        state0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_streams, *a.shape)), state0)

    def make(algorithm):
        if num_streams is not None and c.batch_mode == "shared":
            apply_b, loss_b = estimators.as_one_system(apply_fn, loss_fn)
        else:
            apply_b, loss_b = apply_fn, loss_fn
        if algorithm == "uoro":
            est = estimators.uoro(apply_b, loss_b, eps=c.eps, num_samples=c.num_samples)
        elif algorithm == "rtrl":
            est = estimators.rtrl(apply_b, loss_b)
        else:
            est = estimators.tbptt(apply_b, loss_b, c.truncation)
        if num_streams is not None and c.batch_mode == "per_stream":
            est = estimators.per_stream(est)
        return est

    window = c.truncation if c.algorithm == "tbptt" else 1
    if c.schedule == "paper":
        lr = training.paper_schedule(c.learning_rate, c.schedule_alpha, steps_per_update=window)
    else:
        lr = c.learning_rate
    opt = optax.adam(lr) if c.optimizer == "adam" else optax.sgd(lr)
    if c.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(c.clip_norm), opt)
    trainer = training.make_trainer(
        make(c.algorithm),
        opt,
        nonfinite=c.nonfinite,
        cross_entropy=cross_entropy,
        shadow=make("rtrl") if c.shadow_rtrl else None,
        param_metrics=param_metrics,
        donate=True,  # the runner keeps only the returned train state
    )
    return Experiment(stream, trainer, params, state0, cross_entropy, best)


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


def _to_saveable(ts: training.TrainState):
    return ts._replace(key=jax.random.key_data(ts.key))


def save_checkpoint(manager, ts: training.TrainState, stream, rows: int) -> None:
    """Saves the train state and the stream position (atomically, by orbax)."""
    import orbax.checkpoint as ocp

    meta = {"stream": stream.get_state(), "metric_rows": rows, "step": int(ts.step)}
    manager.save(
        int(ts.step),
        args=ocp.args.Composite(
            train_state=ocp.args.StandardSave(_to_saveable(ts)), meta=ocp.args.JsonSave(meta)
        ),
    )
    manager.wait_until_finished()


def restore_checkpoint(manager, template: training.TrainState, stream):
    """Restores the latest complete checkpoint into ``template``'s structure, or None."""
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
    ts = training.TrainState(*ts) if not isinstance(ts, training.TrainState) else ts
    ts = ts._replace(key=jax.random.wrap_key_data(ts.key))
    stream.set_state(restored["meta"]["stream"])
    return ts, restored["meta"]["metric_rows"]


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


def _read_rows(path: str, keep: int) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[:keep]


def _write_rows(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def _metric_rows(metrics: dict, first_step: int, log_every: int) -> list[dict]:
    names = sorted(metrics)
    arrays = {n: np.asarray(metrics[n], np.float64) for n in names}
    length = len(arrays["loss"])
    rows = []
    for lo in range(0, length, log_every):
        row = {"step": first_step + lo + log_every}
        for n in names:
            row[n] = repr(float(np.mean(arrays[n][lo : lo + log_every])))
        rows.append(row)
    return rows


def load_train_state(workdir: str) -> tuple[training.TrainState, Experiment]:
    """The train state of a workdir's latest checkpoint, and the experiment it belongs to.

    For notebooks and analysis: ``ts.params`` are the trained params, ``ts.carry`` the
    estimator carry (for UORO, the tangent pair).
    """
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    exp = build(config)
    example_x, example_y = (jnp.asarray(a) for a in exp.stream.example())
    template = exp.trainer.init(
        exp.params, exp.state0, jax.random.key(config.seed), example_x, example_y
    )
    manager = _checkpoint_manager(workdir, config.keep_checkpoints)
    try:
        restored = restore_checkpoint(manager, template, exp.stream)
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
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    _prepare_workdir(workdir, c, overwrite)
    exp = build(c)
    example_x, example_y = (jnp.asarray(a) for a in exp.stream.example())
    ts = exp.trainer.init(exp.params, exp.state0, jax.random.key(c.seed), example_x, example_y)
    manager = _checkpoint_manager(workdir, c.keep_checkpoints)
    metrics_path = os.path.join(workdir, "metrics.csv")
    restored = restore_checkpoint(manager, ts, exp.stream)
    rows_kept = 0
    if restored is not None:
        ts, rows_kept = restored
    rows = _read_rows(metrics_path, rows_kept)
    start = int(ts.step)
    mesh = None
    if c.shard_streams and c.num_streams > 1 and jax.device_count() > 1:
        if c.num_streams % jax.device_count():
            raise checks.ConfigError(
                f"num_streams ({c.num_streams}) must be a multiple of the device count "
                f"({jax.device_count()}) to shard streams; or set shard_streams=False"
            )
        mesh = training.stream_mesh()
        axes = training.carry_stream_axes(
            exp.trainer.estimator, exp.params, exp.state0, example_x, example_y
        )
        ts = training.shard_train_state(ts, mesh, axes)

    from tensorboardX import SummaryWriter
    from tqdm.auto import tqdm

    writer = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start)
    bar = tqdm(
        total=c.steps,
        initial=start,
        disable=c.quiet,
        unit="char",
        dynamic_ncols=True,
        desc=f"{c.task}/{c.algorithm}",
    )
    wall = time.time()
    try:
        while int(ts.step) < c.steps:
            length = min(c.chunk, c.steps - int(ts.step))
            xs, ys = (jnp.asarray(a) for a in exp.stream.next_chunk(length))
            if mesh is not None:
                xs, ys = training.shard_chunk(xs, mesh), training.shard_chunk(ys, mesh)
            step0 = int(ts.step)
            ts, metrics = exp.trainer.run(ts, xs, ys)
            new_rows = _metric_rows(metrics, step0, c.log_every)
            rows.extend(new_rows)
            for row in new_rows:
                for name, value in row.items():
                    if name != "step":
                        writer.add_scalar(name, float(value), row["step"])
            _write_rows(metrics_path, rows)
            bar.update(length)
            key = "bits_per_char" if exp.cross_entropy else "loss"
            bar.set_postfix({key: f"{float(new_rows[-1][key]):.3f}"})
            if int(ts.step) % c.checkpoint_every == 0 or int(ts.step) >= c.steps:
                save_checkpoint(manager, ts, exp.stream, len(rows))
    finally:
        bar.close()
        writer.close()
        manager.close()
    elapsed = time.time() - wall
    summary = _summarise(c, exp, ts, rows, elapsed, int(ts.step) - start)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    from uorojax import plots

    plots.plot_workdir(workdir)
    return summary


def _summarise(c, exp: Experiment, ts, rows: list[dict], elapsed: float, steps_run: int):
    tail = rows[-max(1, len(rows) // 10) :]
    final = {k: float(np.mean([float(r[k]) for r in tail])) for k in tail[0] if k != "step"}
    leaves_finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(ts.params))
    summary = {
        "final_metrics_last_10pct": final,
        "steps": int(ts.step),
        "num_skipped": int(ts.num_skipped),
        "params_finite": leaves_finite,
        "best_bits_per_char": exp.best_bits_per_char,
        "wall_time_s": elapsed,
        "steps_per_s_this_invocation": steps_run / elapsed if elapsed > 0 else math.nan,
        "config": json.loads(c.to_json()),
        "versions": versions(),
    }
    if "theta" in ts.params:
        summary["final_theta"] = float(ts.params["theta"])
    return summary
