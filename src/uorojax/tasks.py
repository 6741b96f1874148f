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

import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from uorojax import checks
from uorojax.models import Model


class SymbolStream:
    """Base class: B independent symbol streams cut into next-symbol prediction chunks.

    Subclasses implement ``_record(rng) -> np.ndarray`` (one record of symbol ids) for
    record-based sources; the base class keeps per-stream pending symbols and RNGs.

    Args:
      seed: the batch's seed; stream ``b`` is seeded with ``(seed, b)``.
      num_streams: None for one stream without a stream axis, else the number of streams
        this object feeds (a stream axis even when 1).
      first_stream: the index in the batch of this object's first stream: it feeds streams
        ``first_stream .. first_stream + num_streams - 1`` (a process's block of a batch
        split over processes).
    """

    vocab: str = ""
    best_bits_per_char: float | None = None

    def __init__(self, seed: int, num_streams: int | None = None, first_stream: int = 0):
        if isinstance(first_stream, bool) or not isinstance(first_stream, (int, np.integer)):
            raise checks.ConfigError(f"first_stream must be an int, got {first_stream!r}")
        if first_stream < 0:
            raise checks.ConfigError(f"first_stream must be >= 0, got {first_stream}")
        if num_streams is not None:
            num_streams = checks.positive_int("num_streams", num_streams)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise checks.ConfigError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.num_streams = num_streams
        self.first_stream = int(first_stream)
        count = 1 if num_streams is None else num_streams
        self._rngs = [
            np.random.Generator(np.random.PCG64([self.seed, b]))
            for b in range(self.first_stream, self.first_stream + count)
        ]
        self._pending = [np.zeros(0, np.int32) for _ in range(count)]

    @property
    def vocab_size(self) -> int:
        """Number of symbols."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Symbol ids of ``text`` (every character must be in ``vocab``)."""
        index = {c: i for i, c in enumerate(self.vocab)}
        return np.array([index[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        """The characters of symbol ids."""
        return "".join(self.vocab[int(i)] for i in np.ravel(ids))

    def _record(self, rng: np.random.Generator, stream: int) -> np.ndarray:
        raise NotImplementedError

    def _fill(self, b: int, needed: int) -> None:
        parts = [self._pending[b]]
        have = len(self._pending[b])
        while have < needed:
            record = self._record(self._rngs[b], b)
            parts.append(record)
            have += len(record)
        self._pending[b] = np.concatenate(parts).astype(np.int32)

    def next_chunk(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``length`` inputs and targets: shapes ``(length,)`` or ``(length, B)``."""
        length = checks.positive_int("length", length)
        xs, ys = [], []
        for b in range(len(self._rngs)):
            self._fill(b, length + 1)
            symbols = self._pending[b]
            xs.append(symbols[:length])
            ys.append(symbols[1 : length + 1])
            self._pending[b] = symbols[length:]
        if self.num_streams is None:
            return xs[0], ys[0]
        return np.stack(xs, axis=1), np.stack(ys, axis=1)

    def example(self) -> tuple[np.ndarray, np.ndarray]:
        """One step's input and target (zeros), without advancing the stream."""
        shape = () if self.num_streams is None else (self.num_streams,)
        return np.zeros(shape, np.int32), np.zeros(shape, np.int32)

    def get_state(self) -> dict:
        """JSON-serialisable stream position."""
        return {
            "rngs": [r.bit_generator.state for r in self._rngs],
            "pending": [p.tolist() for p in self._pending],
        }

    def set_state(self, state: dict) -> None:
        """Restores a position saved by :meth:`get_state`."""
        if len(state["rngs"]) != len(self._rngs):
            raise ValueError(
                f"stream state holds {len(state['rngs'])} streams, "
                f"this stream has {len(self._rngs)}"
            )
        for rng, s in zip(self._rngs, state["rngs"]):
            rng.bit_generator.state = s
        self._pending = [np.asarray(p, np.int32) for p in state["pending"]]


class AnBn(SymbolStream):
    """anbn(k, l): records ``a`` × n, newline, ``b`` × n, newline with n uniform on [k, l].

    Vocabulary ``"ab\\n"``. The entropy rate is ``log2(l-k+1) / (2 E[n] + 2)`` bits per
    character, about 0.143 for the default (1, 32).
    """

    vocab = "ab\n"

    def __init__(
        self,
        k: int = 1,
        l: int = 32,  # noqa: E741
        *,
        seed: int = 0,
        num_streams=None,
        first_stream=0,
    ):
        self.k = checks.positive_int("k", k)
        self.l = checks.positive_int("l", l)
        if self.l < self.k:
            raise checks.ConfigError(f"anbn needs k <= l, got k={k}, l={l}")
        super().__init__(seed, num_streams, first_stream)
        self.best_bits_per_char = math.log2(self.l - self.k + 1) / (self.k + self.l + 2)

    def _record(self, rng, stream):
        n = int(rng.integers(self.k, self.l + 1))
        return np.concatenate([np.zeros(n), [2], np.ones(n), [2]]).astype(np.int32)


class DistantBrackets(SymbolStream):
    """Distant brackets (min, max, save, alphabet).

    Each record is ``[`` + ``save`` random characters + ``]``, a filler of random
    characters whose length is uniform on [min, max], then ``[`` + the same saved
    characters + ``]`` + newline. Random characters come from ``alphabet`` symbols
    starting at ASCII 33 (``!``); the bracket characters are never drawn. The vocabulary
    is those symbols followed by ``[``, ``]`` and newline. The entropy rate is
    ``((save + E[f]) log2(alphabet) + log2(max-min+1)) / (2 save + 5 + E[f])``.
    """

    def __init__(
        self,
        min_filler: int = 5,
        max_filler: int = 5,
        save: int = 1,
        alphabet: int = 10,
        *,
        seed: int = 0,
        num_streams=None,
        first_stream=0,
    ):
        if min_filler < 0 or max_filler < min_filler:
            raise checks.ConfigError(
                f"distant brackets needs 0 <= min <= max, got min={min_filler}, max={max_filler}"
            )
        self.min_filler, self.max_filler = int(min_filler), int(max_filler)
        self.save = checks.positive_int("save", save)
        self.alphabet = checks.positive_int("alphabet", alphabet)
        symbols = [chr(c) for c in range(33, 127) if chr(c) not in "[]"]
        if self.alphabet > len(symbols):
            raise checks.ConfigError(f"alphabet must be <= {len(symbols)}, got {alphabet}")
        self.vocab = "".join(symbols[: self.alphabet]) + "[]\n"
        super().__init__(seed, num_streams, first_stream)
        mean_filler = (self.min_filler + self.max_filler) / 2
        bits = (self.save + mean_filler) * math.log2(self.alphabet) + math.log2(
            self.max_filler - self.min_filler + 1
        )
        self.best_bits_per_char = bits / (2 * self.save + 5 + mean_filler)

    def _record(self, rng, stream):
        a = self.alphabet
        open_, close, newline = a, a + 1, a + 2
        saved = rng.integers(0, a, self.save)
        filler = rng.integers(0, a, int(rng.integers(self.min_filler, self.max_filler + 1)))
        return np.concatenate(
            [[open_], saved, [close], filler, [open_], saved, [close, newline]]
        ).astype(np.int32)


def default_text() -> str:
    """English prose that ships with Python: the help topics of ``pydoc_data``."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


class CharText(SymbolStream):
    """Character-level text from a file, or Python's own help texts by default.

    The vocabulary is the sorted set of characters of the text. Stream b starts at an
    offset drawn from ``(seed, b)`` and wraps around at the end of the text. The entropy
    rate of natural text is unknown (``best_bits_per_char`` is None).

    Args:
      path: a UTF-8 text file; None for :func:`default_text`.
    """

    def __init__(self, path: str | None = None, *, seed: int = 0, num_streams=None, first_stream=0):
        if path is None:
            text = default_text()
        else:
            if not os.path.isfile(path):
                raise checks.ConfigError(f"text file {path!r} does not exist")
            with open(path, "rb") as f:
                raw = f.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise checks.ConfigError(
                    f"text file {path!r} is not valid UTF-8 (byte {err.start}): {err.reason}"
                ) from err
        if len(text) < 2:
            raise checks.ConfigError(
                f"text {'file ' + repr(path) if path else ''} is empty or has fewer than 2 "
                "characters"
            )
        self.vocab = "".join(sorted(set(text)))
        self.path = path
        self._ids = self.encode(text)
        super().__init__(seed, num_streams, first_stream)
        self._offsets = [int(r.integers(0, len(self._ids))) for r in self._rngs]

    def _record(self, rng, stream):
        start = self._offsets[stream]
        piece = self._ids[start : start + 65536]
        self._offsets[stream] = (start + len(piece)) % len(self._ids)
        return piece

    def get_state(self):
        return {**super().get_state(), "offsets": list(self._offsets)}

    def set_state(self, state):
        super().set_state(state)
        self._offsets = list(state["offsets"])


class DelayedCopy(SymbolStream):
    """Copy with delay: ``x_t`` uniform on ``vocab_size`` symbols, ``y_t = x_{t-delay}``.

    A memory test: predicting ``y_t`` needs ``delay`` steps of memory, which truncated
    BPTT with ``truncation <= delay`` cannot learn to keep. Chance level is
    ``log(vocab_size)`` nats; perfect recall is 0.
    """

    def __init__(
        self,
        delay: int = 3,
        vocab_size: int = 4,
        *,
        seed: int = 0,
        num_streams=None,
        first_stream=0,
    ):
        self.delay = checks.positive_int("delay", delay)
        self.vocab = "".join(
            chr(ord("a") + i) for i in range(checks.positive_int("vocab_size", vocab_size))
        )
        super().__init__(seed, num_streams, first_stream)
        self.best_bits_per_char = 0.0

    def _record(self, rng, stream):
        return rng.integers(0, self.vocab_size, 4096).astype(np.int32)

    def next_chunk(self, length):
        length = checks.positive_int("length", length)
        xs, ys = [], []
        for b in range(len(self._rngs)):
            # pending holds the last `delay` symbols already emitted, then fresh ones.
            if len(self._pending[b]) == 0:
                self._pending[b] = np.zeros(self.delay, np.int32)
            self._fill(b, self.delay + length)
            symbols = self._pending[b]
            xs.append(symbols[self.delay : self.delay + length])
            ys.append(symbols[:length])
            self._pending[b] = symbols[length:]
        if self.num_streams is None:
            return xs[0], ys[0]
        return np.stack(xs, axis=1), np.stack(ys, axis=1)


# ----------------------------------------------------------------------------- copy

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
    # What the runner logs besides the loss: per step, the share of recall targets and
    # of recall targets predicted right; per row, the loss per recall symbol in bits and
    # the recall accuracy (ratios of the rows' means).
    target_metrics = {"recall": recall_fraction, "recall_correct": recall_correct}
    ratio_metrics = {
        "recall_bits_per_char": ("bits_per_char", "recall"),
        "recall_accuracy": ("recall_correct", "recall"),
    }

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


# ----------------------------------------------------------------------------- influence


class InfluenceBalancing(NamedTuple):
    """The influence-balancing problem: a model, its loss, start point and stream.

    Attributes:
      model: linear system ``s_t = A s_{t-1} + θ σ``, output ``s_t[0]``.
      loss_fn: ``0.5 (s_t[0] - 1)²``.
      params: ``{"theta": θ0}``.
      state0: ``s_0`` (all ones).
      stream: a stream of dummy inputs and the constant target 1.
      fixed_point: the θ at which the loss gradient vanishes in the limit.
    """

    model: Model
    loss_fn: Callable
    params: Any
    state0: Any
    stream: Any
    fixed_point: float


class ConstantStream:
    """A stream of zero inputs (shape ``(1,)``) and constant targets."""

    def __init__(self, target: float, num_streams: int | None = None, dtype=np.float32):
        self.target, self.num_streams, self.dtype = target, num_streams, dtype

    def next_chunk(self, length):
        """``length`` zero inputs of shape ``(1,)`` and constant targets."""
        shape = (length,) if self.num_streams is None else (length, self.num_streams)
        return np.zeros((*shape, 1), self.dtype), np.full(shape, self.target, self.dtype)

    def example(self):
        """One step's input and target."""
        x, y = self.next_chunk(1)
        return x[0], y[0]

    def get_state(self):
        return {}

    def set_state(self, state):
        del state


def influence_balancing(
    n: int = 23, num_positive: int = 10, theta0: float = 0.5, *, dtype=jnp.float32, num_streams=None
) -> InfluenceBalancing:
    """Influence balancing (Tallec & Ollivier 2017): θ helps short-term, hurts long-term.

    ``A = 0.5 I + 0.5 (superdiagonal)``, ``σ`` has ``num_positive`` entries +1 then -1,
    θ is a scalar. Unrolled, ``s_t[0] → Σ_k (A^k σ)[0] θ``: the first unit sees θ's
    positive direct effect at once and the negative effect of the later units with a
    delay, so truncated BPTT follows the wrong sign. The target is 1 and the fixed point
    is ``θ* = 1 / Σ_j [(I - A)^{-1} σ]_0`` (-1/6 for the defaults).
    """
    n = checks.positive_int("n", n)
    if not 0 <= num_positive <= n:
        raise checks.ConfigError(f"num_positive must be in [0, n], got {num_positive}")
    a = 0.5 * np.eye(n) + 0.5 * np.eye(n, k=1)
    sigma = np.concatenate([np.ones(num_positive), -np.ones(n - num_positive)])
    steady = np.linalg.solve(np.eye(n) - a, sigma)[0]
    a_j, sigma_j = jnp.asarray(a, dtype), jnp.asarray(sigma, dtype)

    def apply(params, s, x):
        del x
        s = a_j @ s + params["theta"] * sigma_j
        return s, s[0]

    def loss_fn(output, y):
        return 0.5 * jnp.square(output - y)

    return InfluenceBalancing(
        model=Model(
            lambda key, example_x=None: ({"theta": jnp.asarray(theta0, dtype)}, jnp.ones(n, dtype)),
            apply,
        ),
        loss_fn=loss_fn,
        params={"theta": jnp.asarray(theta0, dtype)},
        state0=jnp.ones(n, dtype),
        stream=ConstantStream(1.0, num_streams, np.dtype(dtype)),
        fixed_point=float(1.0 / steady),
    )


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
