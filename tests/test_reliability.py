"""Bad input gets a clear error; non-finite values never reach params or tangents."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import flat, regression_stream, tiny_rnn

import uorojax
from uorojax import ConfigError, ModelError, NonFiniteError, tasks

LOSS = uorojax.squared_error


def _step(est, params, state0, x=None, y=None, key=None):
    x = jnp.ones(2) if x is None else x
    y = jnp.ones(2) if y is None else y
    key = jax.random.key(0) if key is None else key
    carry = est.init_state(params, state0)
    return jax.jit(est.step)(params, carry, x, y, key)


ALL = {
    "uoro": lambda apply, loss: uorojax.uoro(apply, loss),
    "rtrl": lambda apply, loss: uorojax.rtrl(apply, loss),
    "tbptt": lambda apply, loss: uorojax.tbptt(
        apply, loss, 2, example_x=jnp.ones(2), example_y=jnp.ones(2)
    ),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_apply_fn_must_return_state_output_pair(name):
    model, params, h0 = tiny_rnn()
    bad = lambda p, s, x: model.apply(p, s, x)[0]  # noqa: E731
    with pytest.raises(
        ModelError,
        match=r"must return a pair \(new_state, output\), got a single value float64\[3\]",
    ):
        _step(ALL[name](bad, LOSS), params, h0)
    triple = lambda p, s, x: (*model.apply(p, s, x), 0)  # noqa: E731
    with pytest.raises(ModelError, match="got tuple of length 3"):
        _step(ALL[name](triple, LOSS), params, h0)


@pytest.mark.parametrize("name", sorted(ALL))
def test_state_must_keep_structure_shape_and_dtype(name):
    model, params, h0 = tiny_rnn()
    grows = lambda p, s, x: (jnp.concatenate([s, s]), model.apply(p, s, x)[1])  # noqa: E731
    with pytest.raises(ModelError, match=r"float64\[6\], but state has float64\[3\]"):
        _step(ALL[name](grows, LOSS), params, h0)
    restructured = lambda p, s, x: ({"h": s}, model.apply(p, s, x)[1])  # noqa: E731
    with pytest.raises(ModelError, match="new_state returned by apply_fn has structure"):
        _step(ALL[name](restructured, LOSS), params, h0)
    recast = lambda p, s, x: (s.astype(jnp.float32), model.apply(p, s, x)[1])  # noqa: E731
    with pytest.raises(ModelError, match="dtype"):
        _step(ALL[name](recast, LOSS), params, h0)


@pytest.mark.parametrize("name", sorted(ALL))
def test_loss_must_be_a_real_scalar(name):
    model, params, h0 = tiny_rnn()
    vector_loss = lambda o, y: jnp.square(o - y)  # noqa: E731
    with pytest.raises(ModelError, match=r"loss_fn must return a real scalar, got float64\[2\]"):
        _step(ALL[name](model.apply, vector_loss), params, h0)


@pytest.mark.parametrize("name", sorted(ALL))
def test_input_of_the_wrong_shape_is_named(name):
    model, params, h0 = tiny_rnn()
    with pytest.raises(
        ModelError, match=r"apply_fn\(params, state, x\) failed for x of float64\[5\]"
    ):
        _step(ALL[name](model.apply, LOSS), params, h0, x=jnp.ones(5))
    with pytest.raises(ModelError, match=r"loss_fn\(output, y\) failed .* y of float64\[3\]"):
        _step(ALL[name](model.apply, LOSS), params, h0, y=jnp.ones(3))


def test_out_of_range_constructor_arguments():
    model, _, _ = tiny_rnn()
    with pytest.raises(ConfigError, match="truncation must be >= 1, got 0"):
        uorojax.tbptt(model.apply, LOSS, 0)
    with pytest.raises(ConfigError, match="truncation must be a positive int, got 2.5"):
        uorojax.tbptt(model.apply, LOSS, 2.5)
    with pytest.raises(ConfigError, match="eps must be finite and >= 0, got -1"):
        uorojax.uoro(model.apply, LOSS, eps=-1)
    with pytest.raises(ConfigError, match="eps must be finite and >= 0, got nan"):
        uorojax.uoro(model.apply, LOSS, eps=float("nan"))
    with pytest.raises(ConfigError, match="num_samples must be >= 1, got 0"):
        uorojax.uoro(model.apply, LOSS, num_samples=0)
    with pytest.raises(ConfigError, match="reduction must be one of"):
        uorojax.tbptt(model.apply, LOSS, 2, reduction="max")
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        uorojax.uoro("not a function", LOSS)
    with pytest.raises(ConfigError, match="nonfinite must be one of"):
        uorojax.make_trainer(uorojax.uoro(model.apply, LOSS), optax.sgd(0.1), nonfinite="ignore")
    with pytest.raises(ConfigError, match="tbptt with truncation 3 buffers a window"):
        uorojax.tbptt(model.apply, LOSS, 3)


def test_non_key_and_integer_params_are_refused():
    model, params, h0 = tiny_rnn()
    est = uorojax.uoro(model.apply, LOSS)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        _step(est, params, h0, key=jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        _step(est, params, h0, key=7)
    int_params = {**params, "c": jnp.zeros(2, jnp.int32)}
    with pytest.raises(TypeError, match=r"params leaf \['c'\] has dtype int32"):
        est.init_state(int_params, h0)
    _step(est, params, h0, key=jax.random.PRNGKey(0))  # raw uint32 keys are fine


def test_stream_axes_and_chunk_lengths_are_checked():
    model, params, _ = tiny_rnn()
    est = uorojax.per_stream(uorojax.uoro(model.apply, LOSS))
    carry = est.init_state(params, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="leading stream axis of size 3"):
        est.step(params, carry, jnp.ones((2, 2)), jnp.ones((3, 2)), jax.random.key(0))
    trainer = uorojax.make_trainer(uorojax.uoro(model.apply, LOSS), optax.sgd(0.1))
    ts = trainer.init(params, jnp.zeros(3), jax.random.key(0))
    with pytest.raises(ValueError, match="leading time axis of size 5"):
        trainer.run(ts, jnp.ones((5, 2)), jnp.ones((4, 2)))


def test_text_files_that_cannot_be_used(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        tasks.CharText(str(empty))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ok\xff\xfe")
    with pytest.raises(ConfigError, match="is not valid UTF-8 \\(byte 2\\)"):
        tasks.CharText(str(binary))
    with pytest.raises(ConfigError, match="does not exist"):
        tasks.CharText(str(tmp_path / "missing.txt"))
    good = tmp_path / "good.txt"
    good.write_text("hello world\n")
    stream = tasks.CharText(str(good), seed=0)
    assert stream.vocab == "".join(sorted(set("hello world\n")))


# ----------------------------------------------------------------------------- non-finite


def _poisoned_stream(at, where="x"):
    xs, ys = regression_stream(20)
    if where == "x":
        xs = xs.at[at].set(jnp.nan)
    else:
        ys = ys.at[at].set(jnp.inf)
    return xs, ys


def assert_same_run(params, clean_params):
    """The params of the same steps run as chunks of other lengths: two compiled programs,
    equal up to the last bit's rounding (one more or one fewer step is ~1e-3 away)."""
    np.testing.assert_allclose(flat(params), flat(clean_params), rtol=1e-14, atol=1e-16)


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("name", ["uoro", "rtrl", "tbptt"])
def test_raise_policy_names_the_step_and_keeps_the_last_finite_state(name, where):
    model, params, h0 = tiny_rnn()
    est = ALL[name](model.apply, LOSS)
    trainer = uorojax.make_trainer(est, optax.adam(1e-2), nonfinite="raise")
    xs, ys = _poisoned_stream(7, where)
    ts0 = trainer.init(params, h0, jax.random.key(0))
    with pytest.raises(NonFiniteError, match="at stream step 7") as info:
        trainer.run(ts0, xs, ys)
    err = info.value
    assert err.step == 7
    good = err.train_state
    assert _all_finite((good.params, good.opt_state, good.carry))
    # TBPTT(2) failed in the window [6, 8): its last finite state is at step 6.
    expected_step = 6 if name == "tbptt" else 7
    assert int(good.step) == expected_step
    clean, _ = trainer.run(ts0, xs[:expected_step], ys[:expected_step])
    assert_same_run(good.params, clean.params)
    # One step at a time, the step that meets the NaN raises too.
    ts = ts0
    with pytest.raises(NonFiniteError, match="at stream step 7") as info:
        for t in range(20):
            ts, _ = trainer.step(ts, xs[t], ys[t])
    assert info.value.step == 7 and _all_finite(info.value.train_state.params)


