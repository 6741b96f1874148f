"""One registry: the names that configs, the runner, the benchmark and the tests use.

``ESTIMATORS`` maps a config's ``algorithm`` to an :class:`EstimatorEntry`: the
estimator's constructor (``uorojax.uoro``, ...) and the batch modes that make sense for
it. The constructor declares the estimator's hyperparameters, once: every keyword after
``apply_fn`` and ``loss_fn``, with its type annotation and default, except the facts a
model and its stream provide (:data:`MODEL_FACTS`). A run's config holds them in the
estimator's own block (``c.ok.rank``, ``--config.ok.rank=4``), method strings name them
(``"ok:rank=4"``, :func:`parse_method`), and the command line's checks, the benchmark
and the reproduction learn them from there (:func:`hyperparameters`); values are read by
their annotations (:func:`parse_value`, :func:`check_value`) and the constructor checks
their ranges. Models and tasks have tables of their own (``uorojax.models.registry``,
``uorojax.tasks.registry``).

A new estimator is one file under ``uorojax/estimators/`` and one line here;
``tests/test_protocol.py`` then checks it against the protocol.
"""

from __future__ import annotations

import functools
import inspect
import types
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
    """A hyperparameter as its constructor declares it.

    Attributes:
      name: the keyword.
      type: its annotation (``int``, ``float``, ``str``, ``bool``, a ``Literal`` of
        choices, or an optional or union of these): :func:`parse_value` and
        :func:`check_value` read values by it.
      default: its default.
    """

    name: str
    type: Any
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


def hyperparameter_defaults(algorithm: str) -> dict[str, Any]:
    """One estimator's hyperparameters with their defaults (its block of a run's config).

    Example::

      uorojax.registry.hyperparameter_defaults("ok")  # {'rank': 1, 'eps': 1e-07}
    """
    return {h.name: h.default for h in hyperparameters(algorithm)}


def describe_type(annotation: Any) -> str:
    """An annotation in words, for error messages: ``an int``, ``one of 'sum', 'mean'``,
    ``an int or None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else describe_type(a) for a in args)
    names = {int: "an int", float: "a float", bool: "a bool", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _text_to(annotation: Any, text: str) -> Any:
    """``text`` read as a plain type (int, float, bool, str); ValueError if it is not one."""
    if annotation is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    return annotation(text)


def _convert(name: str, value: Any, annotation: Any, from_text: bool) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
            if from_text and isinstance(value, str) and value == str(choice):
                return choice
    elif origin in (typing.Union, types.UnionType):
        none_text = from_text and isinstance(value, str) and value.lower() == "none"
        if type(None) in args and (value is None or none_text):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(name, value, option, from_text)
            except checks.ConfigError:
                continue
    elif annotation is Any:
        return value
    elif annotation not in (int, float, bool, str):
        raise TypeError(
            f"hyperparameter {name!r} is annotated {annotation!r}: use int, float, bool, "
            "str, a Literal, or an optional or union of these"
        )
    elif from_text and isinstance(value, str):
        try:
            return _text_to(annotation, value)
        except ValueError:
            pass
    elif isinstance(value, bool) == (annotation is bool) and (
        isinstance(value, annotation) or (annotation is float and isinstance(value, int))
    ):
        return float(value) if annotation is float else value
    raise checks.ConfigError(f"{name} must be {describe_type(annotation)}, got {value!r}")


def parse_value(name: str, text: str, annotation: Any) -> Any:
    """A hyperparameter's value read from text (a method string, the command line) by
    its annotation.

    Raises:
      ConfigError: naming the hyperparameter and what it must be.

    Example::

      parse_value("reduction", "mean", Literal["sum", "mean"])  # 'mean'
      parse_value("rank", "none", int | None)  # None
    """
    return _convert(name, text, annotation, from_text=True)


def check_value(name: str, value: Any, annotation: Any) -> Any:
    """A hyperparameter's value from Python (a config file) checked against its
    annotation; an int is taken for a float.

    Raises:
      ConfigError: naming the hyperparameter and what it must be.

    Example::

      check_value("eps", 1, float)  # 1.0
    """
    return _convert(name, value, annotation, from_text=False)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """An estimator named with its hyperparameters, as configs and the command line
    write it: ``"algorithm"`` or ``"algorithm:name=value,name=value"``.

    Values are read by the types the constructor declares (:func:`parse_value`).

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
            values[name] = parse_value(name, text, declared[name].type)
        except checks.ConfigError as err:
            raise checks.ConfigError(f"{spec!r}: {err}") from None
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
      **hyperparameter_values: this estimator's hyperparameters by name
        (:func:`hyperparameters`); a name it does not take is refused, so that nothing
        is set that silently does nothing.

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
    for name, value in hyperparameter_values.items():
        if name not in own:
            raise checks.ConfigError(
                f"{algorithm} does not take {name} (got {value!r}); its hyperparameters "
                f"are {', '.join(sorted(own)) or 'none'}"
            )
    keywords = dict(hyperparameter_values)
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
