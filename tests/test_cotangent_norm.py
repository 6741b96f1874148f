"""pullback_and_norm: the VJP unchanged, its norm exact, and the factored norms in use."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import flat

import uorojax
from uorojax.estimators import cotangent_norm
from uorojax.estimators.cotangent_norm import pullback_and_norm

F64 = jnp.float64


def _cast(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, F64), tree)


def _linen(cell, layers=1, embed=None):
    def build():
        model = uorojax.linen_model(cell, 4, 3, num_layers=layers, vocab_size=5, embed_dim=embed)
        params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
        return _cast(params), _cast(state0), model.apply, jnp.asarray(2)

    return build


def _tanh_rnn():
    model = uorojax.tanh_rnn(4, 2, 3, dtype=F64)
    params, h0 = model.init(jax.random.key(0))
    return params, h0, model.apply, jnp.array([0.5, -1.0], F64)


def _flat_lstm():  # one flat vector: the cotangent is a concatenation of outer products
    params, state0, apply_fn, x = _linen("lstm")()
    flat_apply, flat_params, _ = uorojax.ravel_params(apply_fn, params)
    return flat_params, state0, flat_apply, x


def _tied():
    """One matrix used twice in a step (input and recurrent map): its cotangent is a sum
    of two outer products, which has no factored norm."""
    params = {"w": jnp.arange(16.0, dtype=F64).reshape(4, 4) / 20, "b": jnp.ones(4, F64) / 10}

    def apply(p, h, x):
        h = jnp.tanh(p["w"] @ h + p["w"] @ x + p["b"])
        return h, h

    return params, 0.3 * jnp.ones(4, F64), apply, jnp.linspace(-1, 1, 4, dtype=F64)


def _scaled():
    """A kernel scaled by a learned scalar, divided by a constant, and applied inside a
    jitted helper: the scalar rules and the inlined call."""
    params = {"w": jnp.arange(12.0, dtype=F64).reshape(3, 4) / 20, "g": jnp.asarray(1.5, F64)}

    @jax.jit
    def dense(w, a):
        return a @ w

    def apply(p, h, x):
        h = jnp.tanh(dense(p["g"] * p["w"] / 3.0, jnp.concatenate([h[:1], x])) + h)
        return h, h

    return params, 0.2 * jnp.ones(4, F64), apply, jnp.array([0.1, 0.7], F64)


@jax.custom_vjp
def _halve_gradient(a):
    return a


_halve_gradient.defvjp(lambda a: (a, None), lambda _, g: (0.5 * g,))


def _transformed():
    """A cell under ``jax.checkpoint``, with a custom VJP and an inner ``lax.scan``:
    higher-order primitives are bound as they are."""
    params = {"w": jnp.arange(16.0, dtype=F64).reshape(4, 4) / 30, "u": jnp.ones((2, 4), F64)}

    @jax.checkpoint
    def apply(p, h, x):
        def sub_step(h, _):
            return jnp.tanh(h @ _halve_gradient(p["w"]) + x @ p["u"]), None

        h = jax.lax.scan(sub_step, h, None, length=2)[0]
        return h, h

    return params, 0.2 * jnp.ones(4, F64), apply, jnp.array([0.4, -0.3], F64)


class _EqxRNN(eqx.Module):
    cell: eqx.nn.GRUCell

    def __init__(self):
        self.cell = eqx.nn.GRUCell(2, 3, key=jax.random.key(0), dtype=F64)

    def __call__(self, h, x):
        h = self.cell(x, h)
        return h, h


def _equinox():
    model = uorojax.from_equinox(_EqxRNN(), 0.1 * jnp.ones(3, F64))
    (params, h0), apply_fn = model.init(None, None), model.apply
    return params, h0, apply_fn, jnp.array([0.3, -0.2], F64)


def _nnx():
    cell = nnx.GRUCell(2, 3, rngs=nnx.Rngs(0))
    model = uorojax.from_nnx(cell, cell.initialize_carry((2,), nnx.Rngs(1)))
    params, apply_fn = model.init(None, None)[0], model.apply
    return _cast(params), 0.1 * jnp.ones(3, F64), apply_fn, jnp.array([0.3, -0.2], F64)


MODELS = {
    **{cell: _linen(cell) for cell in sorted(uorojax.models.LINEN_CELLS)},
    "lstm_two_layers_embedded": _linen("lstm", layers=2, embed=3),
    "tanh_rnn": _tanh_rnn,
    "flat_lstm": _flat_lstm,
    "tied_weight": _tied,
    "scaled_kernel_in_jit": _scaled,
    "checkpoint_custom_vjp_scan": _transformed,
    "equinox_gru": _equinox,
    "nnx_gru": _nnx,
}


def _noise(state, scale):
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, jnp.shape(a), F64) for k, a in zip(keys, leaves)]
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_vjp_is_unchanged_and_its_norm_exact(name):
    params, state, apply_fn, x = MODELS[name]()
    state = jax.tree.map(lambda a, n: a + n, state, _noise(state, 0.3))
    nu = _noise(state, 1.0)
    fn = lambda p: apply_fn(p, state, x)[0]  # noqa: E731
    expected = jax.vjp(fn, params)[1](nu)[0]
    got, norm = pullback_and_norm(fn, params, nu)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    np.testing.assert_allclose(flat(got), flat(expected), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(norm, uorojax.tree_norm(expected), rtol=1e-13)


@pytest.mark.parametrize("name", ["lstm", "gru", "flat_lstm", "tied_weight", "nnx_gru"])
def test_per_stream_under_vmap_and_jit(name):
    """Three streams, each with its own state and noise: the batched layout hint and
    the factored norms give each stream's norm."""
    params, state, apply_fn, x = MODELS[name]()
    states = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a + 0.1, -a]), state)
    nus = jax.tree.map(lambda a: jnp.stack([a, -2.0 * a, a + 1.0]), _noise(state, 1.0))

    def one(batched, s, nu):
        fn = lambda p: apply_fn(p, s, x)[0]  # noqa: E731
        if batched is None:
            g = jax.vjp(fn, params)[1](nu)[0]
            return g, uorojax.tree_norm(g)
        return pullback_and_norm(fn, params, nu, batched=batched)

    expected_g, expected_norm = jax.vmap(functools.partial(one, None))(states, nus)
    for batched in (True, False):
        g, norm = jax.jit(jax.vmap(functools.partial(one, batched)))(states, nus)
        np.testing.assert_allclose(flat(g), flat(expected_g), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(norm, expected_norm, rtol=1e-12)


def _factored(name):
    """Which output leaves get their squared norm from factors (by leaf path)."""
    params, state, apply_fn, x = MODELS[name]()

    def pullback(p, nu):
        return jax.vjp(lambda q: apply_fn(q, state, x)[0], p)[1](nu)[0]

    closed = jax.make_jaxpr(pullback)(params, state)
    args = jax.tree.leaves((params, state))
    _, squared = cotangent_norm.evaluate(closed.jaxpr, closed.consts, args, [None] * len(args))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return dict(zip(paths, [sq is not None for sq in squared]))


def test_dense_kernels_get_their_norm_from_their_factors():
    """The point of the module: a dense kernel's cotangent (an outer product) is never
    read for its norm, also where one fused product serves the four gates and its
    cotangent is split into their kernels (OptimizedLSTMCell). Biases (the cotangent
    itself) and a weight used twice are read."""
    for cell in ("lstm", "optimized_lstm", "gru"):
        factored = _factored(cell)
        kernels = [path for path in factored if path.endswith("['kernel']")]
        assert len(kernels) >= 6
        assert all(factored[path] for path in kernels if "readout" not in path), cell
        assert not any(factored[path] for path in factored if path.endswith("['bias']"))
    assert _factored("flat_lstm") == {"": True}  # the concatenation of the leaves
    assert _factored("scaled_kernel_in_jit")["['w']"]
    assert _factored("tied_weight") == {"['b']": False, "['w']": False}


def test_a_non_finite_factor_makes_the_norm_non_finite():
    """The finiteness certificate of UORO's rescaling reads this norm: a NaN or inf in
    an outer product's factors must show in it."""
    params, state, apply_fn, x = MODELS["lstm"]()
    nu = _noise(state, 1.0)
    for bad in (jnp.nan, jnp.inf):
        broken = jax.tree.map(lambda a: a.at[0].set(bad), state)
        _, norm = pullback_and_norm(lambda p: apply_fn(p, broken, x)[0], params, nu)  # noqa: B023
        assert not np.isfinite(norm)
