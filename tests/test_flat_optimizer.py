"""The optimizer on the raveled params (``make_trainer(flatten=...)``, ``as_optax``): which
optimizers take that path, the same numbers as per leaf, the non-finite guard and resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import flat, regression_stream, tiny_rnn

import uorojax
from uorojax.training.flat import flattens

LOSS = uorojax.squared_error


def _two_layer_params():
    """Leaves of several shapes, matrices large enough for Adafactor to factor."""
    return {
        "w": jnp.ones((4, 3), jnp.float32),
        "b": jnp.ones((3,), jnp.float32),
        "v": jnp.ones((3, 5), jnp.float32),
    }


ELEMENTWISE = {
    "adam": optax.adam(1e-3),
    "sgd_momentum": optax.sgd(1e-2, momentum=0.9),
    "clip_global_then_adam": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
    "schedule": optax.adamw(optax.linear_schedule(1e-3, 1e-4, 100), weight_decay=1e-2),
    "sign": optax.chain(optax.scale_by_sign(), optax.scale(-1e-2)),
}

TREE_DEPENDENT = {
    "lamb_per_leaf_trust_ratio": optax.lamb(1e-3),
    "adafactor_factored": optax.adafactor(1e-3, min_dim_size_to_factor=2),
    "masked_by_tree": optax.masked(optax.adam(1e-3), {"w": True, "b": False, "v": True}),
    "multi_transform_by_labels": optax.multi_transform(
        {"a": optax.adam(1e-3), "s": optax.sgd(1e-2)}, {"w": "a", "b": "s", "v": "a"}
    ),
    "clip_per_leaf": optax.clip_by_block_rms(0.1),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_optimizers_take_the_flat_path(name):
    assert flattens(ELEMENTWISE[name], _two_layer_params())


@pytest.mark.parametrize("name", sorted(TREE_DEPENDENT))
def test_optimizers_that_depend_on_the_tree_keep_the_per_leaf_path(name):
    assert not flattens(TREE_DEPENDENT[name], _two_layer_params())


def test_mixed_dtypes_and_explicit_choices():
    mixed = {"a": jnp.ones(3, jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    assert not flattens(optax.adam(1e-3), mixed)
    assert flattens(optax.adam(1e-3), mixed, True)
    assert not flattens(optax.adam(1e-3), _two_layer_params(), False)
    with pytest.raises(uorojax.ConfigError, match="flatten"):
        uorojax.make_trainer(uorojax.tbptt(lambda p, s, x: (s, s), LOSS, 1), optax.sgd(1), flatten="yes")  # fmt: skip


class _Unhashable:
    """An optimizer-like object that cannot be a cache key."""

    __hash__ = None

    def __init__(self, tx):
        self.init, self.update = tx.init, tx.update


def test_an_unhashable_optimizer_is_probed_without_the_cache():
    assert flattens(_Unhashable(optax.adam(1e-3)), _two_layer_params())
    assert not flattens(_Unhashable(optax.lamb(1e-3)), _two_layer_params())


@pytest.mark.parametrize("name", ["adam", "clip_global_then_adam", "sign"])
@pytest.mark.parametrize("estimator", ["uoro", "tbptt"])
def test_flat_and_per_leaf_trainers_agree(name, estimator):
    """The same updates flat as leaf by leaf, with the window gate (TBPTT(3)) too; the
    flat trainer's optimizer state is the state of one vector."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(24)
    est = (
        uorojax.uoro(model.apply, LOSS)
        if estimator == "uoro"
        else uorojax.tbptt(model.apply, LOSS, 3, example_x=xs[0], example_y=ys[0])
    )
    runs = {}
    for flatten in (True, False):
        trainer = uorojax.make_trainer(est, ELEMENTWISE[name], flatten=flatten)
        ts = trainer.init(params, h0, jax.random.key(1))
        runs[flatten] = trainer.run(ts, xs, ys)
    (flat_ts, flat_m), (leaf_ts, leaf_m) = runs[True], runs[False]
    np.testing.assert_allclose(flat(flat_ts.params), flat(leaf_ts.params), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(flat_m["grad_norm"], leaf_m["grad_norm"], rtol=1e-12)
    np.testing.assert_array_equal(flat_m["loss"][:2], leaf_m["loss"][:2])
    size = flat(params).size
    vectors = [a for a in jax.tree.leaves(flat_ts.opt_state) if a.ndim]
    assert vectors and all(a.shape == (size,) for a in vectors) or name == "sign"
    assert float(jnp.abs(flat(flat_ts.params) - flat(params)).max()) > 1e-3


def _inf_gradient_at(est, marker):
    """The estimator, its gradient made +inf (loss and carry finite) at the step whose
    first input equals ``marker``."""

    def step(params, carry, x, y, key):
        grads, carry, info = est.step(params, carry, x, y, key)
        hit = x[0] == marker
        return jax.tree.map(lambda g: jnp.where(hit, jnp.inf, g), grads), carry, info

    return est._replace(step=step)


@pytest.mark.parametrize("flatten", [True, False])
def test_an_infinite_gradient_is_dropped_even_when_the_update_is_finite(flatten):
    """Sign descent turns an inf gradient into a finite update: only the gradient's own
    test can drop the step. "skip" leaves params and optimizer state as they were and
    counts it; "raise" halts there."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(10)
    xs = xs.at[6, 0].set(7.0)
    est = _inf_gradient_at(uorojax.uoro(model.apply, LOSS), 7.0)
    tx = ELEMENTWISE["sign"]
    skip = uorojax.make_trainer(est, tx, nonfinite="skip", flatten=flatten)
    ts0 = skip.init(params, h0, jax.random.key(0))
    before, _ = skip.run(ts0, xs[:6], ys[:6])
    after, metrics = skip.run(before, xs[6:7], ys[6:7])
    assert bool(metrics["skipped"][0]) and int(after.num_skipped) == 1
    for a, b in zip(jax.tree.leaves((before.params, before.opt_state)), jax.tree.leaves((after.params, after.opt_state))):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    halt = uorojax.make_trainer(est, tx, nonfinite="raise", flatten=flatten)
    with pytest.raises(uorojax.NonFiniteError, match="at stream step 6") as info:
        halt.run(halt.init(params, h0, jax.random.key(0)), xs, ys)
    np.testing.assert_array_equal(flat(info.value.train_state.params), flat(before.params))


@pytest.mark.parametrize("where", ["x", "params_overflow"])
def test_no_nan_reaches_the_flat_params(where):
    """A NaN input, or an update that overflows the params, is refused on the flat
    path: the params stay finite and equal to the last accepted ones."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(8)
    tx = optax.adam(1e-2)
    if where == "x":
        xs = xs.at[5].set(jnp.nan)
    else:  # every update adds 1e308: b[0] goes past the largest float
        params = {**params, "b": params["b"].at[0].set(jnp.finfo(jnp.float64).max)}
        tx = optax.stateless(lambda u, p: jax.tree.map(lambda a: jnp.full_like(a, 1e308), u))
    assert flattens(tx, params)
    trainer = uorojax.make_trainer(uorojax.uoro(model.apply, LOSS), tx, nonfinite="skip")
    ts, metrics = trainer.run(trainer.init(params, h0, jax.random.key(0)), xs, ys)
    assert np.all(np.isfinite(flat(ts.params))) and np.all(np.isfinite(flat(ts.opt_state)))
    skipped = np.asarray(metrics["skipped"])
    if where == "x":
        assert skipped.tolist() == [False] * 5 + [True] + [False] * 2
    else:
        assert skipped.all() and int(ts.num_skipped) == 8
        np.testing.assert_array_equal(flat(ts.params), flat(params))


def test_resume_is_bit_exact_on_the_flat_path():
    """Chunks 0:5 then 5:16 (the state passed between them) give the same bits as one
    chunk 0:16, for an optimizer with a schedule and moments."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(16)
    tx = ELEMENTWISE["schedule"]
    trainer = uorojax.make_trainer(uorojax.uoro(model.apply, LOSS), tx, donate=True)
    whole, m_whole = trainer.run(trainer.init(params, h0, jax.random.key(2)), xs, ys)
    part, m0 = trainer.run(trainer.init(params, h0, jax.random.key(2)), xs[:5], ys[:5])
    part = part._replace(key=jax.random.key_data(part.key))
    saved = jax.tree.map(np.asarray, part)  # as a checkpoint would hold it
    saved = jax.tree.map(jnp.asarray, saved)
    resumed, m1 = trainer.run(saved._replace(key=jax.random.wrap_key_data(saved.key)), xs[5:], ys[5:])  # fmt: skip
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(m_whole["loss"], np.concatenate([m0["loss"], m1["loss"]]))


@pytest.mark.parametrize("flatten", [True, False])
def test_as_optax_with_an_optimizer_matches_the_trainer(flatten):
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(12)
    est = uorojax.tbptt(model.apply, LOSS, 3, example_x=xs[0], example_y=ys[0])
    tx = ELEMENTWISE["clip_global_then_adam"]
    trainer = uorojax.make_trainer(est, tx, flatten=flatten)
    ts, _ = trainer.run(trainer.init(params, h0, jax.random.key(4)), xs, ys)
    online = uorojax.as_optax(est, h0, optimizer=tx, flatten=flatten)
    p, state = params, online.init(params)
    update = jax.jit(lambda p, s, x, y, k: online.update(None, s, p, x=x, y=y, key=k))
    for t in range(12):
        updates, state = update(p, state, xs[t], ys[t], uorojax.step_key(jax.random.key(4), t))
        p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(flat(p), flat(ts.params), rtol=1e-12, atol=1e-15)
    assert (jax.tree.leaves(state.opt_state)[1].ndim == 1) == flatten
