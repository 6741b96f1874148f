"""Model adapters and initialisers: Equinox and nnx modules, the authors' Torch7 init."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bptt_grad, regression_stream, rel_err, scan_estimator

import uorojax
from uorojax import ConfigError
from uorojax.models.structure import Units

T = 6


class EquinoxRNN(eqx.Module):
    """A GRU cell and a linear readout: ``(state, x) -> (state, output)``."""

    cell: eqx.nn.GRUCell
    readout: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.cell = eqx.nn.GRUCell(2, 3, key=k1, dtype=jnp.float64)
        self.readout = eqx.nn.Linear(3, 2, key=k2, dtype=jnp.float64)

    def __call__(self, h, x):
        h = self.cell(x, h)
        return h, self.readout(h)


def test_equinox_module_is_exact_under_rtrl_and_trains():
    model = uorojax.from_equinox(EquinoxRNN(jax.random.key(0)), 0.1 * jnp.ones(3))
    (params, h0), apply_fn = model.init(None, None), model.apply
    xs, ys = regression_stream(T)
    _, grads, _ = scan_estimator(
        uorojax.rtrl(apply_fn, uorojax.squared_error), params, h0, xs, ys, jax.random.key(0)
    )
    exact = bptt_grad(apply_fn, uorojax.squared_error, params, h0, xs, ys, T - 1)
    assert rel_err(jax.tree.map(lambda g: g[-1], grads), exact) < 1e-10
    import optax

    trainer = uorojax.make_trainer(uorojax.uoro(apply_fn, uorojax.squared_error), optax.adam(1e-2))
    ts, metrics = trainer.run(trainer.init(params, h0, jax.random.key(1)), xs, ys)
    assert isinstance(ts.params, EquinoxRNN) and np.all(np.isfinite(metrics["loss"]))


def test_torch7_init_is_the_authors_convention():
    model = uorojax.linen_model("lstm", 16, 5, vocab_size=5, init="torch7")
    params, _ = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    cell = params["params"]["cells_0"]
    for name in ("ii", "hi", "hf", "ho"):
        fan_in = cell[name]["kernel"].shape[0]
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(cell[name]["kernel"]).max() <= bound
        assert np.abs(cell[name]["kernel"]).max() > 0.9 * bound  # uniform, not normal
    np.testing.assert_array_equal(cell["hf"]["bias"], np.float32(-0.3))  # the forget-gate bias
    assert (
        np.abs(cell["hi"]["bias"]).max() <= 1 / np.sqrt(16) and np.abs(cell["hi"]["bias"]).max() > 0
    )
    readout = params["params"]["readout"]
    assert np.abs(readout["kernel"]).max() <= 1 / np.sqrt(16)
    embedded = uorojax.linen_model("gru", 16, 5, vocab_size=5, embed_dim=64, init="torch7")
    table = embedded.init(jax.random.key(1), jnp.zeros((), jnp.int32))[0]["params"]["embed"][
        "embedding"
    ]
    assert abs(float(jnp.std(table)) - 1.0) < 0.15  # N(0, 1)
    flax_init = uorojax.linen_model("lstm", 16, 5, vocab_size=5).init(
        jax.random.key(0), jnp.zeros((), jnp.int32)
    )[0]
    assert float(jnp.abs(flax_init["params"]["cells_0"]["hf"]["bias"]).max()) == 0.0  # flax: zeros


def test_the_element_wise_cell_has_a_diagonal_recurrence():
    model = uorojax.linen_model("elementwise_mgu", 4, 2)
    params, _ = model.init(jax.random.key(0), jnp.zeros(2))
    h0 = 0.3 * jnp.ones(4)
    a = jax.jacfwd(lambda h: model.apply(params, (h,), jnp.ones(2))[0][0])(h0)
    assert a.shape == (4, 4)
    np.testing.assert_array_equal(a - jnp.diag(jnp.diagonal(a)), 0.0)
    assert float(jnp.abs(jnp.diagonal(a)).min()) > 0


def test_flat_params_train_like_the_tree():
    """The same model over one flat vector: every estimator that does not read the tree
    gives the same training run, up to the order of float sums."""
    import optax
    from helpers import tiny_rnn

    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(12)
    apply_flat, theta, unravel = uorojax.ravel_params(model.apply, params)
    assert theta.ndim == 1 and theta.size == sum(a.size for a in jax.tree.leaves(params))
    for name in ("uoro", "rtrl", "tbptt"):
        runs = []
        for apply_fn, p in ((model.apply, params), (apply_flat, theta)):
            est = uorojax.registry.build_estimator(
                name, apply_fn, uorojax.squared_error,
                **({"truncation": 3} if name == "tbptt" else {}), example_x=xs[0], example_y=ys[0],
            )  # fmt: skip
            trainer = uorojax.make_trainer(est, optax.adam(1e-2))
            runs.append(trainer.run(trainer.init(p, h0, jax.random.key(3)), xs, ys))
        (tree_ts, tree_m), (flat_ts, flat_m) = runs
        np.testing.assert_allclose(flat_m["loss"], tree_m["loss"], rtol=1e-10)
        for a, b in zip(jax.tree.leaves(unravel(flat_ts.params)), jax.tree.leaves(tree_ts.params)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------- adapters


def test_an_nnx_factory_is_seeded_by_init_and_the_model_carries_its_structure():
    from flax import nnx

    make = functools.partial(nnx.GRUCell, 2, 3)
    model = uorojax.from_nnx(make, jnp.zeros(3), example_x=jnp.zeros(2))
    a, h0 = model.init(jax.random.key(0), jnp.zeros(2))
    b, _ = model.init(jax.random.key(0), jnp.zeros(2))
    c, _ = model.init(jax.random.key(1), jnp.zeros(2))
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, b))
    assert not jnp.array_equal(jax.tree.leaves(a)[0], jax.tree.leaves(c)[0])
    assert model.example_x.shape == (2,)
    assert model.structure.param_units(("dense_h", "kernel", "value")) == Units(0, 1, 3)
    built = make(rngs=nnx.Rngs(7))
    same = uorojax.from_nnx(built, jnp.zeros(3))
    np.testing.assert_array_equal(
        same.init(jax.random.key(0), None)[0]["dense_h"]["kernel"][...], built.dense_h.kernel[...]
    )
    assert same.structure is None  # no example input: nothing inferred


def test_an_equinox_gru_cell_is_adapted_without_a_wrapper():
    """eqx.nn.GRUCell is called cell(x, h) and returns only h: call="x_state", and the
    new state is the output too. RTRL on it is exact."""
    model = uorojax.from_equinox(
        lambda key: eqx.nn.GRUCell(2, 3, key=key, dtype=jnp.float64),
        0.1 * jnp.ones(3),
        example_x=jnp.zeros(2),
        call="x_state",
    )
    params, h0 = model.init(jax.random.key(3), jnp.zeros(2))
    new_h, out = model.apply(params, h0, jnp.ones(2))
    np.testing.assert_array_equal(new_h, out)
    assert model.structure.param_units(("weight_hh",)) == Units(0, 0, 3)
    xs, ys = regression_stream(T, outputs=3)
    _, grads, _ = scan_estimator(
        uorojax.rtrl(model.apply, uorojax.squared_error), params, h0, xs, ys, jax.random.key(0)
    )
    exact = bptt_grad(model.apply, uorojax.squared_error, params, h0, xs, ys, T - 1)
    assert rel_err(jax.tree.map(lambda g: g[-1], grads), exact) < 1e-10


class ChoGRU(eqx.Module):
    """A reset gate applied before the recurrent kernel: inference refuses it."""

    w: jax.Array
    u: jax.Array

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.w = jax.random.normal(k1, (2, 3, 2))
        self.u = jax.random.normal(k2, (2, 3, 3))

    def __call__(self, h, x):
        r = jax.nn.sigmoid(self.w[0] @ x + self.u[0] @ h)
        return jnp.tanh(self.w[1] @ x + self.u[1] @ (r * h)), h


class ThreeOutputs(eqx.Module):
    def __call__(self, h, x):
        return h, h, x


def test_a_model_inference_refuses_has_no_structure_and_bad_calls_are_named():
    model = uorojax.from_equinox(ChoGRU, jnp.zeros(3), example_x=jnp.zeros(2))
    assert model.structure is None and model.example_x is not None
    params, h0 = model.init(jax.random.key(0), None)
    assert model.apply(params, h0, jnp.ones(2))[0].shape == (3,)
    with pytest.raises(ConfigError, match="call must be one of"):
        uorojax.from_equinox(ChoGRU, jnp.zeros(3), call="h_x")
    odd = uorojax.from_equinox(ThreeOutputs(), jnp.zeros(3))
    with pytest.raises(ConfigError, match=r"neither \(state, output\) nor a new state"):
        odd.apply(*odd.init(None, None), jnp.ones(2))
    with pytest.raises(ConfigError, match="module must be a module or a function"):
        uorojax.from_nnx(3, jnp.zeros(3))
