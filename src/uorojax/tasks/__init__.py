"""Tasks: infinite, seeded streams produced in chunks, and the paper's influence balancing.

Every stream has ``next_chunk(length) -> (xs, ys)`` (numpy arrays with a leading time
axis, then a stream axis when ``num_streams`` is set), ``get_state()`` returning a
JSON-serialisable position (RNG states and pending symbols) and ``set_state(state)``.
A stream restored from its state continues exactly where it left off, so checkpoints
can resume a run mid-stream. Streams are reproducible from their seed; stream ``b`` of
a batch is seeded with ``(seed, b)``. A stream object may hold a block of a larger batch
(``first_stream``): its streams are ``first_stream, first_stream + 1, ...``, the same as
those of the whole batch, so that several processes can each feed their own block.

Character tasks predict the next symbol: ``x_t`` is symbol t, ``y_t`` symbol t+1, both
integer ids in ``[0, vocab_size)``. ``vocab`` lists the characters, ``best_bits_per_char``
is the entropy rate of the source where it is known.

The copy task (:class:`Copy`) is not next-symbol prediction: its targets are the ignore
label ``IGNORE_LABEL = -1`` outside the recall steps (:func:`recall_mask`), on which
:func:`~uorojax.softmax_cross_entropy` is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uorojax import checks
from uorojax.tasks.copy import IGNORE_LABEL, Copy, recall_mask, recall_mean
from uorojax.tasks.influence_balancing import (
    ConstantStream,
    InfluenceBalancing,
    influence_balancing,
)
from uorojax.tasks.stream import SymbolStream
from uorojax.tasks.symbols import AnBn, CharText, DelayedCopy, DistantBrackets, default_text

SYMBOL_TASKS = {
    "anbn": AnBn,
    "distant_brackets": DistantBrackets,
    "text": CharText,
    "delayed_copy": DelayedCopy,
    "copy": Copy,
}


def make_stream(
    name: str, *, seed: int, num_streams=None, first_stream: int = 0, **kwargs
) -> SymbolStream:
    """Builds a symbol stream by name (``anbn``, ``distant_brackets``, ``text``,
    ``delayed_copy``, ``copy``) with task-specific keyword arguments; ``first_stream``: see
    :class:`SymbolStream`.

    Example::

      # streams 2 and 3 of a batch of 4, as one process of two feeds them
      block = uorojax.tasks.make_stream("anbn", seed=0, num_streams=2, first_stream=2)
    """
    checks.one_of("task", name, tuple(SYMBOL_TASKS))
    try:
        return SYMBOL_TASKS[name](
            **kwargs, seed=seed, num_streams=num_streams, first_stream=first_stream
        )
    except TypeError as err:
        raise checks.ConfigError(f"bad arguments for task {name!r}: {err}") from err


TASKS: dict[str, Callable[..., Any]] = {**SYMBOL_TASKS, "influence_balancing": influence_balancing}
"""A config's ``task`` name -> its stream (or, for influence balancing, its whole problem)."""

__all__ = [
    "AnBn",
    "CharText",
    "ConstantStream",
    "Copy",
    "DelayedCopy",
    "DistantBrackets",
    "IGNORE_LABEL",
    "InfluenceBalancing",
    "SymbolStream",
    "default_text",
    "influence_balancing",
    "make_stream",
    "recall_mask",
    "recall_mean",
]
