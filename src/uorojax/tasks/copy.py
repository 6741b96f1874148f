"""The copy task: episodes of symbols, a delimiter and their recall, with a
curriculum on the length."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from uorojax import checks
from uorojax.tasks.stream import SymbolStream

IGNORE_LABEL = -1
"""The target of a step with nothing to predict; its cross-entropy is 0."""


def recall_mask(ys) -> jax.Array:
    """True at the steps whose target is to be predicted (a label ``>= 0``), False at
    ignored steps (:data:`IGNORE_LABEL`). Works on any shape (time, streams, ...) and
    under ``jax.jit``.

    Example::

      xs, ys = stream.next_chunk(64)
      num_recall = int(tasks.recall_mask(ys).sum())
    """
    return jnp.asarray(ys) >= 0


def recall_mean(values, ys) -> jax.Array:
    """The mean of per-step ``values`` (shaped like ``ys``) over the recall steps
    (:func:`recall_mask`); 0 when there are none.

    Example::

      recall_nats = tasks.recall_mean(info.loss, ys)  # losses of the chunk's steps
      recall_bits = recall_nats / math.log(2)
    """
    mask = recall_mask(ys)
    total = jnp.sum(jnp.where(mask, jnp.asarray(values), 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1)


def recall_fraction(output, y) -> jax.Array:
    """The fraction of a step's targets that are recall targets (over its streams)."""
    del output
    return jnp.mean(recall_mask(y).astype(jnp.float32))


def recall_correct(output, y) -> jax.Array:
    """The fraction of a step's targets that are recall targets predicted right (the
    output's most likely symbol), over its streams."""
    return jnp.mean((jnp.argmax(output, axis=-1) == y) & recall_mask(y))


# What a run logs besides the loss on the copy task (its entry in
# :data:`uorojax.tasks.registry.TASKS` declares them): per step, the share of recall
# targets and of recall targets predicted right; per row, the loss per recall symbol in
# bits and the recall accuracy (ratios of the rows' means).
TARGET_METRICS = {"recall": recall_fraction, "recall_correct": recall_correct}
RATIO_METRICS = {
    "recall_bits_per_char": ("bits_per_char", "recall"),
    "recall_accuracy": ("recall_correct", "recall"),
}


