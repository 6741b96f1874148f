"""A run's work directory: its config, the refusal of another config, the summary,
and loading a trained run back."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
import optax

from uorojax import checks
from uorojax.estimators import registry
from uorojax.runs.build import Experiment, build, initial_train_state
from uorojax.runs.config import RunError, Setting
from uorojax.tasks.registry import TaskEntry
from uorojax.training import distributed
from uorojax.training.checkpoints import checkpoint_manager, restore_checkpoint
from uorojax.training.update import TrainState

# Fields that may change between invocations on one workdir without changing the run.
_RUNTIME_FIELDS = ("steps", "quiet")


def _config_for_compare(c: ml_collections.ConfigDict) -> dict:
    d = json.loads(c.to_json())
    for name in _RUNTIME_FIELDS:
        d.pop(name, None)
    return d


class Found(NamedTuple):
    """What a workdir held before a run wrote to it.

    Attributes:
      existed: the directory existed.
      names: its entries then (none after a replaced run's removal).
      held_run: it held this config's run, which the run resumes.
    """

    existed: bool
    names: frozenset[str]
    held_run: bool


def _prepare_workdir(workdir: str, c: ml_collections.ConfigDict, overwrite: bool) -> Found:
    """Refuses a workdir of another config (every process reads it), then process 0
    replaces or creates it; every process then checks that it sees process 0's files.
    Returns what the workdir held before (:func:`leave_as_found`)."""
    path = os.path.join(workdir, "config.json")
    existed = os.path.isdir(workdir)
    found = Found(existed, frozenset(os.listdir(workdir)) if existed else frozenset(), False)
    replace = False
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        new = _config_for_compare(c)
        if old != new:
            if not overwrite:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise RunError(
                    f"workdir {workdir!r} holds a run with a different config (fields "
                    f"{diff} differ); use another workdir or {{}}",
                    Setting("overwrite", True, argument=True),
                )
            replace = True
            found = Found(True, frozenset(), False)
        else:
            found = found._replace(held_run=True)
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
    return found


def leave_as_found(workdir: str, found: Found) -> None:
    """Removes what a run that failed before its first checkpoint wrote (process 0): the
    workdir, if it did not exist, or the entries it did not hold. A workdir whose run
    was being resumed is left alone."""
    if found.held_run or not distributed.is_writer() or not os.path.isdir(workdir):
        return
    if not found.existed:
        shutil.rmtree(workdir)
        return
    for name in set(os.listdir(workdir)) - found.names:
        target = os.path.join(workdir, name)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)


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


def _summarise(exp: Experiment, ts, rows: list[dict], elapsed: float, steps_run: int) -> dict:
    c = exp.config
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
    floors = exp.floors
    params = distributed.to_host(ts.params)
    summary = {
        "title": describe(c, exp.task),
        "final_metrics_last_10pct": final,
        "final_running_metrics": {k: v[0] if len(v) == 1 else v for k, v in last.items()},
        "steps": int(np.ravel(ts.step)[0]),
        "num_skipped": np.asarray(ts.num_skipped).tolist(),
        "params_finite": all(bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(params)),
        "floors": None if floors is None else floors._asdict(),
        "best_bits_per_char": floors.optimum if floors and floors.metric == "bits_per_char" else None,
        "param_metrics": list(exp.task.param_metrics),
        "wall_time_s": elapsed,
        "steps_per_s_this_invocation": steps_run / elapsed if elapsed > 0 else math.nan,
        "config": json.loads(c.to_json()),
        "versions": versions(),
    }  # fmt: skip
    if len(per_seed) > 1:
        summary["per_seed"] = per_seed
    for name, fn in exp.task.param_metrics.items():
        summary[f"final_{name}"] = np.asarray(fn(params), np.float64).tolist()
    return summary


def describe(c: ml_collections.ConfigDict, task: TaskEntry) -> str:
    """A run in one line, for figure titles: ``anbn(k=1, l=32): tbptt (truncation=16),
    gru-64`` (the model left out for a task with its own)."""
    args = ", ".join(f"{k}={v}" for k, v in c.task_args.items())
    defaults = registry.hyperparameter_defaults(c.algorithm)
    changed = ", ".join(f"{k}={v}" for k, v in c[c.algorithm].items() if v != defaults[k])
    text = f"{c.task}({args}): {c.algorithm}" + (f" ({changed})" if changed else "")
    return text if task.model is not None else f"{text}, {c.model}-{c.hidden_size}"
