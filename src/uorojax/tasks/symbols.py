"""Character tasks: anbn, distant brackets, text and the delayed copy, as streams of
next-symbol prediction."""

from __future__ import annotations

import math
import os

import numpy as np

from uorojax import checks
from uorojax.tasks.stream import SymbolStream


class AnBn(SymbolStream):
    """anbn(k, l): records ``a`` × n, newline, ``b`` × n, newline with n uniform on [k, l].

    Vocabulary ``"ab\\n"``. The entropy rate is ``log2(l-k+1) / (2 E[n] + 2)`` bits per
    character, about 0.143 for the default (1, 32); a model that has forgotten n when the
    ``b``s start pays the same again (``no_memory_bits_per_char``, 0.286).
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
        self.no_memory_bits_per_char = 2 * self.best_bits_per_char

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
    ``((save + E[f]) log2(alphabet) + log2(max-min+1)) / (2 save + 5 + E[f])``; without
    the saved characters at the second bracket their copy costs ``save log2(alphabet)``
    bits more a record (``no_memory_bits_per_char``).
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
        length = 2 * self.save + 5 + mean_filler
        self.best_bits_per_char = bits / length
        self.no_memory_bits_per_char = (bits + self.save * math.log2(self.alphabet)) / length

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
    ``log2(vocab_size)`` bits (``no_memory_bits_per_char``); perfect recall is 0.
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
        self.no_memory_bits_per_char = math.log2(self.vocab_size)

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
