"""Small shared pieces for the tests: tiny models, streams and scan drivers."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import uorojax


def tiny_rnn(hidden=3, inputs=2, outputs=2, seed=0):
    model = uorojax.tanh_rnn(hidden, inputs, outputs, dtype=jnp.float64)
    params, h0 = model.init(jax.random.key(seed))
    # A non-zero initial state and bias make every Jacobian block non-trivial.
    params["b"] = 0.1 * jnp.arange(hidden, dtype=jnp.float64)
    h0 = 0.3 * jnp.ones(hidden, jnp.float64)
    return model, params, h0


def float64_model(model, seed=0, state_value=0.2):
    """A linen model's params and initial state in float64, the state offset from zero."""
    params, state0 = model.init(jax.random.key(seed), jnp.zeros(2))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    state0 = jax.tree.map(lambda a: state_value + a.astype(jnp.float64), state0)
    return params, state0


def regression_stream(length, inputs=2, outputs=2, seed=1):
    kx, ky = jax.random.split(jax.random.key(seed))
    return (
        jax.random.normal(kx, (length, inputs), jnp.float64),
        jax.random.normal(ky, (length, outputs), jnp.float64),
    )


def scan_estimator(est, params, state0, xs, ys, key):
    """Runs ``est.step`` over a sequence with frozen params; returns (carry, grads, infos)."""
    carry = est.init_state(params, state0)

    def body(carry, inp):
        x, y, k = inp
        grads, carry, info = est.step(params, carry, x, y, k)
        return carry, (grads, info)

    keys = jax.random.split(key, jax.tree.leaves(xs)[0].shape[0])
    carry, (grads, infos) = jax.lax.scan(body, carry, (xs, ys, keys))
    return carry, grads, infos


def bptt_grad(apply_fn, loss_fn, params, state0, xs, ys, t):
    """jax.grad of L_t through the whole unrolled sequence up to step t.

    ``t`` an int, or a sequence of steps: then the gradients of each L_t stacked on a
    leading axis, from one compiled program (the losses' reverse-mode Jacobian; L_t reads
    only the steps up to t).
    """
    steps = np.atleast_1d(np.asarray(t))
    end = int(steps.max()) + 1

    def losses(p):
        _, losses, _ = uorojax.forward_sequence(apply_fn, loss_fn, p, state0, xs[:end], ys[:end])
        return losses[steps]

    grads = jax.jit(jax.jacrev(losses))(params)
    return grads if np.ndim(t) else jax.tree.map(lambda g: g[0], grads)


def flat(tree):
    return ravel_pytree(tree)[0]


def rel_err(a, b):
    a, b = flat(a), flat(b)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def uoro_samples_and_rtrl(est, apply_fn, loss_fn, params, state0, xs, ys, num_keys, seed=5):
    """N independent Jacobian estimates (s̃ ⊗ θ̃) and last-step gradients, and the exact
    RTRL values on the same model."""
    rtrl_carry, rtrl_grads, _ = scan_estimator(
        uorojax.rtrl(apply_fn, loss_fn), params, state0, xs, ys, jax.random.key(0)
    )
    exact = (uorojax.jacobian_matrix(rtrl_carry), flat(jax.tree.map(lambda g: g[-1], rtrl_grads)))
    keys = jax.random.split(jax.random.key(seed), num_keys)
    run = jax.jit(jax.vmap(lambda k: scan_estimator(est, params, state0, xs, ys, k)[:2]))
    carries, grads = run(keys)
    samples = (
        jax.vmap(uorojax.tangent_outer)(carries),
        jax.vmap(flat)(jax.tree.map(lambda g: g[:, -1], grads)),
    )
    return samples, exact


def normalized_squared_error(samples, exact):
    """‖mean − exact‖² / (trace of the sample covariance / N).

    For an unbiased estimator its expectation is 1 whatever the model; a bias b makes it
    grow like N‖b‖²/variance.
    """
    n = samples.shape[0]
    err = jnp.sum(jnp.square(samples.mean(0) - exact))
    return float(err / (jnp.sum(samples.var(0)) / n))


