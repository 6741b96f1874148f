"""KF-RTRL, SnAp-1, the element-wise cell and the structure descriptions they read."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    bptt_grad,
    flat,
    float64_model,
    normalized_squared_error,
    regression_stream,
    rel_err,
    scan_estimator,
    tiny_rnn,
)
from jax.flatten_util import ravel_pytree

import uorojax
from uorojax import ConfigError
from uorojax.estimators import registry
from uorojax.estimators.kf_rtrl import kf_rtrl
from uorojax.estimators.snap import snap1
from uorojax.estimators.sparse_influence import weighted_partial_sums, weighted_sum_over_streams
from uorojax.models.structure.check import check_structure
from uorojax.models.structure.types import RecurrentKernel, Units, leaf_units, state_layers

LOSS = uorojax.squared_error


def interleaved_lstm_stack():
    """A two-layer LSTM whose state is ``(c_0, c_1, h_0, h_1)``: each layer's state
    leaves are not next to each other in the flattened state."""
    model = uorojax.linen_model("lstm", 3, 2, num_layers=2)

    def nested(s):
        return ((s[0], s[2]), (s[1], s[3]))

    def flat_state(s):
        return (s[0][0], s[1][0], s[0][1], s[1][1])

    def apply(params, state, x):
        new_state, output = model.apply(params, nested(state), x)
        return flat_state(new_state), output

    def init(key, x):
        params, state0 = model.init(key, x)
        return params, flat_state(state0)

    kernels = tuple(  # layer l's h, (l, 1) in the nested state, is leaf 2 + l here
        k._replace(state=(2 + k.state[0],)) for k in model.structure.recurrent_kernels
    )
    structure = model.structure._replace(
        state_units=lambda path, leaf: path[0] % 2, recurrent_kernels=kernels
    )
    return uorojax.Model(init, apply, structure)


CELLS = {
    **{name: (lambda name=name: uorojax.linen_model(name, 3, 2)) for name in uorojax.models.LINEN_CELLS},
    "gru_stack": lambda: uorojax.linen_model("gru", 3, 2, num_layers=2),
    "lstm_stack": lambda: uorojax.linen_model("lstm", 3, 2, num_layers=2),
    "interleaved_lstm_stack": interleaved_lstm_stack,
    "mgu_no_reset": lambda: uorojax.from_linen_cells(nn.MGUCell(3, reset_gate=False), 2),
    "simple_residual": lambda: uorojax.from_linen_cells(nn.SimpleCell(3, residual=True), 2),
}  # fmt: skip


# ----------------------------------------------------------------------------- structures


@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_model_structure_matches_its_jacobians(name):
    model = CELLS[name]()
    params, state0 = float64_model(model)
    xs, _ = regression_stream(1)
    check_structure(model.apply, model.structure, params, state0, xs[0], rtol=1e-10)


def test_tanh_rnn_structure_matches_its_jacobians():
    model, params, h0 = tiny_rnn()
    xs, _ = regression_stream(1)
    check_structure(model.apply, model.structure, params, h0, xs[0], rtol=1e-10)


def _structure_with(**changes):
    model, params, h0 = tiny_rnn()
    return model, params, h0, model.structure._replace(**changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"param_units": lambda path, leaf: Units(0, 0)}, r"params leaf \['V'\] has 2 entries on its unit axis"),
        ({"param_units": lambda path, leaf: Units(0, 0) if path[0] in "Wb" else None}, r"params leaf \['U'\]: declared None \(moves no state in one step\), but it moves only its own unit of layer 0"),
        ({"param_units": lambda path, leaf: Units(0, 1) if path[0] == "W" else (Units(0, 0) if path[0] in "Ub" else None)}, r"params leaf \['W'\]"),
        ({"recurrent_kernels": ()}, r"params leaf \['W'\] is a recurrent kernel of layer 0 .*recurrent_kernels does not list it"),
        ({"recurrent_kernels": (RecurrentKernel(("W",), ("b",), (), "in_out"),)}, r"recurrent kernel \['W'\] is declared layout 'in_out', but its units run along axis 0"),
        ({"layer_inputs": lambda p, h, x: [h, None, x, jnp.ones(()), None]}, r"params leaf \['U'\] an input of shape \[3\]"),
        ({"layer_inputs": lambda p, h, x: [x, h, h, jnp.ones(()), None]}, r"an input for params leaf \['V'\], which moves no state"),
        ({"layer_inputs": lambda p, h, x: [2 * x, None, h, jnp.ones(()), None]}, r"pre-activation 'layer' for params leaves \['W'\], \['b'\] and \['U'\], but \['U'\] disagree"),
    ],
)  # fmt: skip
def test_a_wrong_structure_is_named(changes, message):
    model, params, h0, structure = _structure_with(**changes)
    xs, _ = regression_stream(1)
    with pytest.raises(ConfigError, match=message):
        check_structure(model.apply, structure, params, h0, xs[0])


# ----------------------------------------------------------------------------- SnAp-1


def snap1_gradients(model, params, state0, xs, ys):
    """SnAp-1's gradient at every step of a segment (frozen params)."""
    est = snap1(model.apply, LOSS, structure=model.structure)
    return scan_estimator(est, params, state0, xs, ys, jax.random.key(0))[1]


