"""A run's work directory: its config, the refusal of another config, the summary,
and loading a trained run back."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys

import jax
import ml_collections
import numpy as np
import optax

from uorojax import checks
from uorojax.runs.build import Experiment, build, initial_train_state
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
