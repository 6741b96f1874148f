"""Runs: an online experiment from a config, in a work directory, resumable.

``run(config, workdir)`` builds the task streams, model, estimator and optimizer a config
names (:mod:`~uorojax.runs.config`, :mod:`~uorojax.runs.build`), trains in compiled
chunks, logs, checkpoints and resumes (:mod:`~uorojax.runs.runner`,
:mod:`~uorojax.runs.workdir`); :mod:`~uorojax.runs.cli` is the command line of
``experiments/run.py`` and :mod:`~uorojax.runs.report` the tables and figures of
``experiments/reproduce.py``.

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
)
from uorojax.runs.config import (
    ChunkPlan,
    config_from_file,
    default_config,
    hyperparameters_of,
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
    "one_stream_model",
    "plan_chunks",
    "quality_specs",
    "run",
    "start",
    "train",
    "validate_config",
    "versions",
]
