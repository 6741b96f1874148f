"""The config of a run: every field with its default, loading from a file, validation,
how a setting is spelled in Python and on the command line, and how a run is cut into
compiled chunks.

An estimator's hyperparameters live in its own block, named as the estimator:
``c.uoro.truncation``, ``c.ok.rank`` (``--config.ok.rank=4`` on the command line). Every
registered estimator has its block, with the defaults its constructor declares, so that
an override type-checks whatever the algorithm; only the block of ``c.algorithm`` is
read, and the others must keep their defaults. The model's fields are flat
(``c.hidden_size``): those of :data:`uorojax.models.registry.MODELS`.
"""

from __future__ import annotations

import os
import types
import typing
from typing import Any, NamedTuple

import ml_collections

from uorojax import checks
from uorojax.estimators import registry
from uorojax.models.registry import MODELS, model_fields, unread_fields
from uorojax.tasks.registry import TASKS


class Setting(NamedTuple):
    """A setting an error message asks for, spelled for the interface in use.

    Attributes:
      path: a config field (``"model"``, ``"ok.rank"``) or, with ``argument``, an
        argument of :func:`~uorojax.runs.run` (``"overwrite"``).
      value: its value.
      argument: ``path`` is an argument of ``run`` (a flag of its own on the command
        line), not a config field.
    """

    path: str
    value: Any
    argument: bool = False

    def python(self) -> str:
        """``c.ok.rank = 4`` (``overwrite=True`` for an argument)."""
        return f"{self.path}={self.value!r}" if self.argument else f"c.{self.path} = {self.value!r}"

    def cli(self) -> str:
        """``--config.ok.rank=4`` (``--overwrite`` for an argument)."""
        if self.argument:
            return f"--{self.path}" if self.value is True else f"--{self.path}={self.value}"
        return f"--config.{self.path}={self.value}"


class RunError(checks.ConfigError):
    """A config error that names settings: its message speaks Python (``str``), its
    :meth:`cli` the command line's flags.

    Example::

      err = RunError("use {}", Setting("ok.rank", 4))
      str(err), err.cli()  # ('use c.ok.rank = 4', 'use --config.ok.rank=4')
    """

    def __init__(self, template: str, *settings: Setting):
        self.template, self.settings = template, settings
        super().__init__(self.python())

    def python(self) -> str:
        return self.template.format(*(s.python() for s in self.settings))

    def cli(self) -> str:
        return self.template.format(*(s.cli() for s in self.settings))


def _estimator_block(algorithm: str) -> ml_collections.ConfigDict:
    """An estimator's hyperparameters with their defaults; an optional one takes any
    literal on the command line (its annotation checks it)."""
    block = ml_collections.ConfigDict()
    for h in registry.hyperparameters(algorithm):
        union = typing.get_origin(h.type) in (typing.Union, types.UnionType)
        loose = union or h.default is None
        block[h.name] = ml_collections.FieldReference(h.default, object) if loose else h.default
    return block


def default_config() -> ml_collections.ConfigDict:
    """Every config field, with its default. Config files override a subset."""
    c = ml_collections.ConfigDict()
    # Task: a key of uorojax.tasks.TASKS, and its arguments (e.g. {"k": 1, "l": 32}).
    c.task = "anbn"
    c.task_args = ml_collections.ConfigDict()
    # Estimator: a key of uorojax.registry.ESTIMATORS; each has a block of the
    # hyperparameters its constructor declares (c.uoro.truncation, c.ok.rank, ...).
    c.algorithm = "uoro"
    for algorithm in registry.ESTIMATORS:
        c[algorithm] = _estimator_block(algorithm)
    # Model: a key of uorojax.models.registry.MODELS (ignored by a task with its own
    # model), and every model's fields: hidden_size, num_layers, embed_dim (0: one-hot),
    # init (flax | torch7), model_dim (lru_stack's width, 0: hidden_size), tau (leaky_rnn).
    c.model = "gru"
    for name, default in model_fields().items():
        c[name] = default
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


def check_field(path: str, value: Any, algorithm: str) -> None:
    """That a config field set by name exists (``"steps"``, ``"ok.rank"``): a flat name
    that is now an estimator's hyperparameter names its new place.

    Raises:
      RunError: ``config field 'rank' moved: use c.ok.rank = 4`` (the run's
        ``algorithm``'s place if it takes the name, else every estimator's that does).
      ConfigError: an unknown field, with the nearest name.
    """
    name, _, rest = path.partition(".")
    if name in registry.ESTIMATORS and rest:
        checks.known_config_field(
            path, [f"{name}.{h}" for h in registry.hyperparameter_defaults(name)]
        )
        return
    fields = default_config()
    if name in fields:
        return
    takers = [a for a in registry.ESTIMATORS if name in registry.hyperparameter_defaults(a)]
    if takers:
        takers = [algorithm] if algorithm in takers else takers
        places = ", ".join("{}" for _ in takers[:-1]) + (" or " if len(takers) > 1 else "") + "{}"
        moved_to = (Setting(f"{a}.{name}", value) for a in takers)
        raise RunError(f"config field {name!r} moved: use {places}", *moved_to)
    checks.known_config_field(name, list(fields))


