"""uorojax.models.inference's evaluator: the same values as the model in every mode; in
"diagonal" mode the state Jacobian is its own unit-diagonal blocks, in "none" mode the
recurrent kernels are out of it, and params derivatives stay exact; probes give exact
pre-activation derivatives; everything runs under jit, vmap, scan, jvp and vjp."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from inference_models import VALID, nnx_gru
from jax.flatten_util import ravel_pytree

import uorojax
from uorojax.models.inference import infer
from uorojax.models.structure import diagonalised_params

MODES = ("full", "diagonal", "none")


def linen(cell, layers=1):
    def make():
        model = uorojax.linen_model(cell, 3, 2, num_layers=layers)
        params, state = model.init(jax.random.key(0), jnp.zeros(2))
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        state = jax.tree.map(lambda a: 0.2 + a.astype(jnp.float64), state)
        return model, params, state, jnp.array([0.5, -1.0])

    return make


def leaky():
    model = uorojax.leaky_rnn(3, 2, 2, tau=4.0, dtype=jnp.float64)
    params, h = model.init(jax.random.key(0))
    return model, params, 0.3 * jnp.ones(3), jnp.array([0.5, -1.0])


def plain(name):
    def make():
        case = VALID[name]()
        return uorojax.Model(None, case.apply), case.params, case.state, case.x

    return make


MODELS = {
    "linen_lstm_2": linen("lstm", 2),
    "linen_gru": linen("gru"),
    "leaky_rnn": leaky,
    **{
        name: plain(name)
        for name in (
            "concat_lstm",
            "peephole_lstm",
            "two_layer_gru",
            "nnx_gru",
            "eqx_gru",
            "control_flow_rnn",
        )
    },
}


@functools.cache
def setup(name):
    model, params, state, x = MODELS[name]()
    return model, params, state, x, infer(model.apply, params, state, x)


def state_jacobian(apply, params, state, x):
    flat, unravel = ravel_pytree(state)
    return jax.jacfwd(lambda s: ravel_pytree(apply(params, unravel(s), x)[0])[0])(flat)


def params_pullback(apply, params, state, x):
    """(new state, output) flat, and the params cotangent of a fixed random cotangent."""
    out, pull = jax.vjp(lambda p: ravel_pytree(apply(p, state, x))[0], params)
    cotangent = jax.random.normal(jax.random.key(7), out.shape, out.dtype)
    return out, ravel_pytree(pull(cotangent))[0]


def in_mode(program, mode):
    return lambda p, s, x: program.apply(p, s, x, recurrent=mode)


@functools.cache
def results(name):
    """For the model and each mode: values, params pullback and state Jacobian (one
    compiled program per model)."""
    model, params, state, x, program = setup(name)
    applies = {"model": model.apply, **{mode: in_mode(program, mode) for mode in MODES}}

    @jax.jit
    def run(params, state, x):
        return {
            key: (*params_pullback(f, params, state, x), state_jacobian(f, params, state, x))
            for key, f in applies.items()
        }

    return jax.tree.map(np.asarray, run(params, state, x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_mode_keeps_the_values_and_the_params_derivatives(name):
    res = results(name)
    value, pull, _ = res["model"]
    for mode in MODES:
        np.testing.assert_allclose(res[mode][0], value, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res[mode][1], pull, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_diagonal_state_jacobian_is_the_unit_diagonal_blocks(name):
    _, _, state, _, program = setup(name)
    res = results(name)
    true, diag = res["model"][2], res["diagonal"][2]
    np.testing.assert_allclose(res["full"][2], true, rtol=0, atol=1e-12)
    sizes = [np.size(leaf) for leaf in jax.tree.leaves(state)]
    offsets = np.cumsum([0, *sizes])
    for leaves in program.layers:
        for k in leaves:
            for k2 in leaves:
                rows, cols = slice(offsets[k], offsets[k + 1]), slice(offsets[k2], offsets[k2 + 1])
                expected = np.diag(np.diagonal(true[rows, cols]))
                np.testing.assert_allclose(diag[rows, cols], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["linen_lstm_2", "linen_gru", "leaky_rnn"])
def test_modes_match_the_hand_written_diagonalisation(name):
    """Against uorojax.structure.diagonalised_params (which moves the off-diagonal
    product into the bias): the whole state Jacobian agrees, across layers too."""
    model, params, state, x, program = setup(name)
    for mode, keep in (("diagonal", True), ("none", False)):
        written = diagonalised_params(model.structure, params, state, keep_diagonal=keep)
        expected = state_jacobian(model.apply, written, state, x)
        np.testing.assert_allclose(results(name)[mode][2], expected, rtol=0, atol=1e-12)


def test_none_mode_leaves_the_leak():
    np.testing.assert_allclose(results("leaky_rnn")["none"][2], 0.75 * np.eye(3), atol=1e-12)


def nnx_gru_by_hand(p, h, x, zeta_i, zeta_h):
    """flax.nnx.GRUCell written out, with ζ added to its two dense maps."""
    gi = x @ p["dense_i"]["kernel"][...] + zeta_i + p["dense_i"]["bias"][...]
    gh = h @ p["dense_h"]["kernel"][...] + zeta_h
    ir, iz, in_ = jnp.split(gi, 3)
    hr, hz, hn = jnp.split(gh, 3)
    r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
    n = jnp.tanh(in_ + r * hn)
    return (1 - z) * n + z * h


def test_probes_give_exact_preactivation_derivatives_at_a_zero_state():
    """nnx's dense_h has no bias: at h = 0 no params direction moves its output, but a
    probe does."""
    case = nnx_gru()
    h0 = jnp.zeros(3)
    program = infer(case.apply, case.params, h0, case.x)
    is_h = [u.leaves[0][0] == 0 for u in program.dense_uses]  # leaf 0: dense_h's kernel
    zeros = program.probe_zeros()

    def by_program(probes):
        return program.apply(case.params, h0, case.x, probes=probes)[0]

    def by_hand(probes):
        zi, zh = probes[is_h.index(False)], probes[is_h.index(True)]
        return nnx_gru_by_hand(case.params, h0, case.x, zi, zh)

    for f in (jax.jacfwd, jax.jacrev):
        for got, want in zip(f(by_program)(zeros), f(by_hand)(zeros)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    loss = lambda h: jnp.sum(jnp.sin(h))  # noqa: E731
    got = jax.grad(lambda z: loss(by_program(z)))(zeros)
    want = jax.grad(lambda z: loss(by_hand(z)))(zeros)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert np.abs(np.asarray(got[is_h.index(True)])).max() > 0.01


def test_a_kernel_gradient_is_its_input_times_the_probe_gradient():
    model, params, state, x, program = setup("linen_lstm_2")
    loss = lambda out: jnp.sum(jnp.cos(ravel_pytree(out)[0]))  # noqa: E731
    grads = jax.grad(lambda p: loss(model.apply(p, state, x)))(params)
    zeros = [jnp.zeros(u.out_shape) for u in program.dense_uses]
    dz = jax.grad(lambda z: loss(program.apply(params, state, x, probes=z)))(zeros)
    inputs = program.dense_inputs(params, state, x)
    flat_grads = jax.tree.leaves(grads)
    for u in program.dense_uses:
        ((j, _),) = u.leaves
        np.testing.assert_allclose(
            flat_grads[j], np.outer(inputs[u.index], dz[u.index]), atol=1e-12
        )


def test_the_program_runs_under_jit_vmap_scan_jvp_and_vjp():
    model, params, state, x, program = setup("linen_lstm_2")
    states = jax.tree.map(lambda a: jnp.stack([a, -a]), state)

    def run(apply):
        def step(s, xt):
            s, out = jax.vmap(apply, in_axes=(None, 0, None))(params, s, xt)
            return s, out

        return jax.jit(lambda s: jax.lax.scan(step, s, jnp.stack([x, -x, 2 * x])))(states)

    np.testing.assert_allclose(
        ravel_pytree(run(in_mode(program, "diagonal")))[0],
        ravel_pytree(run(model.apply))[0],
        atol=1e-12,
    )
    tangent = jax.tree.map(jnp.ones_like, params)
    _, jvp_got = jax.jvp(
        lambda p: program.apply(p, state, x, recurrent="none"), (params,), (tangent,)
    )
    _, jvp_true = jax.jvp(lambda p: model.apply(p, state, x), (params,), (tangent,))
    np.testing.assert_allclose(ravel_pytree(jvp_got)[0], ravel_pytree(jvp_true)[0], atol=1e-12)
    out, pull = jax.vjp(lambda s: program.apply(params, s, x, recurrent="diagonal")[0], state)
    (cotangent,) = pull(jax.tree.map(jnp.ones_like, out))
    assert jax.tree.structure(cotangent) == jax.tree.structure(state)
