"""Runs: an online experiment from a config, in a work directory, resumable.

One job a module: :mod:`~uorojax.runs.config` (the config's fields and defaults, an
estimator's hyperparameters in its own block, validation, how a setting is spelled in
Python and on the command line), :mod:`~uorojax.runs.build` (streams, model, estimator,
optimizer and trainer from the task, model and estimator tables),
:mod:`~uorojax.runs.runner` (the chunk loop: train, log, checkpoint, resume),
:mod:`~uorojax.runs.workdir` (its files, the refusal of another config, the summary),
:mod:`~uorojax.runs.cli` (the command line of ``experiments/run.py``),
:mod:`~uorojax.runs.quality` (gradient quality during a run), :mod:`~uorojax.runs.suite`
(many runs, their rows collected) and :mod:`~uorojax.runs.report` (tables, figures and
claims of ``experiments/reproduce.py``). ``docs/architecture.md`` draws the layers.

This package needs the ``run`` extra (ml_collections, orbax, tensorboardX, tqdm,
matplotlib); ``import uorojax`` does not load it.
"""

from uorojax.runs.build import (
    Experiment,
    build,
    build_model,
    check_processes,
    initial_train_state,
    one_stream_model,
    task_model,
)
from uorojax.runs.config import (
    ChunkPlan,
    RunError,
    Setting,
    config_from_file,
    default_config,
    hyperparameters_of,
    method_overrides,
    model_overrides,
    plan_chunks,
    validate_config,
)
from uorojax.runs.quality import measure_quality, quality_specs
from uorojax.runs.runner import Job, finish, run, start, train
from uorojax.runs.workdir import load_train_state, versions

__all__ = [
    "ChunkPlan",
    "Experiment",
    "Job",
    "RunError",
    "Setting",
    "build",
    "build_model",
    "check_processes",
    "config_from_file",
    "default_config",
    "finish",
    "hyperparameters_of",
    "initial_train_state",
    "load_train_state",
    "measure_quality",
    "method_overrides",
    "model_overrides",
    "one_stream_model",
    "plan_chunks",
    "quality_specs",
    "run",
    "start",
    "task_model",
    "train",
    "validate_config",
    "versions",
]
