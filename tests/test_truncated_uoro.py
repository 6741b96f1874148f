"""Truncated UORO (the authors' T > 1): unbiased for the window's loss with full history."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat, normalized_squared_error, regression_stream, scan_estimator, tiny_rnn

import uorojax
from uorojax.estimators.uoro import UOROState, uoro_window

T, WINDOWS = 3, 3
LOSS = uorojax.squared_error


def window_samples(est, apply_fn, loss_fn, params, state0, xs, ys, seed=5):
    """20,000 window gradients (at every window end but the first, which has no history
    and is exact) and the exact gradient of each window's summed loss with the full
    history (exact RTRL's per-step gradients summed over the window)."""
    _, rtrl_grads, _ = scan_estimator(
        uorojax.rtrl(apply_fn, loss_fn), params, state0, xs, ys, jax.random.key(0)
    )
    window = est.window
    exact = jax.vmap(flat)(rtrl_grads).reshape(-1, window, flat(params).size).sum(1)[1:]
    keys = jax.random.split(jax.random.key(seed), 20_000)

    def one(key):
        _, grads, _ = scan_estimator(est, params, state0, xs, ys, key)
        return jax.vmap(flat)(grads)[window - 1 :: window][1:]

    return jax.jit(jax.vmap(one))(keys), exact


def check_window_unbiased(samples, exact):
    """The squared error of the mean over N keys, in units of its predicted variance
    (expectation 1 when unbiased, growing like N with a bias), stays under 9 at N =
    1,000 and 20,000: the error falls like 1/sqrt(N). And it is small in absolute terms."""
    for w in range(exact.shape[0]):
        for n in (1000, 20_000):
            assert normalized_squared_error(samples[:n, w], exact[w]) < 9.0, (w, n)
        rel = jnp.linalg.norm(samples[:, w].mean(0) - exact[w]) / jnp.linalg.norm(exact[w])
        assert rel < 0.05, (w, float(rel))


def _truncated(model, xs, ys, **kwargs):
    return uorojax.uoro(model.apply, LOSS, truncation=T, example_x=xs[0], example_y=ys[0], **kwargs)


@pytest.mark.parametrize("num_samples", [1, 2])
def test_mean_window_gradient_converges_to_the_full_history_gradient(num_samples):
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(T * WINDOWS)
    est = _truncated(model, xs, ys, num_samples=num_samples)
    check_window_unbiased(*window_samples(est, model.apply, LOSS, params, h0, xs, ys))


def test_shared_tangents_over_a_batch_are_unbiased():
    model, params, _ = tiny_rnn()
    apply_b, loss_b = uorojax.as_one_system(model.apply, LOSS)
    states0 = 0.3 * jnp.ones((2, 3)) * jnp.array([[1.0], [-1.0]])
    xs, ys = regression_stream(T * WINDOWS * 2)
    xs, ys = xs.reshape(T * WINDOWS, 2, 2), ys.reshape(T * WINDOWS, 2, 2)
    est = uorojax.uoro(apply_b, loss_b, truncation=T, example_x=xs[0], example_y=ys[0])
    check_window_unbiased(*window_samples(est, apply_b, loss_b, params, states0, xs, ys))


def test_the_check_catches_dropping_the_history():
    """TBPTT(T) is truncated UORO without its history term; half the history term is a
    noisy biased variant. The same check fails on both."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(T * WINDOWS)
    tbptt = uorojax.tbptt(model.apply, LOSS, T, example_x=xs[0], example_y=ys[0])
    est = _truncated(model, xs, ys)

    def half_history(params, carry, x, y, key):
        grads, new_carry, info = est.step(params, carry, x, y, key)
        truncated, _, _ = tbptt.step(params, carry._replace(start=carry.start.state), x, y, key)
        return jax.tree.map(lambda g, t: 0.5 * (g + t), grads, truncated), new_carry, info

    for biased in (tbptt, uorojax.Estimator(est.init_state, half_history, est.window)):
        samples, exact = window_samples(biased, model.apply, LOSS, params, h0, xs, ys)
        with pytest.raises(AssertionError):
            check_window_unbiased(samples, exact)


def test_in_window_part_is_tbptt_and_history_is_the_rank_one_term():
    """g = g_TBPTT(T) + (δs_0 · s̃) θ̃ exactly, δs_0 = ∂(Σ_window L)/∂s_0 from jax.grad."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(T)
    est = _truncated(model, xs, ys)
    keys = jax.random.split(jax.random.key(9), 3)
    random_like = lambda k, t: jax.tree.map(lambda a: jax.random.normal(k, a.shape, a.dtype), t)  # noqa: E731
    carry = est.init_state(params, h0)
    start = carry.start._replace(
        s_tilde=random_like(keys[0], h0), theta_tilde=random_like(keys[1], params)
    )
    carry = carry._replace(start=start)
    grads, _, _ = uorojax.run_window(est, params, carry, xs, ys, jax.random.split(keys[2], T))
    tbptt = uorojax.tbptt(model.apply, LOSS, T, example_x=xs[0], example_y=ys[0])
    g_tbptt, _, _ = uorojax.run_window(tbptt, params, tbptt.init_state(params, h0), xs, ys, keys)
    window_loss = lambda s0: jnp.sum(
        uorojax.forward_sequence(model.apply, LOSS, params, s0, xs, ys)[1]
    )  # noqa: E731
    delta_s0 = jax.grad(window_loss)(h0)
    expected = flat(g_tbptt) + jnp.dot(flat(delta_s0), flat(start.s_tilde)) * flat(
        start.theta_tilde
    )
    np.testing.assert_allclose(flat(grads), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_a_window_of_one_step_is_uoro(num_samples):
    """The window code at T = 1 gives UORO's step (Algorithm 1) with the same key."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(1)
    k = num_samples
    keys = jax.random.split(jax.random.key(2), 3)
    lead = () if k == 1 else (k,)
    random_like = lambda key, t: jax.tree.map(
        lambda a: jax.random.normal(key, lead + a.shape, a.dtype), t
    )  # noqa: E731
    start = UOROState(h0, random_like(keys[0], h0), random_like(keys[1], params))
    step = uorojax.uoro(model.apply, LOSS, eps=1e-7, num_samples=k).step
    g_step, c_step, _ = step(params, start, xs[0], ys[0], keys[2])
    g_win, c_win, _, _ = uoro_window(model.apply, LOSS, 1e-7, k, params, start, xs, ys, keys[2])
    np.testing.assert_allclose(flat(g_win), flat(g_step), rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree.leaves(c_win), jax.tree.leaves(c_step)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_uoro_truncation_one_is_todays_uoro():
    """``truncation=1`` builds the per-step UORO (no window buffers, a gradient every step)."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(6)
    a = uorojax.uoro(model.apply, LOSS)
    b = uorojax.uoro(model.apply, LOSS, truncation=1)
    _, ga, _ = scan_estimator(a, params, h0, xs, ys, jax.random.key(1))
    _, gb, _ = scan_estimator(b, params, h0, xs, ys, jax.random.key(1))
    np.testing.assert_array_equal(flat(ga), flat(gb))
    assert isinstance(b.init_state(params, h0), UOROState) and b.window == 1


def test_truncated_uoro_needs_its_window_buffers_sized():
    model, _, _ = tiny_rnn()
    with pytest.raises(uorojax.ConfigError, match="pass example_x and example_y"):
        uorojax.uoro(model.apply, LOSS, truncation=4)