class Copy(SymbolStream):
    r"""The copy task: store ``length`` random symbols, then recall them in order.

    An infinite stream of episodes of ``2 length + 1`` steps. Inputs: ``length`` symbols
    drawn uniformly from ``vocab`` data symbols, the delimiter, then ``length`` go
    symbols; targets: :data:`IGNORE_LABEL` for the first ``length + 1`` steps, then the
    stored symbols in order (the recall steps). The vocabulary is the data symbols, then
    the delimiter (id ``vocab``) and the go symbol (id ``vocab + 1``).

    Without memory a recall step costs ``recall_floor_bits = log2(vocab)`` bits; perfect
    recall costs ``best_recall_bits = 0``. ``best_bits_per_char`` is None: the loss of
    the ignored steps is 0, so a mean over all steps is not a rate of the source
    (:func:`recall_mean` takes the recall steps only).

    With ``curriculum=True`` :meth:`advance_curriculum` lengthens the episodes by one
    whenever the recent recall loss is under ``threshold_bits``, the curriculum of the
    KF-RTRL (Mujika et al. 2018), OK (Benzing et al. 2019) and SnAp (Menick et al. 2021)
    papers (0.15 bits in the first two). A new length applies
    to the episodes generated after the change; an episode under way keeps its length.
    ``length`` is part of :meth:`get_state`.

    Args:
      length: symbols to store (the starting length with a curriculum).
      vocab: number of data symbols (at most 62).
      curriculum: whether :meth:`advance_curriculum` may lengthen the episodes.
      threshold_bits: recall loss (bits per recall step) under which it does.
      max_length: the longest length it reaches (None: no bound).
      seed, num_streams, first_stream: as for every stream; stream b is seeded
        ``(seed, b)``.

    Example::

      stream = uorojax.tasks.Copy(1, 4, curriculum=True, max_length=20)
      xs, ys = stream.next_chunk(64)
      recall_bits = float(uorojax.tasks.recall_mean(losses, ys)) / math.log(2)
      if stream.advance_curriculum(recall_bits):
          print("length", stream.length)
    """

    SYMBOLS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    recall_mask = staticmethod(recall_mask)
    best_recall_bits = 0.0

    def __init__(
        self,
        length: int = 1,
        vocab: int = 4,
        *,
        curriculum: bool = False,
        threshold_bits: float = 0.15,
        max_length: int | None = None,
        seed: int = 0,
        num_streams: int | None = None,
        first_stream: int = 0,
    ):
        self.length = checks.positive_int("length", length)
        self.num_symbols = checks.positive_int("vocab", vocab)
        if self.num_symbols > len(self.SYMBOLS):
            raise checks.ConfigError(f"vocab must be <= {len(self.SYMBOLS)}, got {vocab}")
        if max_length is not None:
            max_length = checks.positive_int("max_length", max_length)
            if max_length < self.length:
                raise checks.ConfigError(
                    f"max_length must be >= length, got max_length={max_length}, length={length}"
                )
        self.max_length = max_length
        self.curriculum = bool(curriculum)
        self.threshold_bits = checks.non_negative_float("threshold_bits", threshold_bits)
        self.vocab = self.SYMBOLS[: self.num_symbols] + ":."
        self.recall_floor_bits = math.log2(self.num_symbols)
        super().__init__(seed, num_streams, first_stream)
        self._pending_targets = [np.zeros(0, np.int32) for _ in self._rngs]

    @property
    def delimiter(self) -> int:
        """Id of the delimiter that ends the symbols to store."""
        return self.num_symbols

    @property
    def go(self) -> int:
        """Id of the input of every recall step."""
        return self.num_symbols + 1

    def episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One episode's inputs and targets at the current ``length``."""
        n = self.length
        data = rng.integers(0, self.num_symbols, n)
        xs = np.concatenate([data, [self.delimiter], np.full(n, self.go)])
        ys = np.concatenate([np.full(n + 1, IGNORE_LABEL), data])
        return xs.astype(np.int32), ys.astype(np.int32)

    def next_chunk(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``length`` inputs and targets: shapes ``(length,)`` or ``(length, B)``."""
        length = checks.positive_int("length", length)
        xs, ys = [], []
        for b, rng in enumerate(self._rngs):
            inputs, targets = [self._pending[b]], [self._pending_targets[b]]
            have = len(self._pending[b])
            while have < length:
                x, y = self.episode(rng)
                inputs.append(x)
                targets.append(y)
                have += len(x)
            inputs, targets = np.concatenate(inputs), np.concatenate(targets)
            xs.append(inputs[:length])
            ys.append(targets[:length])
            self._pending[b], self._pending_targets[b] = inputs[length:], targets[length:]
        if self.num_streams is None:
            return xs[0], ys[0]
        return np.stack(xs, axis=1), np.stack(ys, axis=1)

    def advance_curriculum(self, recent_recall_bits: float) -> bool:
        """Lengthens the episodes by one when the curriculum is on, the recent recall loss
        (bits per recall step) is under ``threshold_bits`` and ``max_length`` is not
        reached. Returns whether the length changed."""
        if not self.curriculum or not recent_recall_bits < self.threshold_bits:
            return False
        if self.max_length is not None and self.length >= self.max_length:
            return False
        self.length += 1
        return True

    def curriculum_metrics(self, metrics: dict) -> dict:
        """After a chunk the runner trained on: the chunk's recall loss (bits per recall
        step, over the steps applied) steps the curriculum (:meth:`advance_curriculum`);
        returns the ``length`` new episodes had during the chunk, per step.

        Args:
          metrics: the chunk's per-step ``loss`` (nats, mean over streams), ``recall``
            (share of recall targets) and ``skipped`` (the trainer's).
        """
        applied = ~np.asarray(metrics["skipped"], bool)
        recall = float(np.sum(np.asarray(metrics["recall"], np.float64)[applied]))
        length = self.length
        if recall > 0:
            nats = float(np.sum(np.asarray(metrics["loss"], np.float64)[applied])) / recall
            self.advance_curriculum(nats / math.log(2.0))
        return {"length": np.full(len(applied), float(length))}

    def get_state(self) -> dict:
        return {
            **super().get_state(),
            "pending_targets": [p.tolist() for p in self._pending_targets],
            "length": self.length,
        }

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._pending_targets = [np.asarray(p, np.int32) for p in state["pending_targets"]]
        self.length = checks.positive_int("length", state["length"])
