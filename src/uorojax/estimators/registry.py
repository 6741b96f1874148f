"""One registry: the names that configs, the runner, the benchmark and the tests use.

``ESTIMATORS`` maps a config's ``algorithm`` to an :class:`EstimatorEntry`: the
estimator's constructor (``uorojax.uoro``, ...) and the batch modes that make sense for
it. The constructor declares the estimator's hyperparameters, once: every keyword after
``apply_fn`` and ``loss_fn``, with its type annotation and default, except the facts a
model and its stream provide (:data:`MODEL_FACTS`). The config's fields, the command
line's checks, the benchmark and the reproduction learn them from there
(:func:`hyperparameters`); the constructor checks their values. ``TASKS`` maps a
config's ``task`` to its stream (or, for influence balancing, its whole problem).

A new estimator is one file under ``uorojax/estimators/`` and one line here;
``tests/test_protocol.py`` then checks it against the protocol.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from uorojax import checks
from uorojax.estimators.base import Estimator
from uorojax.estimators.batching import as_one_system, per_stream
from uorojax.estimators.eprop import eprop
from uorojax.estimators.es_d_rtrl import es_d_rtrl
from uorojax.estimators.kf_rtrl import kf_rtrl
from uorojax.estimators.ok import ok
from uorojax.estimators.rflo import rflo
from uorojax.estimators.rtrl import rtrl
from uorojax.estimators.snap import snap1
from uorojax.estimators.tbptt import tbptt
from uorojax.estimators.uoro import uoro
from uorojax.models.structure.types import Structure
from uorojax.tree import repeat_streams

# Keywords a constructor may take that describe the model, not the estimator: the
# model's structure (SnAp-1, KF-RTRL) and one step's input and target (window buffers).
MODEL_FACTS = ("structure", "example_x", "example_y")


class EstimatorEntry(NamedTuple):
    """One registered estimator.

    Attributes:
      constructor: ``(apply_fn, loss_fn, **keywords) -> Estimator`` for one stream (or
        one system); its keywords are its hyperparameters and the :data:`MODEL_FACTS`
        it needs.
      batch_modes: the batch modes that make sense: ``"per_stream"`` (a carry per
        stream) and ``"shared"`` (the batch as one system, :func:`~uorojax.as_one_system`).
    """

    constructor: Callable[..., Estimator]
    batch_modes: tuple[str, ...]


ESTIMATORS: dict[str, EstimatorEntry] = {
    "uoro": EstimatorEntry(uoro, ("per_stream", "shared")),
    "rtrl": EstimatorEntry(rtrl, ("per_stream", "shared")),
    "tbptt": EstimatorEntry(tbptt, ("per_stream", "shared")),
    "kf_rtrl": EstimatorEntry(kf_rtrl, ("per_stream",)),
    "ok": EstimatorEntry(ok, ("per_stream",)),
    "snap1": EstimatorEntry(snap1, ("per_stream",)),
    "eprop": EstimatorEntry(eprop, ("per_stream",)),
    "rflo": EstimatorEntry(rflo, ("per_stream",)),
    "es_d_rtrl": EstimatorEntry(es_d_rtrl, ("per_stream",)),
}


class Hyperparameter(NamedTuple):
    """A hyperparameter as its constructor declares it."""

    name: str
    type: type
    default: Any


def _keywords(constructor: Callable) -> list[inspect.Parameter]:
    """The constructor's parameters after ``apply_fn`` and ``loss_fn``."""
    return list(inspect.signature(constructor).parameters.values())[2:]


@functools.cache
def hyperparameters(algorithm: str) -> tuple[Hyperparameter, ...]:
    """The hyperparameters of a registered estimator, from its constructor's signature.

    Example::

      [h.name for h in uorojax.registry.hyperparameters("uoro")]
      # ['truncation', 'eps', 'num_samples']
    """
    checks.one_of("algorithm", algorithm, tuple(ESTIMATORS))
    constructor = ESTIMATORS[algorithm].constructor
    hints = typing.get_type_hints(constructor)
    found = []
    for p in _keywords(constructor):
        if p.name in MODEL_FACTS:
            continue
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"{algorithm}: hyperparameter {p.name!r} needs a default")
        found.append(Hyperparameter(p.name, hints.get(p.name, type(p.default)), p.default))
    return tuple(found)