def config_from_file(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The config of a config file (its ``get_config()``) with ``overrides`` applied; a
    dict merges into the block it names.

    Example::

      c = config_from_file("configs/anbn.py", {"algorithm": "tbptt", "tbptt": {"truncation": 16}})
    """
    import importlib.util

    if not os.path.isfile(path):
        raise checks.ConfigError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location("_uorojax_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for name, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(name), ml_collections.ConfigDict):
            config[name].update(value)
        else:
            config[name] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return config


def _merged_block(algorithm: str, given) -> ml_collections.ConfigDict:
    """An estimator's block of a config on top of its defaults, each value checked
    against its annotation."""
    block = _estimator_block(algorithm)
    declared = {h.name: h for h in registry.hyperparameters(algorithm)}
    for name, value in dict(given).items():
        check_field(f"{algorithm}.{name}", value, algorithm)
        block[name] = registry.check_value(f"{algorithm}.{name}", value, declared[name].type)
    return block


def _merge_with_defaults(config) -> ml_collections.ConfigDict:
    """The config on top of the defaults, each field's name and type checked."""
    defaults, merged = default_config(), default_config()
    algorithm = config.get("algorithm", defaults.algorithm)
    for name, value in config.items():
        if name not in defaults:  # from a config file or Python: spelled as Python
            try:
                check_field(name, value, algorithm)
            except RunError as err:
                raise checks.ConfigError(err.python()) from None
        expected = defaults[name]
        if name in registry.ESTIMATORS:
            merged[name] = _merged_block(name, value)
            continue
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


def _check_unread(c: ml_collections.ConfigDict) -> None:
    """Nothing set that the run does not read: other estimators' hyperparameters, model
    fields the model does not read, or a model for a task that brings its own."""
    for algorithm in registry.ESTIMATORS:
        defaults = registry.hyperparameter_defaults(algorithm)
        changed = [(k, v) for k, v in c[algorithm].items() if v != defaults[k]]
        if algorithm != c.algorithm and changed:
            raise RunError(
                f"{{}} is set, but the run's estimator is {{}}: set {{}}, or leave "
                f"{algorithm}'s hyperparameters at their defaults",
                Setting(f"{algorithm}.{changed[0][0]}", changed[0][1]),
                Setting("algorithm", c.algorithm),
                Setting("algorithm", algorithm),
            )
    fields = {name: c[name] for name in model_fields()}
    if TASKS[c.task].model is not None:
        defaults = {"model": default_config().model, **model_fields()}
        changed = [(k, v) for k, v in {"model": c.model, **fields}.items() if v != defaults[k]]
        if changed:
            raise RunError(
                "{} brings its own model: {} does nothing; leave the model's fields at "
                "their defaults",
                Setting("task", c.task),
                Setting(*changed[0]),
            )
        return
    checks.one_of("model", c.model, tuple(MODELS))
    if unread := unread_fields(c.model, fields):
        name, value = next(iter(unread.items()))
        reads = ", ".join(MODELS[c.model].fields)
        raise RunError(
            f"{{}} does not read {{}} (it reads {reads})",
            Setting("model", c.model),
            Setting(name, value),
        )


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks names, types and ranges of every field but the estimator's hyperparameters'
    ranges, which its constructor checks (:func:`~uorojax.runs.build`); returns the
    config with defaults.

    Raises:
      ConfigError: naming the field, with a suggestion for a mistyped name or the
        nearest valid value (a :class:`RunError` where it names a setting).
    """
    c = _merge_with_defaults(config)
    checks.one_of("task", c.task, tuple(TASKS))
    checks.one_of("algorithm", c.algorithm, tuple(registry.ESTIMATORS))
    checks.one_of("init", c.init, ("flax", "torch7"))
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
    for name in ("embed_dim", "quality_every", "model_dim"):
        if c[name] < 0:
            raise checks.ConfigError(f"{name} must be >= 0, got {c[name]}")
    _check_unread(c)
    for spec in c.quality_estimators:
        registry.parse_method(spec)
    if c.num_seeds > 1 and c.shadow_rtrl:
        raise RunError("shadow_rtrl runs with one seed ({})", Setting("num_seeds", 1))
    return c


def hyperparameters_of(c: ml_collections.ConfigDict) -> dict:
    """The hyperparameters of the config's algorithm: its block."""
    return c[c.algorithm].to_dict()


def method_overrides(spec: str) -> dict:
    """The config overrides of a method string (:func:`uorojax.registry.parse_method`).

    Example::

      method_overrides("ok:rank=4")  # {'algorithm': 'ok', 'ok': {'rank': 4}}
    """
    algorithm, values = registry.parse_method(spec)
    return {"algorithm": algorithm, algorithm: values}


def model_overrides(name: str, **fields: Any) -> dict:
    """The config overrides of a model of :data:`~uorojax.models.registry.MODELS` with
    ``fields``, every other model field at its default (what a config file set for
    another model does not stay behind).

    Example::

      model_overrides("simple", hidden_size=32)["model_dim"]  # 0
    """
    return {**model_fields(), "model": name, **fields}


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