def test_snap1_on_the_element_wise_cell_is_exact_rtrl_and_bptt():
    model = uorojax.linen_model("elementwise_mgu", 3, 2)
    params, state0 = float64_model(model)
    xs, ys = regression_stream(8)
    grads = snap1_gradients(model, params, state0, xs, ys)
    every = bptt_grad(model.apply, LOSS, params, state0, xs, ys, range(8))
    for t in range(8):
        exact = jax.tree.map(lambda g: g[t], every)
        assert rel_err(jax.tree.map(lambda g: g[t], grads), exact) < 1e-10, t
    # The history matters: the last gradient is far from its one-step truncation.
    _, truncated, _ = scan_estimator(
        uorojax.tbptt(model.apply, LOSS, 1), params, state0, xs, ys, jax.random.key(0)
    )
    assert (
        rel_err(jax.tree.map(lambda g: g[-1], truncated), jax.tree.map(lambda g: g[-1], grads))
        > 1e-3
    )


def dense_snap1(model, params, state0, xs, ys):
    """SnAp-1 by its definition: dense A_t, B_t and J_t, ``J_t = (B_t + A_t J_{t-1}) ⊙ M``
    with M from the structure, ``g_t = δθ + δs · J_{t-1}``."""
    flat_p, unravel_p = ravel_pytree(params)
    flat_s, unravel_s = ravel_pytree(state0)
    structure = model.structure
    p_unit, p_layer = [], []
    for leaf, u in zip(jax.tree.leaves(params), leaf_units(structure, params)):
        p_unit += np.indices(leaf.shape)[u.axis].ravel().tolist() if u else [-1] * leaf.size
        p_layer += [u.layer if u else -1] * leaf.size
    s_unit, s_layer = [], []
    for leaf, layer in zip(jax.tree.leaves(state0), state_layers(structure, state0)):
        s_unit += list(range(leaf.size))
        s_layer += [layer] * leaf.size
    mask = (np.array(s_unit)[:, None] == np.array(p_unit)[None]) & (
        np.array(s_layer)[:, None] == np.array(p_layer)[None]
    )
    jacobian = jnp.zeros((flat_s.size, flat_p.size))
    grads = []
    for x, y in zip(xs, ys):
        new_state = lambda p, s: ravel_pytree(model.apply(unravel_p(p), unravel_s(s), x)[0])[0]  # noqa: E731
        loss = lambda p, s: LOSS(model.apply(unravel_p(p), unravel_s(s), x)[1], y)  # noqa: E731
        d_theta, d_s = jax.grad(loss, argnums=(0, 1))(flat_p, flat_s)
        grads.append(d_theta + d_s @ jacobian)
        a = jax.jacfwd(new_state, argnums=1)(flat_p, flat_s)
        b = jax.jacrev(new_state)(flat_p, flat_s)
        jacobian = (b + a @ jacobian) * mask
        flat_s = new_state(flat_p, flat_s)
    return jnp.stack(grads)