def hyperparameter_defaults() -> dict[str, Any]:
    """Every registered estimator's hyperparameters with their defaults (what a config
    holds). A name shared by several estimators has one default and type for all.
    """
    defaults: dict[str, Hyperparameter] = {}
    for algorithm in ESTIMATORS:
        for h in hyperparameters(algorithm):
            seen = defaults.setdefault(h.name, h)
            if (seen.default, seen.type) != (h.default, h.type):
                raise TypeError(
                    f"hyperparameter {h.name!r} is declared {seen.type.__name__} = "
                    f"{seen.default!r} by one estimator and {h.type.__name__} = {h.default!r} "
                    f"by {algorithm}: a config field has one default"
                )
    return {name: h.default for name, h in defaults.items()}


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """An estimator named with its hyperparameters, as configs and the command line
    write it: ``"algorithm"`` or ``"algorithm:name=value,name=value"``.

    Values are converted to the types the constructor declares.

    Raises:
      ConfigError: for an unknown algorithm or hyperparameter, or a value that does not
        convert.

    Example::

      uorojax.registry.parse_method("uoro:truncation=16,num_samples=4")
      # ('uoro', {'truncation': 16, 'num_samples': 4})
    """
    algorithm, _, rest = spec.partition(":")
    checks.one_of("algorithm", algorithm, tuple(ESTIMATORS))
    declared = {h.name: h for h in hyperparameters(algorithm)}
    values = {}
    for item in filter(None, rest.split(",")):
        name, _, text = item.partition("=")
        checks.one_of(f"{algorithm}'s hyperparameter", name, tuple(declared))
        try:
            values[name] = declared[name].type(text)
        except ValueError as err:
            raise checks.ConfigError(
                f"{spec!r}: {name}={text!r} is not a {declared[name].type.__name__}"
            ) from err
    return algorithm, values


def build_estimator(
    algorithm: str,
    apply_fn: Callable,
    loss_fn: Callable,
    *,
    num_streams: int | None = None,
    batch_mode: str = "per_stream",
    structure: Structure | None = None,
    example_x: Any = None,
    example_y: Any = None,
    **hyperparameter_values: Any,
) -> Estimator:
    """The estimator a config names, wrapped for its batch mode.

    Args:
      algorithm: a key of :data:`ESTIMATORS`.
      apply_fn, loss_fn: the single-stream model.
      num_streams: None for one stream, else B streams.
      batch_mode: ``"per_stream"`` or ``"shared"`` (used when ``num_streams`` is set).
      structure: the model's structure, for the estimators that read it.
      example_x, example_y: one stream's step input and target (window buffers).
      **hyperparameter_values: hyperparameters by name (:func:`hyperparameters`). A name
        this estimator does not take is ignored at its registry default and refused
        otherwise, so that a config cannot set one that silently does nothing.

    Raises:
      ConfigError: for an unknown name, a batch mode the estimator does not support, a
        hyperparameter it does not take, or a value its constructor refuses.

    Example::

      est = uorojax.registry.build_estimator("tbptt", model.apply, loss, truncation=16,
                                              example_x=x0, example_y=y0)
    """
    checks.one_of("algorithm", algorithm, tuple(ESTIMATORS))
    entry = ESTIMATORS[algorithm]
    own = {h.name for h in hyperparameters(algorithm)}
    defaults = hyperparameter_defaults()
    for name, value in hyperparameter_values.items():
        checks.known_config_field(name, list(defaults))
        if name not in own and value != defaults[name]:
            raise checks.ConfigError(
                f"{algorithm} does not take {name} (got {value!r}); its hyperparameters "
                f"are {', '.join(sorted(own)) or 'none'}"
            )
    keywords = {k: v for k, v in hyperparameter_values.items() if k in own}
    accepted = {p.name for p in _keywords(entry.constructor)}
    facts = {"structure": structure, "example_x": example_x, "example_y": example_y}
    if num_streams is not None and batch_mode == "shared":  # one system of B streams
        facts["example_x"] = repeat_streams(example_x, num_streams)  # None stays None
        facts["example_y"] = repeat_streams(example_y, num_streams)
    keywords.update({k: v for k, v in facts.items() if k in accepted})
    if num_streams is None:
        return entry.constructor(apply_fn, loss_fn, **keywords)
    checks.one_of("batch_mode", batch_mode, ("per_stream", "shared"))
    if batch_mode not in entry.batch_modes:
        raise checks.ConfigError(
            f"{algorithm} supports batch_mode {' or '.join(entry.batch_modes)}, not "
            f"{batch_mode!r}: treating the batch as one system would not keep its structure"
        )
    if batch_mode == "shared":
        return entry.constructor(*as_one_system(apply_fn, loss_fn), **keywords)
    return per_stream(entry.constructor(apply_fn, loss_fn, **keywords))
