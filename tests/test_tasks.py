"""Task streams: record formats, entropy rates, resumable positions, per-stream seeds."""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import uorojax
from uorojax import ConfigError, tasks

SYMBOL_TASKS = {
    "anbn": lambda **kw: tasks.AnBn(2, 5, **kw),
    "brackets": lambda **kw: tasks.DistantBrackets(2, 4, 2, 5, **kw),
    "text": lambda **kw: tasks.CharText(**kw),
    "delayed_copy": lambda **kw: tasks.DelayedCopy(3, 4, **kw),
    "copy": lambda **kw: tasks.Copy(4, 3, **kw),  # episodes of 9 steps: chunks cut them
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


# ----------------------------------------------------------------------------- copy


def _episodes(xs, ys, length):
    """A chunk that starts at an episode boundary, cut into whole episodes."""
    n = 2 * length + 1
    count = len(xs) // n
    return xs[: count * n].reshape(count, n), ys[: count * n].reshape(count, n)


def test_copy_episodes_store_then_recall_in_order():
    stream = tasks.Copy(3, 5, seed=0)
    assert stream.vocab_size == 7 and (stream.delimiter, stream.go) == (5, 6)
    xs, ys = stream.next_chunk(7 * 40)
    ex, ey = _episodes(xs, ys, 3)
    assert ex.shape == (40, 7)
    assert np.all((ex[:, :3] >= 0) & (ex[:, :3] < 5))  # data symbols only
    np.testing.assert_array_equal(ex[:, 3], 5)  # the delimiter
    np.testing.assert_array_equal(ex[:, 4:], 6)  # go symbols during recall
    np.testing.assert_array_equal(ey[:, :4], tasks.IGNORE_LABEL)  # nothing to predict
    np.testing.assert_array_equal(ey[:, 4:], ex[:, :3])  # the stored symbols, in order
    assert len({tuple(e) for e in ex[:, :3]}) > 20  # fresh symbols every episode
    np.testing.assert_array_equal(tasks.recall_mask(ys), ys >= 0)
    assert int(tasks.recall_mask(ys).sum()) == 3 * 40
    assert stream.recall_floor_bits == math.log2(5) and stream.best_recall_bits == 0.0
    assert stream.best_bits_per_char is None


def test_copy_symbols_are_uniform():
    xs, ys = tasks.Copy(2, 4, seed=1).next_chunk(5 * 4000)
    counts = np.bincount(ys[ys >= 0], minlength=4)
    assert counts.sum() == 8000 and np.all(np.abs(counts / 8000 - 0.25) < 0.02)


def test_copy_resumes_mid_episode_with_its_length():
    stream = tasks.Copy(4, 3, curriculum=True, seed=2, num_streams=2)
    stream.next_chunk(5)  # mid-episode
    stream.advance_curriculum(0.0)  # length 5 for the episodes generated from now on
    stream.next_chunk(6)  # the rest of the first episode, then two steps of a longer one
    state = stream.get_state()
    expected = stream.next_chunk(40)
    fresh = tasks.Copy(4, 3, curriculum=True, seed=2, num_streams=2)
    fresh.set_state(state)
    assert fresh.length == 5
    for a, b in zip(fresh.next_chunk(40), expected):
        np.testing.assert_array_equal(a, b)


def test_copy_curriculum_grows_the_length_of_later_episodes():
    stream = tasks.Copy(2, 4, curriculum=True, threshold_bits=0.15, max_length=4, seed=3)
    xs, ys = stream.next_chunk(3)  # three steps into an episode of five
    assert not stream.advance_curriculum(0.2) and stream.length == 2
    assert stream.advance_curriculum(0.1) and stream.length == 3
    xs2, ys2 = stream.next_chunk(2 + 7 + 7)
    xs, ys = np.concatenate([xs, xs2]), np.concatenate([ys, ys2])
    first, later = (xs[:5], ys[:5]), (xs[5:], ys[5:])
    np.testing.assert_array_equal(first[1][:3], tasks.IGNORE_LABEL)  # length 2 kept
    np.testing.assert_array_equal(first[1][3:], first[0][:2])
    ex, ey = _episodes(*later, 3)  # then episodes of length 3
    np.testing.assert_array_equal(ex[:, 3], 4)
    np.testing.assert_array_equal(ey[:, :4], tasks.IGNORE_LABEL)
    np.testing.assert_array_equal(ey[:, 4:], ex[:, :3])
    assert stream.advance_curriculum(0.0) and stream.length == 4
    assert not stream.advance_curriculum(0.0) and stream.length == 4  # max_length
    fixed = tasks.Copy(2, 4, seed=3)  # no curriculum: the length never moves
    assert not fixed.advance_curriculum(0.0) and fixed.length == 2


def test_copy_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="max_length must be >= length"):
        tasks.Copy(5, 4, max_length=3)
    with pytest.raises(ConfigError, match="vocab must be <= 62"):
        tasks.Copy(5, 63)
    with pytest.raises(ConfigError, match="threshold_bits must be finite and >= 0"):
        tasks.Copy(5, 4, threshold_bits=-1.0)
    assert isinstance(tasks.make_stream("copy", seed=0, length=2, vocab=3), tasks.Copy)


def test_the_cross_entropy_ignores_negative_labels_only():
    logits = jnp.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.7], [0.0, 0.1, 0.2]])
    labels = jnp.array([2, tasks.IGNORE_LABEL, 0])
    loss = jax.vmap(uorojax.softmax_cross_entropy)(logits, labels)
    reference = -jax.nn.log_softmax(logits)[jnp.arange(3), jnp.maximum(labels, 0)]
    np.testing.assert_allclose(loss, jnp.where(labels >= 0, reference, 0.0), rtol=1e-12)
    grads = jax.vmap(jax.grad(uorojax.softmax_cross_entropy))(logits, labels)
    np.testing.assert_array_equal(grads[1], 0.0)  # an ignored step teaches nothing
    expected = jax.nn.softmax(logits) - jax.nn.one_hot(labels, 3)
    np.testing.assert_allclose(grads[jnp.array([0, 2])], expected[jnp.array([0, 2])], rtol=1e-12)
    assert float(tasks.recall_mean(loss, labels)) == pytest.approx(
        float(reference[0] + reference[2]) / 2, rel=1e-12
    )
    assert float(tasks.recall_mean(loss, jnp.full(3, tasks.IGNORE_LABEL))) == 0.0
