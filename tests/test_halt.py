"""A halted run stays halted: after the first non-finite step (``nonfinite="raise"``) no
later update moves the train state, a pending window's gradient included."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import regression_stream, tiny_rnn

import uorojax
from uorojax.training.update import advance_counters


def _state(step=7, halted_at=-1, pending=2):
    model, params, h0 = tiny_rnn()
    ts = uorojax.make_trainer(uorojax.rtrl(model.apply, uorojax.squared_error), optax.sgd(0.1))
    ts = ts.init(params, h0, jax.random.key(0))
    return ts._replace(
        step=jnp.asarray(step, jnp.int32),
        halted_at=jnp.asarray(halted_at, jnp.int32),
        pending=jnp.asarray(pending, jnp.int32),
    )


@pytest.mark.parametrize("skip", [False, True])
def test_a_finite_window_after_a_halt_is_not_accepted(skip):
    ts = _state(halted_at=5)
    counters = advance_counters(ts, 3, jnp.asarray(True), jnp.asarray(True), 0, skip)
    assert not bool(counters["accept"])
    assert int(counters["halted_at"]) == 5
    assert int(counters["pending"]) == 2  # the window it would have closed stays pending
    if not skip:
        assert int(counters["step"]) == 7


def test_a_second_non_finite_step_keeps_the_first_halt():
    ts = _state(halted_at=5)
    counters = advance_counters(ts, 1, jnp.asarray(False), jnp.asarray(False), 0, False)
    assert int(counters["halted_at"]) == 5 and int(counters["step"]) == 7
    assert int(counters["num_skipped"]) == 0


def test_the_first_non_finite_step_halts_before_it():
    ts = _state(halted_at=-1)
    counters = advance_counters(ts, 4, jnp.asarray(False), jnp.asarray(True), 2, False)
    assert not bool(counters["accept"])
    assert int(counters["halted_at"]) == 9 and int(counters["step"]) == 7  # 7 + 2 steps in
    assert int(counters["pending"]) == 2


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree) if not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)]  # fmt: skip


@pytest.mark.parametrize("path", ["steps", "windows"])
def test_nothing_moves_after_a_halt_inside_a_window(path):
    """TBPTT(3): step 4 (inside the window [3, 6)) is not finite. The halted state keeps
    the params of the first window and the step before the halt; the finite windows after
    it, and the pending part of the halted one, are never applied."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(12)
    xs = xs.at[4].set(jnp.nan)
    est = uorojax.tbptt(model.apply, uorojax.squared_error, 3, example_x=xs[0], example_y=ys[0])
    trainer = uorojax.make_trainer(est, optax.adam(0.1))
    ts0 = trainer.init(params, h0, jax.random.key(0))
    first_window, _ = trainer.run(ts0, xs[:3], ys[:3])
    if path == "windows":
        halted, _ = jax.jit(trainer.run)(ts0, xs, ys)
        snapshots = [halted]
    else:
        step = jax.jit(trainer.step)
        ts, snapshots = ts0, []
        for t in range(12):
            ts, _ = step(ts, xs[t], ys[t])
            if t >= 4:
                snapshots.append(ts)
        halted = snapshots[0]
    assert int(halted.halted_at) == 4
    for a, b in zip(_leaves(halted.params), _leaves(first_window.params)):
        np.testing.assert_allclose(a, b, rtol=1e-12)  # steps or a window: one rounding apart
    for later in snapshots:  # every state after the halt is the halted one
        for a, b in zip(_leaves(later), _leaves(halted)):
            np.testing.assert_array_equal(a, b)
    assert int(halted.step) == (3 if path == "windows" else 4)
    assert int(halted.pending) == (0 if path == "windows" else 1)