@pytest.mark.parametrize("name", ["uoro", "rtrl", "tbptt"])
def test_skip_policy_drops_the_step_and_counts_it(name):
    model, params, h0 = tiny_rnn()
    est = ALL[name](model.apply, LOSS)
    trainer = uorojax.make_trainer(est, optax.adam(1e-2), nonfinite="skip")
    xs, ys = _poisoned_stream(7)
    ts = trainer.init(params, h0, jax.random.key(0))
    ts, metrics = trainer.run(ts, xs, ys)
    window = 2 if name == "tbptt" else 1
    assert int(ts.num_skipped) == window
    assert int(ts.step) == 20
    assert np.asarray(metrics["skipped"]).sum() == window
    assert _all_finite((ts.params, ts.opt_state, ts.carry))
    assert float(jnp.abs(flat(ts.params) - flat(params)).max()) > 0  # training went on


@pytest.mark.parametrize("name", ["uoro", "rtrl", "tbptt"])
def test_as_optax_checks_arguments_and_never_passes_on_non_finite_values(name):
    model, params, h0 = tiny_rnn()
    tx = uorojax.as_optax(ALL[name](model.apply, LOSS), h0)
    with pytest.raises(ValueError, match="needs params and the keyword args x, y and key"):
        tx.update(None, tx.init(params), params)
    key = jax.random.key(0)
    state = tx.init(params)
    for _ in range(2):  # a whole TBPTT window
        _, state = tx.update(None, state, params, x=jnp.ones(2), y=jnp.ones(2), key=key)
    assert bool(state.finite)
    for x in (jnp.ones(2), jnp.full(2, jnp.nan)):  # the NaN closes TBPTT's next window
        updates, bad = tx.update(None, state, params, x=x, y=jnp.ones(2), key=key)
        state = bad if bool(bad.finite) else state
    assert not bool(bad.finite)
    assert float(jnp.abs(flat(updates)).max()) == 0.0 and _all_finite(bad.carry)
    for a, b in zip(jax.tree.leaves(bad.carry), jax.tree.leaves(state.carry)):
        np.testing.assert_array_equal(a, b)  # the last finite carry is kept