@pytest.mark.parametrize(
    "name",
    ["simple", "gru", "lstm", "mgu", "optimized_lstm", "gru_stack", "lstm_stack",
     "interleaved_lstm_stack"],
)  # fmt: skip
def test_snap1_equals_its_dense_definition(name):
    model = CELLS[name]()
    params, state0 = float64_model(model)
    xs, ys = regression_stream(6)
    grads = snap1_gradients(model, params, state0, xs, ys)
    expected = dense_snap1(model, params, state0, xs, ys)
    np.testing.assert_allclose(jax.vmap(flat)(grads), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("max_terms", [128, 4])
@pytest.mark.parametrize("shape", [(3, 1, 4), (5, 2, 4, 3), (20, 1, 4), (33, 2, 3, 2)])
def test_the_history_sums_each_streams_weighted_influence(shape, max_terms):
    """``Σ_b Σ_k w[b, k, u] J[b, k, u, ...]``, as a sum of slices and (beyond
    ``max_terms`` slices) as a reduction, against numpy; 20 and 33 streams span several
    blocks of streams, the last one partial."""
    terms = np.asarray(jax.random.normal(jax.random.key(0), shape, jnp.float64))
    weights = np.asarray(jax.random.normal(jax.random.key(1), shape[:3], jnp.float64))
    expected = np.einsum("bku,bku...->u...", weights, terms)
    got = weighted_sum_over_streams(jnp.asarray(weights), jnp.asarray(terms), max_terms)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("num_streams, q, blocks", [(16, 1, 1), (20, 1, 2), (33, 2, 5)])
def test_the_history_partial_sums_cover_every_stream_once_in_blocks(num_streams, q, blocks):
    """Partial sums over contiguous blocks of at most 16 slices (16 // q streams): each
    block's sum is its streams' sum, and together they hold every stream once."""
    shape = (num_streams, q, 4, 3)
    terms = jax.random.normal(jax.random.key(0), shape, jnp.float64)
    weights = jax.random.normal(jax.random.key(1), shape[:3], jnp.float64)
    parts = weighted_partial_sums(weights, terms)
    assert len(parts) == blocks
    per_block = 16 // q
    for i, part in enumerate(parts):
        streams = slice(i * per_block, min((i + 1) * per_block, num_streams))
        expected = np.einsum("bku,bku...->u...", weights[streams], terms[streams])
        np.testing.assert_allclose(part, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("who", ["snap1", "eprop"])
def test_the_carry_certificate_reads_the_new_state(who):
    """``info.carry_finite`` is False when only the new state is non-finite: the output,
    the gradient and the influence stay finite, so the state alone can say so."""
    model, params, h0 = tiny_rnn()

    def apply(p, s, x):  # an inf added to the new state when x[0] > 5, not to the output
        new_state, output = model.apply(p, s, x)
        return new_state + jnp.where(x[0] > 5.0, jnp.inf, 0.0), output

    est = uorojax.per_stream(getattr(uorojax, who)(apply, LOSS, structure=model.structure))
    carry = est.init_state(params, jnp.stack([h0, h0]))
    ys = jnp.zeros((2, 2))
    fine = jnp.array([[0.5, -0.2], [0.1, 0.3]])
    grads, carry, info = est.step(params, carry, fine, ys, jax.random.key(0))
    assert bool(info.carry_finite)
    grads, carry, info = est.step(params, carry, fine.at[1, 0].set(9.0), ys, jax.random.key(1))
    assert np.isfinite(flat(grads)).all() and np.isfinite(np.asarray(info.loss)).all()
    assert np.isfinite(flat(carry.influence if who == "snap1" else carry.trace)).all()
    assert not np.isfinite(np.asarray(carry.state)).all()
    assert not bool(info.carry_finite)


@pytest.mark.parametrize("name", ["simple", "gru", "lstm", "mgu"])
def test_snap1_matches_exact_rtrl_on_a_window_start_and_then_departs(name):
    """From a zero influence (a stream or window start), one layer: the first gradient is
    the direct one and the second uses J_1 = B_1, which lies on the pattern, so both
    equal RTRL's; later steps carry A's off-diagonal influence, which SnAp-1 drops."""
    model = CELLS[name]()
    params, state0 = float64_model(model)
    xs, ys = regression_stream(6)
    snap = snap1_gradients(model, params, state0, xs, ys)
    _, exact, _ = scan_estimator(
        uorojax.rtrl(model.apply, LOSS), params, state0, xs, ys, jax.random.key(0)
    )
    at = lambda g, t: jax.tree.map(lambda a: a[t], g)  # noqa: E731
    assert rel_err(at(snap, 0), at(exact, 0)) < 1e-12
    assert rel_err(at(snap, 1), at(exact, 1)) < 1e-12
    assert rel_err(at(snap, 5), at(exact, 5)) > 1e-4


def test_without_a_structure_or_an_example_the_error_names_infer_structure():
    model = uorojax.tanh_rnn(3, 2, 2)
    params, h0 = model.init(jax.random.key(0), jnp.zeros(2))
    missing = r"structure=None infers .* pass example_x=.*uorojax.infer_structure"
    for est in (snap1(model.apply, LOSS), kf_rtrl(model.apply, LOSS, structure=None)):
        with pytest.raises(ConfigError, match=missing):
            est.init_state(params, h0)
    params, h0, nnx_apply = _nnx_model()
    with pytest.raises(ConfigError, match=missing):
        registry.build_estimator("snap1", nnx_apply, LOSS).init_state(params, h0)


@pytest.mark.parametrize("who", ["snap1", "eprop", "rflo", "es_d_rtrl", "kf_rtrl", "ok"])
def test_the_missing_example_error_is_one_line_naming_the_estimator(who):
    model = uorojax.tanh_rnn(3, 2, 2)
    params, h0 = model.init(jax.random.key(0), jnp.zeros(2))
    est = registry.ESTIMATORS[who].constructor(model.apply, LOSS)
    with pytest.raises(ConfigError, match=f"^{who}: structure=None") as raised:
        est.init_state(params, h0)
    assert "\n" not in str(raised.value)


def _nnx_model():
    from flax import nnx

    cell = nnx.GRUCell(2, 3, rngs=nnx.Rngs(0))
    model = uorojax.from_nnx(cell, cell.initialize_carry((2,), nnx.Rngs(1)))
    return (*model.init(None, None), model.apply)


def test_parameters_the_pattern_cannot_hold_are_refused_by_name():
    model = uorojax.linen_model("gru", 3, 4, vocab_size=4, embed_dim=2)
    params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    own = model.structure.param_units

    def every_unit(path, leaf):  # the embedding declared to move every unit in one step
        return Units(0, None) if path[1] == "embed" else own(path, leaf)

    wrong = model.structure._replace(param_units=every_unit)
    est = snap1(model.apply, uorojax.softmax_cross_entropy, structure=wrong)
    with pytest.raises(
        ConfigError, match=r"params leaf \['params'\]\['embed'\]\['embedding'\] moves every unit"
    ):
        est.init_state(params, state0)
    # as the model's structure declares it, Feedforward(0), SnAp-1 takes it
    snap1(model.apply, uorojax.softmax_cross_entropy, structure=model.structure).init_state(
        params, state0
    )


def test_a_batch_as_one_system_is_refused_with_the_reason():
    model, params, _ = tiny_rnn()
    with pytest.raises(ConfigError, match="supports batch_mode per_stream"):
        registry.build_estimator("snap1", model.apply, LOSS, num_streams=2, batch_mode="shared",
                                 structure=model.structure)  # fmt: skip
    apply_b, loss_b = uorojax.as_one_system(model.apply, LOSS)
    est = snap1(apply_b, loss_b, structure=model.structure)
    with pytest.raises(ConfigError, match="treats one stream"):
        est.init_state(params, jnp.zeros((2, 3)))


# ----------------------------------------------------------------------------- KF-RTRL


def kf_samples(est, model, params, state0, xs, ys, num_keys=20_000):
    keys = jax.random.split(jax.random.key(11), num_keys)

    def one(key):
        _, grads, _ = scan_estimator(est, params, state0, xs, ys, key)
        return flat(jax.tree.map(lambda g: g[-1], grads))

    return jax.jit(jax.vmap(one))(keys)


def _kf_models():
    model, params, h0 = tiny_rnn()
    simple = uorojax.linen_model("simple", 3, 2)
    return {"tanh_rnn": (model, params, h0), "flax_simple": (simple, *float64_model(simple))}


@pytest.mark.parametrize("name", ["tanh_rnn", "flax_simple"])
def test_kf_rtrl_mean_converges_to_exact_rtrl(name):
    model, params, state0 = _kf_models()[name]
    xs, ys = regression_stream(6)
    _, exact, _ = scan_estimator(
        uorojax.rtrl(model.apply, LOSS), params, state0, xs, ys, jax.random.key(0)
    )
    exact = flat(jax.tree.map(lambda g: g[-1], exact))
    samples = kf_samples(
        kf_rtrl(model.apply, LOSS, structure=model.structure), model, params, state0, xs, ys
    )
    for n in (1000, 20_000):
        assert normalized_squared_error(samples[:n], exact) < 9.0, n
    assert float(jnp.linalg.norm(samples.mean(0) - exact) / jnp.linalg.norm(exact)) < 0.02
    # And with less variance than UORO on the same model.
    uoro = kf_samples(uorojax.uoro(model.apply, LOSS), model, params, state0, xs, ys, 4000)
    assert float(jnp.sum(samples.var(0))) < float(jnp.sum(uoro.var(0)))


def test_the_check_catches_a_biased_kf_rtrl():
    """Reading the gradient from the *new* factors (which already hold this step's noise
    and immediate influence) is a noisy, biased variant: the same check fails."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(6)
    est = kf_rtrl(model.apply, LOSS, structure=model.structure)

    def new_factor_step(params, carry, x, y, key):
        _, new_carry, info = est.step(params, carry, x, y, key)
        grads, _, _ = est.step(params, new_carry._replace(state=carry.state), x, y, key)
        return grads, new_carry, info

    _, exact, _ = scan_estimator(
        uorojax.rtrl(model.apply, LOSS), params, h0, xs, ys, jax.random.key(0)
    )
    exact = flat(jax.tree.map(lambda g: g[-1], exact))
    samples = kf_samples(
        uorojax.Estimator(est.init_state, new_factor_step), model, params, h0, xs, ys
    )
    assert normalized_squared_error(samples, exact) > 9.0


def test_one_kf_rtrl_step_is_the_balanced_sum_of_its_two_kronecker_terms():
    """From random factors, one step (ε = 0) returns, for one pair of signs c1, c2 = ±1,
    u' = c1 p1 u + c2 p2 a and A' = c1 (H A)/p1 + c2 D/p2 with the variance-minimising
    scales p1 = sqrt(‖H A‖/‖u‖), p2 = sqrt(‖D‖/‖a‖); H A, D and a recomputed here by
    jax.jvp, tanh' and the layer's inputs [h; x; 1]. Any positive scales keep KF-RTRL
    unbiased, so only this check sees the balancing."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(1)
    est = kf_rtrl(model.apply, LOSS, structure=model.structure, eps=0.0)
    keys = jax.random.split(jax.random.key(11), 3)
    carry = est.init_state(params, h0)
    pieces = [
        None if u is None else jax.random.normal(k, u.shape, u.dtype)
        for u, k in zip(carry.input_factor, jax.random.split(keys[0], len(carry.input_factor)))
    ]
    carry = carry._replace(
        input_factor=tuple(pieces),
        unit_factor=jax.random.normal(keys[1], carry.unit_factor.shape, jnp.float64),
    )
    _, new, _ = est.step(params, carry, xs[0], ys[0], keys[2])

    h_times_a = jax.vmap(
        lambda col: jax.jvp(lambda h: model.apply(params, h, xs[0])[0], (h0,), (col,))[1],
        in_axes=1,
        out_axes=1,
    )(carry.unit_factor)
    h1 = model.apply(params, h0, xs[0])[0]
    d = jnp.diag(1.0 - h1**2)  # tanh'
    inputs = {"W": h0, "U": xs[0], "b": jnp.ones(())}  # params leaves in sorted order
    names = sorted(params)
    a = [inputs.get(n) if pieces[i] is not None else None for i, n in enumerate(names)]
    u = [p for p in pieces if p is not None]
    a_vec = flat([v for v in a if v is not None])
    p1 = jnp.sqrt(jnp.linalg.norm(h_times_a) / jnp.linalg.norm(flat(u)))
    p2 = jnp.sqrt(jnp.linalg.norm(d) / jnp.linalg.norm(a_vec))
    new_u = flat([v for v in new.input_factor if v is not None])
    matched = []
    for c1 in (1.0, -1.0):
        for c2 in (1.0, -1.0):
            expected_u = c1 * p1 * flat(u) + c2 * p2 * a_vec
            expected_a = c1 * h_times_a / p1 + c2 * d / p2
            matched.append(
                bool(jnp.allclose(new_u, expected_u, rtol=1e-12, atol=1e-14))
                and bool(jnp.allclose(new.unit_factor, expected_a, rtol=1e-12, atol=1e-14))
            )
    assert sum(matched) == 1, matched


def test_kf_rtrl_refuses_models_without_a_dense_layer():
    for model in (
        uorojax.linen_model("gru", 3, 2),
        uorojax.linen_model("simple", 3, 2, num_layers=2),
    ):
        params, state0 = float64_model(model)
        est = kf_rtrl(model.apply, LOSS, structure=model.structure)
        with pytest.raises(ConfigError, match="kf_rtrl needs a dense recurrent layer"):
            est.init_state(params, state0)


@pytest.mark.parametrize("cell", ["elementwise_mgu", "gru"])
def test_a_structure_for_another_params_tree_is_refused(cell):
    """A flat parameter vector (ravel_params) does not fit the model's structure: refused,
    never read as 'every parameter is a readout'."""
    model = CELLS[cell]()
    params, state0 = float64_model(model)
    apply_flat, theta, _ = uorojax.ravel_params(model.apply, params)
    est = snap1(apply_flat, LOSS, structure=model.structure)
    with pytest.raises(ConfigError, match="maps none of these params to a recurrent layer"):
        est.init_state(theta, state0)
    renamed = {
        "params": {"cell": params["params"]["cells_0"], "readout": params["params"]["readout"]}
    }
    with pytest.raises(ConfigError, match="(maps none of these params|names params path)"):
        snap1(model.apply, LOSS, structure=model.structure).init_state(renamed, state0)
