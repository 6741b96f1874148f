"""The config of a run: every field with its default, loading from a file, and
validation; how a run is cut into compiled chunks."""

from __future__ import annotations

import os
from typing import NamedTuple

import ml_collections

from uorojax import checks, models, tasks
from uorojax.estimators import registry


def default_config() -> ml_collections.ConfigDict:
    """Every config field, with its default. Config files override a subset."""
    c = ml_collections.ConfigDict()
    # Task.
    c.task = "anbn"  # a key of uorojax.tasks.TASKS
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
    checks.one_of("task", c.task, tuple(tasks.TASKS))
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
