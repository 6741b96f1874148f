"""Exactness and unbiasedness of the estimators (float64, tiny models, seeded)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    bptt_grad,
    check_rescaled_step,
    check_unbiased,
    errors_against_rtrl,
    flat,
    normalized_squared_error,
    regression_stream,
    rel_err,
    scan_estimator,
    tiny_rnn,
    uoro_samples_and_rtrl,
)

import uorojax

T = 6


def gru_model():
    model = uorojax.from_linen_cells(nn.GRUCell(features=3), 2)
    params, state0 = model.init(jax.random.key(3), jnp.zeros(2, jnp.float64))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    state0 = jax.tree.map(lambda a: 0.2 * jnp.ones_like(a, jnp.float64), state0)
    return model, params, state0


def lstm_model():
    model = uorojax.from_linen_cells([nn.LSTMCell(features=3), nn.LSTMCell(features=2)], 2)
    params, state0 = model.init(jax.random.key(4), jnp.zeros(2, jnp.float64))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    state0 = jax.tree.map(lambda a: 0.2 * jnp.ones_like(a, jnp.float64), state0)
    return model, params, state0


MODELS = {"tanh_rnn": tiny_rnn, "flax_gru": gru_model, "flax_lstm_stack": lstm_model}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rtrl_equals_full_bptt(name):
    model, params, state0 = MODELS[name]()
    xs, ys = regression_stream(T)
    est = uorojax.rtrl(model.apply, uorojax.squared_error)
    _, grads, infos = jax.jit(scan_estimator, static_argnums=0)(
        est, params, state0, xs, ys, jax.random.key(0)
    )
    every = bptt_grad(model.apply, uorojax.squared_error, params, state0, xs, ys, range(T))
    for t in range(T):
        exact = jax.tree.map(lambda g: g[t], every)
        got = jax.tree.map(lambda g: g[t], grads)
        assert rel_err(got, exact) < 1e-10, (name, t)
    # The history matters: the last step's gradient is not its one-step truncation.
    one_step = uorojax.tbptt(model.apply, uorojax.squared_error, 1)
    _, trunc, _ = scan_estimator(one_step, params, state0, xs, ys, jax.random.key(0))
    assert (
        rel_err(jax.tree.map(lambda g: g[-1], trunc), jax.tree.map(lambda g: g[-1], grads)) > 1e-3
    )


def test_rtrl_jacobian_equals_jacfwd_of_the_sequence():
    model, params, state0 = tiny_rnn()
    xs, ys = regression_stream(T)
    carry, _, _ = scan_estimator(
        uorojax.rtrl(model.apply, uorojax.squared_error), params, state0, xs, ys, jax.random.key(0)
    )
    flat_params, unravel = jax.flatten_util.ravel_pytree(params)
    final_state = lambda p: uorojax.forward_sequence(  # noqa: E731
        model.apply, uorojax.squared_error, unravel(p), state0, xs, ys
    )[0]
    exact = jax.jacfwd(final_state)(flat_params)
    np.testing.assert_allclose(uorojax.jacobian_matrix(carry), exact, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_uoro_is_unbiased_against_rtrl(num_samples):
    model, params, state0 = tiny_rnn()
    xs, ys = regression_stream(T)
    est = uorojax.uoro(model.apply, uorojax.squared_error, num_samples=num_samples)
    check_unbiased(
        errors_against_rtrl(est, model.apply, uorojax.squared_error, params, state0, xs, ys)
    )


def test_uoro_shared_tangents_batch_is_unbiased():
    model, params, _ = tiny_rnn()
    num_streams = 2
    apply_b, loss_b = uorojax.as_one_system(model.apply, uorojax.squared_error)
    states0 = 0.3 * jnp.ones((num_streams, 3)) * jnp.array([[1.0], [-1.0]])
    xs, ys = regression_stream(T * num_streams)
    xs, ys = xs.reshape(T, num_streams, 2), ys.reshape(T, num_streams, 2)
    # The shared system's exact gradient is the mean of the per-stream exact gradients.
    _, rtrl_grads, _ = scan_estimator(
        uorojax.rtrl(apply_b, loss_b), params, states0, xs, ys, jax.random.key(0)
    )
    per_stream_exact = [
        bptt_grad(model.apply, uorojax.squared_error, params, states0[b], xs[:, b], ys[:, b], T - 1)
        for b in range(num_streams)
    ]
    mean = jax.tree.map(lambda *g: sum(g) / num_streams, *per_stream_exact)
    assert rel_err(jax.tree.map(lambda g: g[-1], rtrl_grads), mean) < 1e-10
    est = uorojax.uoro(apply_b, loss_b)
    check_unbiased(errors_against_rtrl(est, apply_b, loss_b, params, states0, xs, ys))


def test_biased_variant_is_caught():
    """The unbiasedness check can fail: averaging UORO's gradient with the one-step
    truncated gradient (a biased estimator of the same family) is caught."""
    model, params, state0 = tiny_rnn()
    xs, ys = regression_stream(T)
    est = uorojax.uoro(model.apply, uorojax.squared_error)

    def biased_step(params, carry, x, y, key):
        grads, new_carry, info = est.step(params, carry, x, y, key)
        one_step = lambda p: uorojax.squared_error(model.apply(p, carry.state, x)[1], y)  # noqa: E731
        direct = jax.grad(one_step)(params)
        return jax.tree.map(lambda g, d: 0.5 * (g + d), grads, direct), new_carry, info

    biased = uorojax.Estimator(est.init_state, biased_step)
    errors = errors_against_rtrl(biased, model.apply, uorojax.squared_error, params, state0, xs, ys)
    with pytest.raises(AssertionError):
        check_unbiased(errors)
    # The property tests' normalised statistic (expectation 1 when unbiased) catches it too.
    (_, biased_grads), (_, exact_grad) = uoro_samples_and_rtrl(
        biased, model.apply, uorojax.squared_error, params, state0, xs, ys, 20_000
    )
    assert normalized_squared_error(biased_grads, exact_grad) > 9.0
    (_, grads), _ = uoro_samples_and_rtrl(
        est, model.apply, uorojax.squared_error, params, state0, xs, ys, 20_000
    )
    assert normalized_squared_error(grads, exact_grad) < 9.0


@pytest.mark.parametrize("name", ["tanh_rnn", "flax_lstm_stack"])
def test_uoro_step_returns_the_rescaled_pair_balanced_with_zero_eps(name):
    model, params, state0 = MODELS[name]()
    xs, ys = regression_stream(1)
    check_rescaled_step(model.apply, params, state0, xs[0], ys[0], seed=7)


@pytest.mark.parametrize("kind", ["uoro", "uoro_t3", "kf_rtrl"])
def test_zero_eps_starts_from_zero_tangents(kind):
    """eps = 0 is allowed: the zero pair at a stream's start takes ρ0 = 1 (p1 = 1 for
    KF-RTRL) instead of 0/0."""
    model, params, state0 = tiny_rnn()
    xs, ys = regression_stream(6)
    est = {
        "uoro": lambda: uorojax.uoro(model.apply, uorojax.squared_error, eps=0.0),
        "uoro_t3": lambda: uorojax.uoro(model.apply, uorojax.squared_error, eps=0.0, truncation=3,
                                        example_x=xs[0], example_y=ys[0]),
        "kf_rtrl": lambda: uorojax.kf_rtrl(model.apply, uorojax.squared_error, eps=0.0,
                                           structure=model.structure),
    }[kind]()  # fmt: skip
    carry, grads, _ = scan_estimator(est, params, state0, xs, ys, jax.random.key(0))
    assert np.isfinite(flat(grads)).all() and np.isfinite(flat(carry)).all()
    assert float(jnp.abs(flat(grads)).max()) > 0


def test_uoro_steps_keep_balanced_tildes_with_zero_eps():
    model, params, state0 = tiny_rnn()
    xs, ys = regression_stream(T)
    est = uorojax.uoro(model.apply, uorojax.squared_error, eps=0.0)
    carry = est.init_state(params, state0)
    # Start from a non-zero pair (with eps=0 the zero pair is a 0/0).
    carry = carry._replace(
        s_tilde=jnp.array([1.0, -2.0, 0.5]), theta_tilde=jax.tree.map(jnp.ones_like, params)
    )
    for t in range(T):
        _, carry, _ = est.step(params, carry, xs[t], ys[t], jax.random.key(t))
        assert np.isfinite(flat(carry.theta_tilde)).all()


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("name", ["tanh_rnn", "flax_lstm_stack"])
def test_uoro_gradient_is_the_rank_one_formula_with_the_old_tildes(name, num_samples):
    """g = δθ + mean_k (δs · s̃_k) θ̃_k exactly, with δs = ∂L_t/∂s_{t-1} and δθ = ∂L_t/∂θ
    from jax.grad of the one-step loss (UORO forms δs · s̃ by a JVP, never δs itself)."""
    model, params, state0 = MODELS[name]()
    xs, ys = regression_stream(1)
    est = uorojax.uoro(model.apply, uorojax.squared_error, num_samples=num_samples)
    keys = jax.random.split(jax.random.key(9), 3)
    lead = () if num_samples == 1 else (num_samples,)
    random_like = lambda k, t: jax.tree.map(  # noqa: E731
        lambda a: jax.random.normal(k, lead + a.shape, a.dtype), t
    )
    carry = est.init_state(params, state0)._replace(
        s_tilde=random_like(keys[0], state0), theta_tilde=random_like(keys[1], params)
    )
    grads, _, _ = est.step(params, carry, xs[0], ys[0], keys[2])

    def step_loss(p, s):
        return uorojax.squared_error(model.apply(p, s, xs[0])[1], ys[0])

    delta_theta, delta_s = jax.grad(step_loss, argnums=(0, 1))(params, state0)
    if num_samples == 1:
        coeff = flat(delta_s) @ flat(carry.s_tilde)
        expected = flat(delta_theta) + coeff * flat(carry.theta_tilde)
    else:
        s_rows = jax.vmap(flat)(carry.s_tilde)
        t_rows = jax.vmap(flat)(carry.theta_tilde)
        expected = flat(delta_theta) + (s_rows @ flat(delta_s)) @ t_rows / num_samples
    np.testing.assert_allclose(flat(grads), expected, rtol=1e-12, atol=1e-14)


def test_batched_cotangent_norm_is_the_norm():
    """The layout hint for per-stream ‖θ'‖ (axes swapped before the sum) changes nothing
    but the order of the sum, for leaves of any rank, under vmap and outside it."""
    from uorojax.tree import batched_cotangent_norm as _batched_cotangent_norm

    keys = jax.random.split(jax.random.key(4), 4)
    tree = {
        "b": jax.random.normal(keys[0], (5, 3)),
        "w": jax.random.normal(keys[1], (5, 3, 4)),
        "conv": jax.random.normal(keys[2], (5, 2, 2, 3, 4)),
        "scalar": jax.random.normal(keys[3], (5,)),
    }
    np.testing.assert_allclose(
        jax.vmap(_batched_cotangent_norm)(tree), jax.vmap(uorojax.tree_norm)(tree), rtol=1e-12
    )
    np.testing.assert_allclose(_batched_cotangent_norm(tree), uorojax.tree_norm(tree), rtol=1e-12)


@pytest.mark.parametrize("truncation", [1, 3])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tbptt_window_gradient_equals_hand_unrolled(truncation, reduction):
    model, params, state0 = tiny_rnn()
    xs, ys = regression_stream(2 * truncation)
    est = uorojax.tbptt(
        model.apply,
        uorojax.squared_error,
        truncation,
        reduction=reduction,
        example_x=xs[0],
        example_y=ys[0],
    )
    carry, grads, infos = scan_estimator(est, params, state0, xs, ys, jax.random.key(0))
    ready = np.asarray(infos.ready)
    assert ready.tolist() == [(t + 1) % truncation == 0 for t in range(2 * truncation)]

    def hand(p, start, lo):
        s, total = start, 0.0
        for t in range(lo, lo + truncation):
            s, o = model.apply(p, s, xs[t])
            total = total + uorojax.squared_error(o, ys[t])
        return total / (truncation if reduction == "mean" else 1)

    # Second window: the start state comes from running the first window forward.
    start = state0
    for t in range(truncation):
        start, _ = model.apply(params, start, xs[t])
    for lo, start_state in ((0, state0), (truncation, start)):
        expected = jax.grad(hand)(params, start_state, lo)
        assert rel_err(jax.tree.map(lambda g: g[lo + truncation - 1], grads), expected) < 1e-12
        for t in range(lo, lo + truncation - 1):
            assert float(jnp.abs(flat(jax.tree.map(lambda g: g[t], grads))).max()) == 0.0
    # The fast window path gives the same gradient and carry as the step path.
    carry_w = est.init_state(params, state0)
    keys = jax.random.split(jax.random.key(0), truncation)
    for lo in (0, truncation):
        g, carry_w, info_w = uorojax.run_window(
            est, params, carry_w, xs[lo : lo + truncation], ys[lo : lo + truncation], keys
        )
        assert rel_err(g, jax.tree.map(lambda a: a[lo + truncation - 1], grads)) < 1e-12
        np.testing.assert_allclose(info_w.loss, infos.loss[lo : lo + truncation], rtol=1e-12)
    for a, b in zip(jax.tree.leaves(carry_w), jax.tree.leaves(carry)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


ESTIMATORS = {
    "uoro": lambda m: uorojax.uoro(m.apply, uorojax.squared_error),
    "uoro_k2": lambda m: uorojax.uoro(m.apply, uorojax.squared_error, num_samples=2),
    "rtrl": lambda m: uorojax.rtrl(m.apply, uorojax.squared_error),
    "tbptt": lambda m: uorojax.tbptt(
        m.apply, uorojax.squared_error, 2, example_x=jnp.zeros(2), example_y=jnp.zeros(2)
    ),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_jit_scan_and_vmap_over_streams_equals_python_loop(name):
    model, params, _ = tiny_rnn()
    est = ESTIMATORS[name](model)
    num_streams = 3
    states0 = 0.1 * jnp.arange(num_streams * 3, dtype=jnp.float64).reshape(num_streams, 3)
    xs, ys = regression_stream(4 * num_streams)
    xs, ys = xs.reshape(4, num_streams, 2), ys.reshape(4, num_streams, 2)
    batched = uorojax.per_stream(est)
    carry_b, grads_b, infos_b = jax.jit(scan_estimator, static_argnums=0)(
        batched, params, states0, xs, ys, jax.random.key(11)
    )
    # Python loop over streams with the same per-stream keys.
    step_keys = jax.random.split(jax.random.key(11), 4)
    grads_loop = []
    for b in range(num_streams):
        carry = est.init_state(params, states0[b])
        per_step = []
        for t in range(4):
            g, carry, info = est.step(
                params, carry, xs[t, b], ys[t, b], jax.random.split(step_keys[t], num_streams)[b]
            )
            np.testing.assert_allclose(info.loss, infos_b.loss[t, b], rtol=1e-12)
            per_step.append(g)
        grads_loop.append(per_step)
        for a, c in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_b)):
            np.testing.assert_allclose(a, c[b], rtol=1e-10, atol=1e-14)
    for t in range(4):
        mean = jax.tree.map(
            lambda *g: sum(g) / num_streams, *[grads_loop[b][t] for b in range(num_streams)]
        )
        got = jax.tree.map(lambda g: g[t], grads_b)
        np.testing.assert_allclose(flat(got), flat(mean), rtol=1e-10, atol=1e-14)


def test_uoro_on_nnx_cell_matches_linen_style_protocol():
    from flax import nnx

    cell = nnx.GRUCell(2, 3, rngs=nnx.Rngs(0))
    model = uorojax.from_nnx(cell, cell.initialize_carry((2,), nnx.Rngs(1)))
    (params, h0), apply_fn = model.init(None, None), model.apply
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    h0 = 0.1 * jnp.ones(3, jnp.float64)
    loss = lambda out, y: uorojax.squared_error(out[:2], y)  # noqa: E731
    xs, ys = regression_stream(T)
    _, grads, _ = scan_estimator(
        uorojax.rtrl(apply_fn, loss), params, h0, xs, ys, jax.random.key(0)
    )
    exact = bptt_grad(apply_fn, loss, params, h0, xs, ys, T - 1)
    assert rel_err(jax.tree.map(lambda g: g[-1], grads), exact) < 1e-10


@pytest.mark.parametrize("cell", sorted(uorojax.models.LINEN_CELLS))
@pytest.mark.parametrize("embed_dim", [None, 3])
def test_every_linen_cell_with_token_input_is_exact_under_rtrl(cell, embed_dim):
    model = uorojax.linen_model(cell, 2, 4, num_layers=2, vocab_size=4, embed_dim=embed_dim)
    params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))  # float32
    xs = jnp.array([0, 3, 1, 2], jnp.int32)
    ys = jnp.array([3, 1, 2, 0], jnp.int32)
    loss = uorojax.softmax_cross_entropy
    _, grads, infos = scan_estimator(
        uorojax.rtrl(model.apply, loss), params, state0, xs, ys, jax.random.key(0)
    )
    exact = bptt_grad(model.apply, loss, params, state0, xs, ys, 3)
    assert rel_err(jax.tree.map(lambda g: g[3], grads), exact) < 1e-5  # float32 params
    assert np.isfinite(np.asarray(infos.loss)).all()
