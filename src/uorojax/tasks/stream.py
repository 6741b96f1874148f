"""The stream protocol of the symbol tasks: seeded, resumable, produced in chunks, and
split into blocks of streams for several processes (see :mod:`uorojax.tasks`)."""

from __future__ import annotations

import numpy as np

from uorojax import checks


class SymbolStream:
    """Base class: B independent symbol streams cut into next-symbol prediction chunks.

    Subclasses implement ``_record(rng) -> np.ndarray`` (one record of symbol ids) for
    record-based sources; the base class keeps per-stream pending symbols and RNGs.
    ``best_bits_per_char`` is the source's entropy rate and ``no_memory_bits_per_char``
    the best rate of a model that has lost what the task asks it to carry, where known
    (docs/tasks.md derives both).

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
    no_memory_bits_per_char: float | None = None

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
