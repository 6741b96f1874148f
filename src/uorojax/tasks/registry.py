"""The task table: what a config's ``task`` names, as
:data:`~uorojax.estimators.registry.ESTIMATORS` is for its ``algorithm``.

Every task is a :class:`TaskEntry`: its stream, its loss, how its losses read (bits per
character or plain), the metrics it adds to a run's rows, its curriculum and the floors a
run's loss is judged against. The runner reads these and nothing else about a task: a new
task is a stream class and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from uorojax import checks
from uorojax.models.losses import softmax_cross_entropy
from uorojax.models.model import Model
from uorojax.tasks.copy import RATIO_METRICS, TARGET_METRICS, Copy
from uorojax.tasks.influence_balancing import influence_loss, influence_model, influence_stream
from uorojax.tasks.symbols import AnBn, CharText, DelayedCopy, DistantBrackets


class Floors(NamedTuple):
    """The two losses a run on a task is judged against (docs/tasks.md).

    Attributes:
      metric: the logged metric they bound (``"bits_per_char"``, or the copy task's
        ``"recall_bits_per_char"``).
      optimum: the best achievable value (the source's entropy rate).
      no_memory: the best value of a model without the memory the task asks for.
    """

    metric: str
    optimum: float | None
    no_memory: float | None


class TaskEntry(NamedTuple):
    """One task a config can name.

    Attributes:
      stream: ``(*, seed, num_streams, first_stream, **task_args) -> stream`` (the
        protocol of :class:`~uorojax.tasks.SymbolStream`).
      loss: the step loss ``loss_fn(output, y) -> scalar``.
      bits: the loss is a cross-entropy in nats: rows and running losses in bits per
        character.
      model: ``(**task_args) -> Model``, for a task that brings its own model; None: the
        config's ``model`` (:data:`uorojax.models.registry.MODELS`), reading the
        stream's symbols.
      target_metrics: ``{name: (output, y) -> scalar}`` logged at every step.
      ratio_metrics: ``{name: (numerator, denominator)}``: row columns that are ratios
        of two metrics' means over the row.
      param_metrics: ``{name: params -> scalar}`` logged after every update and
        reported at the end (``final_<name>`` in ``summary.json``).
      curriculum: ``(stream, chunk metrics) -> per-step metrics``: sees each trained
        chunk's metrics, may make the task harder, and reports what it did.
      floors: ``stream -> Floors`` where the task knows them.
    """

    stream: Callable[..., Any]
    loss: Callable[[Any, Any], Any]
    bits: bool
    model: Callable[..., Model] | None = None
    target_metrics: Mapping[str, Callable] = {}
    ratio_metrics: Mapping[str, tuple[str, str]] = {}
    param_metrics: Mapping[str, Callable] = {}
    curriculum: Callable[[Any, dict], dict] | None = None
    floors: Callable[[Any], Floors] | None = None


def symbol_floors(stream) -> Floors:
    """The entropy floors of a next-symbol task, in bits per character."""
    return Floors("bits_per_char", stream.best_bits_per_char, stream.no_memory_bits_per_char)


def recall_floors(stream: Copy) -> Floors:
    """The copy task's floors, per recall symbol: 0 and log2(vocab)."""
    return Floors("recall_bits_per_char", stream.best_recall_bits, stream.recall_floor_bits)


def _symbols(stream_class) -> TaskEntry:
    return TaskEntry(stream_class, softmax_cross_entropy, bits=True, floors=symbol_floors)


TASKS: dict[str, TaskEntry] = {
    "anbn": _symbols(AnBn),
    "distant_brackets": _symbols(DistantBrackets),
    "text": _symbols(CharText),
    "delayed_copy": _symbols(DelayedCopy),
    "copy": TaskEntry(
        Copy,
        softmax_cross_entropy,
        bits=True,
        target_metrics=TARGET_METRICS,
        ratio_metrics=RATIO_METRICS,
        curriculum=Copy.curriculum_metrics,
        floors=recall_floors,
    ),
    "influence_balancing": TaskEntry(
        influence_stream,
        influence_loss,
        bits=False,
        model=influence_model,
        param_metrics={"theta": lambda params: params["theta"]},
    ),
}
"""A config's ``task`` -> its :class:`TaskEntry`."""


def make_stream(
    name: str, *, seed: int, num_streams: int | None = None, first_stream: int = 0, **task_args
) -> Any:
    """The stream of a task of :data:`TASKS` with its arguments; ``first_stream``: see
    :class:`~uorojax.tasks.SymbolStream`.

    Raises:
      ConfigError: for an unknown task or arguments it does not take.

    Example::

      # streams 2 and 3 of a batch of 4, as one process of two feeds them
      block = uorojax.tasks.make_stream("anbn", seed=0, num_streams=2, first_stream=2)
    """
    checks.one_of("task", name, tuple(TASKS))
    try:
        return TASKS[name].stream(
            **task_args, seed=seed, num_streams=num_streams, first_stream=first_stream
        )
    except TypeError as err:
        raise checks.ConfigError(f"bad arguments for task {name!r}: {err}") from err


def floors(name: str, **task_args) -> Floors | None:
    """A task's floors for its arguments (None where it does not know them).

    Example::

      uorojax.tasks.registry.floors("anbn", k=1, l=32)  # Floors('bits_per_char', 0.143, 0.286)
    """
    entry = TASKS[checks.one_of("task", name, tuple(TASKS))]
    return None if entry.floors is None else entry.floors(make_stream(name, seed=0, **task_args))
