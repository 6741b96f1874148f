"""Tasks: infinite, seeded streams produced in chunks, and the paper's influence balancing.

:data:`TASKS` (:mod:`~uorojax.tasks.registry`) is the table a config's ``task`` names:
each entry declares the task's stream, its loss, its metrics, its curriculum and its
floors.

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

from uorojax.tasks.copy import IGNORE_LABEL, Copy, recall_mask, recall_mean
from uorojax.tasks.influence_balancing import (
    ConstantStream,
    InfluenceBalancing,
    influence_balancing,
    influence_loss,
    influence_model,
    influence_stream,
)
from uorojax.tasks.registry import TASKS, Floors, TaskEntry, make_stream
from uorojax.tasks.stream import SymbolStream
from uorojax.tasks.symbols import AnBn, CharText, DelayedCopy, DistantBrackets, default_text

SYMBOL_TASKS = {name: entry.stream for name, entry in TASKS.items() if entry.model is None}
"""The tasks of symbol streams (those without a model of their own) -> their stream class."""

__all__ = [
    "TASKS",
    "AnBn",
    "CharText",
    "ConstantStream",
    "Copy",
    "DelayedCopy",
    "DistantBrackets",
    "Floors",
    "IGNORE_LABEL",
    "InfluenceBalancing",
    "SYMBOL_TASKS",
    "SymbolStream",
    "TaskEntry",
    "default_text",
    "influence_balancing",
    "influence_loss",
    "influence_model",
    "influence_stream",
    "make_stream",
    "recall_mask",
    "recall_mean",
]
