"""Task streams: record formats, entropy rates, resumable positions, per-stream seeds."""

import collections
import math

import numpy as np
import pytest

from uorojax import tasks

SYMBOL_TASKS = {
    "anbn": lambda **kw: tasks.AnBn(2, 5, **kw),
    "brackets": lambda **kw: tasks.DistantBrackets(2, 4, 2, 5, **kw),
    "text": lambda **kw: tasks.CharText(**kw),
    "delayed_copy": lambda **kw: tasks.DelayedCopy(3, 4, **kw),
}


def _symbols(stream, length):
    xs, ys = stream.next_chunk(length)
    np.testing.assert_array_equal(xs[1:], ys[:-1])  # next-symbol prediction
    return np.concatenate([xs, ys[-1:]])


def test_anbn_records():
    text = tasks.AnBn(2, 5, seed=0).decode(_symbols(tasks.AnBn(2, 5, seed=0), 2000))
    records = text.split("\n")[:-1]
    for a_part, b_part in zip(records[0::2], records[1::2]):
        assert set(a_part) == {"a"} and set(b_part) == {"b"}
        assert len(a_part) == len(b_part) and 2 <= len(a_part) <= 5


def test_distant_brackets_records():
    stream = tasks.DistantBrackets(2, 4, 2, 5, seed=0)
    text = stream.decode(_symbols(stream, 3000))
    assert stream.vocab == '!"#$%[]\n'
    for record in text.split("\n")[:-1]:
        assert record[0] == "[" and record[3] == "]"  # [ + 2 saved + ]
        saved, rest = record[1:3], record[4:]
        filler, recall = rest[: len(rest) - 4], rest[len(rest) - 4 :]
        assert recall == f"[{saved}]" and 2 <= len(filler) <= 4
        assert not set(saved + filler) & set("[]\n")


def test_delayed_copy_targets_are_the_input_three_steps_back():
    xs, ys = tasks.DelayedCopy(3, 4, seed=0).next_chunk(100)
    np.testing.assert_array_equal(ys[3:], xs[:-3])


def _empirical_bits_per_char(stream, length, context):
    """The entropy rate from counts of the next symbol given the whole current record so
    far (a record's own history determines everything but its random choices)."""
    symbols = _symbols(stream, length)
    newline = stream.vocab.index("\n")
    counts = collections.defaultdict(collections.Counter)
    history = ()
    for s in symbols:
        counts[context(history)][s] += 1
        history = () if s == newline and context(history + (s,)) is None else history + (s,)
    total = sum(sum(c.values()) for c in counts.values())
    bits = 0.0
    for c in counts.values():
        n = sum(c.values())
        bits -= sum(v * math.log2(v / n) for v in c.values())
    return bits / total


def test_anbn_entropy_rate_matches_its_formula():
    stream = tasks.AnBn(2, 5, seed=3)

    def context(history):  # the record so far: the a's and b's after the last "b\n"
        text = "".join("ab\n"[s] for s in history)
        return None if text.endswith("b\n") else text

    measured = _empirical_bits_per_char(stream, 200_000, context)
    assert measured == pytest.approx(tasks.AnBn(2, 5).best_bits_per_char, rel=0.02)


def test_distant_brackets_entropy_rate_matches_its_formula():
    stream = tasks.DistantBrackets(1, 3, 1, 3, seed=4)
    newline = stream.vocab.index("\n")

    def context(history):
        return None if history and history[-1] == newline else history

    measured = _empirical_bits_per_char(stream, 300_000, context)
    assert measured == pytest.approx(tasks.DistantBrackets(1, 3, 1, 3).best_bits_per_char, rel=0.02)


@pytest.mark.parametrize("name", sorted(SYMBOL_TASKS))
@pytest.mark.parametrize("num_streams", [None, 3])
def test_get_and_set_state_resume_every_task_exactly(name, num_streams):
    stream = SYMBOL_TASKS[name](seed=5, num_streams=num_streams)
    stream.next_chunk(37)
    state = stream.get_state()
    expected = stream.next_chunk(101)
    fresh = SYMBOL_TASKS[name](seed=5, num_streams=num_streams)
    fresh.set_state(state)
    for a, b in zip(fresh.next_chunk(101), expected):
        np.testing.assert_array_equal(a, b)
    import json

    json.dumps(state)  # checkpoints store it as JSON


def test_influence_balancing_stream_state_round_trips():
    stream = tasks.influence_balancing().stream
    stream.set_state(stream.get_state())
    xs, ys = stream.next_chunk(4)
    assert xs.shape == (4, 1) and np.all(ys == 1.0)


@pytest.mark.parametrize("name", sorted(SYMBOL_TASKS))
def test_stream_b_of_a_batch_is_seeded_with_seed_and_b(name):
    batch = SYMBOL_TASKS[name](seed=7, num_streams=3)
    xs, _ = batch.next_chunk(200)
    for b in range(3):
        single = SYMBOL_TASKS[name](seed=7, num_streams=1)
        single._rngs = [np.random.Generator(np.random.PCG64([7, b]))]
        if name == "text":
            single._offsets = [int(single._rngs[0].integers(0, len(single._ids)))]
        np.testing.assert_array_equal(single.next_chunk(200)[0][:, 0], xs[:, b])
    assert not np.array_equal(xs[:, 0], xs[:, 1])  # the streams differ
    other = SYMBOL_TASKS[name](seed=8, num_streams=3).next_chunk(200)[0]
    assert not np.array_equal(other, xs)


def test_a_state_for_another_batch_size_is_refused():
    state = tasks.AnBn(seed=0, num_streams=2).get_state()
    with pytest.raises(ValueError, match="stream state holds 2 streams, this stream has 3"):
        tasks.AnBn(seed=0, num_streams=3).set_state(state)
