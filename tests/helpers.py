"""Small shared pieces for the tests: tiny models, streams and scan drivers."""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import uorojax


def tiny_rnn(hidden=3, inputs=2, outputs=2, seed=0):
    model = uorojax.tanh_rnn(hidden, inputs, outputs, dtype=jnp.float64)
    params, h0 = model.init(jax.random.key(seed))
    # A non-zero initial state and bias make every Jacobian block non-trivial.
    params["b"] = 0.1 * jnp.arange(hidden, dtype=jnp.float64)
    h0 = 0.3 * jnp.ones(hidden, jnp.float64)
    return model, params, h0


def regression_stream(length, inputs=2, outputs=2, seed=1):
    kx, ky = jax.random.split(jax.random.key(seed))
    return (
        jax.random.normal(kx, (length, inputs), jnp.float64),
        jax.random.normal(ky, (length, outputs), jnp.float64),
    )


def scan_estimator(est, params, state0, xs, ys, key):
    """Runs ``est.step`` over a sequence with frozen params; returns (carry, grads, infos)."""
    carry = est.init_state(params, state0, example_x=xs[0], example_y=ys[0])

    def body(carry, inp):
        x, y, k = inp
        grads, carry, info = est.step(params, carry, x, y, k)
        return carry, (grads, info)

    keys = jax.random.split(key, jax.tree.leaves(xs)[0].shape[0])
    carry, (grads, infos) = jax.lax.scan(body, carry, (xs, ys, keys))
    return carry, grads, infos


def bptt_grad(apply_fn, loss_fn, params, state0, xs, ys, t):
    """jax.grad of L_t through the whole unrolled sequence up to step t."""

    def loss_t(p):
        _, losses, _ = uorojax.unroll(apply_fn, loss_fn, p, state0, xs[: t + 1], ys[: t + 1])
        return losses[t]

    return jax.grad(loss_t)(params)


def flat(tree):
    return ravel_pytree(tree)[0]


def rel_err(a, b):
    a, b = flat(a), flat(b)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