# ----------------------------------------------------------------------------- certificate


def _poison(carry, where, value):
    """Puts ``value`` into one entry of the named part of a carry."""
    part = getattr(carry, where)
    leaves, treedef = jax.tree.flatten(part)
    leaves[0] = leaves[0].reshape(-1).at[0].set(value).reshape(leaves[0].shape)
    return carry._replace(**{where: jax.tree.unflatten(treedef, leaves)})


CERTIFIED = {  # estimators whose info.carry_finite the trainer trusts, and what to poison
    "uoro": (
        lambda model: uorojax.uoro(model.apply, LOSS),
        [("theta_tilde", jnp.nan), ("theta_tilde", jnp.inf), ("s_tilde", jnp.nan)],
    ),
    "snap1": (
        lambda model: uorojax.snap1(model.apply, LOSS, structure=model.structure),
        [("influence", jnp.nan), ("influence", jnp.inf)],
    ),
}
CERTIFICATE_CASES = [
    (name, where, value)
    for name, (_, poisons) in CERTIFIED.items()
    for where, value in [
        (None, 0.0),
        *poisons,
        (poisons[0][0], 1e300),  # finite, but its norm overflows
        ("state", jnp.inf),
    ]
]


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("name, where, value", CERTIFICATE_CASES)
def test_finiteness_certificate_is_sound(batched, name, where, value):
    """``info.carry_finite`` (which the trainer trusts instead of re-reading the
    tangents or the influence) is True only when the whole new carry is finite, and
    True on a sane carry. UORO bounds the new tangents by the rescaling's norms, SnAp-1
    the new influence by the old one's norm, the pattern's and the Jacobian's diagonal."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(6)
    est = CERTIFIED[name][0](model)
    if batched:
        est = uorojax.per_stream(est)
        h0 = jnp.stack([h0, h0 + 0.1])
        xs, ys = jnp.stack([xs, -xs], 1), jnp.stack([ys, -ys], 1)
    carry = est.init_state(params, h0)
    step = jax.jit(est.step)
    for t in range(5):  # a non-zero carry first
        _, carry, info = step(params, carry, xs[t], ys[t], jax.random.key(t))
        assert bool(info.carry_finite)
    if where is not None:
        carry = _poison(carry, where, value)
    _, new_carry, info = step(params, carry, xs[5], ys[5], jax.random.key(5))
    if bool(info.carry_finite):
        assert _all_finite(new_carry)
    assert bool(info.carry_finite) == (where is None)


def test_trainer_keeps_the_old_carry_when_the_certificate_fails():
    """With "skip", a step whose new tangents are not certified finite leaves params,
    optimizer state and carry exactly as they were."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(4)
    trainer = uorojax.make_trainer(
        uorojax.uoro(model.apply, LOSS), optax.adam(1e-2), nonfinite="skip"
    )
    ts, _ = trainer.run(trainer.init(params, h0, jax.random.key(0)), xs[:3], ys[:3])
    # A huge but finite theta_tilde: the gradient stays finite where s_tilde is zero,
    # but the norm in the rescaling overflows, so the certificate fails.
    carry = ts.carry._replace(s_tilde=jnp.zeros_like(ts.carry.s_tilde))
    ts = ts._replace(carry=_poison(carry, "theta_tilde", 1e300))
    new, metrics = trainer.run(ts, xs[3:], ys[3:])
    assert bool(metrics["skipped"][0])
    for a, b in zip(
        jax.tree.leaves((ts.params, ts.opt_state, ts.carry)),
        jax.tree.leaves((new.params, new.opt_state, new.carry)),
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["uoro", "tbptt"])
def test_raise_policy_with_a_batch_of_streams(name):
    """A NaN in one stream of a per-stream batch halts the run at that step with the
    last finite state."""
    model, params, _ = tiny_rnn()
    xs, ys = regression_stream(20 * 3)
    xs, ys = xs.reshape(20, 3, 2), ys.reshape(20, 3, 2)
    xs = xs.at[7, 1].set(jnp.nan)
    est = uorojax.per_stream(ALL[name](model.apply, LOSS))
    trainer = uorojax.make_trainer(est, optax.adam(1e-2), nonfinite="raise")
    ts0 = trainer.init(params, jnp.zeros((3, 3)), jax.random.key(0))
    with pytest.raises(NonFiniteError, match="at stream step 7") as info:
        trainer.run(ts0, xs, ys)
    good = info.value.train_state
    expected_step = 6 if name == "tbptt" else 7
    assert int(good.step) == expected_step and _all_finite((good.params, good.carry))
    clean, _ = trainer.run(ts0, xs[:expected_step], ys[:expected_step])
    assert_same_run(good.params, clean.params)