def errors_against_rtrl(est, apply_fn, loss_fn, params, state0, xs, ys, seed=5):
    """Relative errors, at N = 1,000 and 20,000 keys, of the mean Jacobian estimate
    (s̃ ⊗ θ̃) and of the mean last-step gradient, against exact RTRL on the same model."""
    (outers, last_grads), (exact_jacobian, exact_grad) = uoro_samples_and_rtrl(
        est, apply_fn, loss_fn, params, state0, xs, ys, 20_000, seed
    )
    rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))  # noqa: E731
    return {
        n: (rel(outers[:n].mean(0), exact_jacobian), rel(last_grads[:n].mean(0), exact_grad))
        for n in (1000, 20_000)
    }


def check_unbiased(errors):
    """Unbiased: under 0.05 at N = 20,000 and falling at least 2.5x from N = 1,000
    (1/sqrt(N) predicts 4.5x)."""
    (j1, g1), (j2, g2) = errors[1000], errors[20_000]
    assert j2 < 0.05 and g2 < 0.05, errors
    assert j1 / j2 > 2.5 and g1 / g2 > 2.5, errors


def check_rescaled_step(apply_fn, params, state0, x, y, seed):
    """An actual UORO step (eps = 0) from random tildes returns s̃ = ρ0 s̃' + ρ1 ν and
    θ̃ = θ̃/ρ0 + θ'/ρ1 with the balancing ρ's: s̃' = A s̃ and θ' = νᵀB recomputed here by
    jax.jvp and jax.vjp, ν the noise the step drew (recovered from the returned s̃, and
    checked to be ±1 of one magnitude)."""
    est = uorojax.uoro(apply_fn, uorojax.squared_error, eps=0.0)
    keys = jax.random.split(jax.random.key(seed), 3)

    def random_like(key, tree):
        return jax.tree.map(lambda a: jax.random.normal(key, a.shape, a.dtype), tree)

    carry = est.init_state(params, state0)._replace(
        s_tilde=random_like(keys[0], state0), theta_tilde=random_like(keys[1], params)
    )
    _, new, _ = est.step(params, carry, x, y, keys[2])

    def step_state(p, s):
        return apply_fn(p, s, x)[0]

    s_prime = jax.jvp(lambda s: step_state(params, s), (state0,), (carry.s_tilde,))[1]
    norm = uorojax.tree_norm
    rho0 = jnp.sqrt(norm(carry.theta_tilde) / norm(s_prime))
    residual = flat(new.s_tilde) - rho0 * flat(s_prime)  # ρ1 ν
    np.testing.assert_allclose(jnp.abs(residual), jnp.abs(residual)[0], rtol=1e-9)
    nu_flat = jnp.sign(residual)
    nu = ravel_pytree(state0)[1](nu_flat)
    theta_prime = jax.vjp(lambda p: step_state(p, state0), params)[1](nu)[0]
    rho1 = jnp.sqrt(norm(theta_prime) / norm(nu))
    np.testing.assert_allclose(
        flat(new.s_tilde), rho0 * flat(s_prime) + rho1 * nu_flat, rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(
        flat(new.theta_tilde),
        flat(carry.theta_tilde) / rho0 + flat(theta_prime) / rho1,
        rtol=1e-9,
        atol=1e-12,
    )
    # Balanced: each rank-one term has equal norms on its two sides.
    np.testing.assert_allclose(rho0 * norm(s_prime), norm(carry.theta_tilde) / rho0, rtol=1e-9)
    np.testing.assert_allclose(rho1 * norm(nu), norm(theta_prime) / rho1, rtol=1e-9)


def sigmoid(z):
    return 1 / (1 + jnp.exp(-z))


def lstm_step_by_hand(cell, readout, c, h, x, y):
    """One step of flax's LSTMCell and a linear readout with a squared error, written
    out: the gates ``(i, f, o, g)``, ``c_t``, ``h_t`` and the readout's error (output
    minus target), for the tests that write a rule out by hand."""
    z = {
        g: x @ cell[f"i{g}"]["kernel"] + h @ cell[f"h{g}"]["kernel"] + cell[f"h{g}"]["bias"]
        for g in "ifgo"
    }
    i, f, o, g = sigmoid(z["i"]), sigmoid(z["f"]), sigmoid(z["o"]), jnp.tanh(z["g"])
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (i, f, o, g), c_new, h_new, h_new @ readout["kernel"] + readout["bias"] - y
