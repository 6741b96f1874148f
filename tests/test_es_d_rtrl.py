"""ES-D-RTRL (braintrace's pp_prop) against its equations written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    flat,
    float64_model,
    lstm_step_by_hand,
    regression_stream,
    rel_err,
    scan_estimator,
    sigmoid,
    tiny_rnn,
)

import uorojax
from uorojax import ConfigError
from uorojax.estimators import registry
from uorojax.models.structure.check import check_structure
from uorojax.models.structure.types import DenseInput

LOSS = uorojax.squared_error
ALPHA = 0.7


def runner(est):
    """``(params, state0, xs, ys) -> the gradient at every step`` (frozen params)."""
    return jax.jit(lambda p, s, xs, ys: scan_estimator(est, p, s, xs, ys, jax.random.key(0))[1])


def es_d_rtrl(model, decay=ALPHA):
    return uorojax.es_d_rtrl(model.apply, LOSS, structure=model.structure, decay=decay)


def assert_every_step_equal(grads, expected, tol=1e-10):
    for t, reference in enumerate(expected):
        assert rel_err(jax.tree.map(lambda a: a[t], grads), reference) < tol, t


def smoothed(old, new, alpha):
    """ε^f ← α D ε^f + (1 - α) D^f, with ``old`` already multiplied by D."""
    return alpha * old + (1 - alpha) * new


# ----------------------------------------------------------------------------- dense RNN


def dense_rnn_by_hand(params, h0, xs, ys, alpha, tau=1.0):
    """ES-D-RTRL on h_t = (1 - 1/τ) h_{t-1} + (1/τ) tanh(W h_{t-1} + U x_t + b) (τ = 1:
    the tanh RNN). D_t = 1 - 1/τ (W taken out), D^f_t = tanh'(u_t)/τ; ε^x of W is the
    smoothed h_{t-1}, of U the smoothed x_t; b has none; the correction is 1 - α^t."""
    W, U, b, V, c = (params[k] for k in ("W", "U", "b", "V", "c"))
    e_f, e_w, e_u = jnp.zeros_like(b), jnp.zeros_like(h0), jnp.zeros_like(xs[0])
    h, out = h0, []
    for t, (x, y) in enumerate(zip(xs, ys)):
        u = W @ h + U @ x + b
        h_new = (1 - 1 / tau) * h + jnp.tanh(u) / tau
        error = V @ h_new + c - y
        e_f = smoothed((1 - 1 / tau) * e_f, (1 - jnp.tanh(u) ** 2) / tau, alpha)
        e_w, e_u = alpha * e_w + h, alpha * e_u + x
        unit = (V.T @ error) * e_f / (1 - alpha ** (t + 1))
        out.append(
            {
                "W": jnp.outer(unit, e_w),
                "U": jnp.outer(unit, e_u),
                "b": unit,
                "V": jnp.outer(error, h_new),
                "c": error,
            }
        )
        h = h_new
    return out


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_es_d_rtrl_on_a_dense_rnn_is_its_equations_written_out(tau):
    if tau == 1.0:
        model, params, h0 = tiny_rnn()
    else:
        model = uorojax.leaky_rnn(3, 2, 2, tau=tau, dtype=jnp.float64)
        params, h0 = tiny_rnn()[1], 0.3 * jnp.ones(3, jnp.float64)
    xs, ys = regression_stream(8)
    expected = dense_rnn_by_hand(params, h0, xs, ys, ALPHA, tau)
    assert_every_step_equal(runner(es_d_rtrl(model))(params, h0, xs, ys), expected)


# ----------------------------------------------------------------------------- GRU


def cell_and_readout_grads(cell, e_x, units, h, error):
    """The gradient of a one-cell linen model: each cell leaf's kernel ε_x ⊗ (its unit
    factor), its bias the unit factor; the readout's from ``h`` and the error."""
    grads = {}
    for name in cell:
        grads[name] = {"kernel": jnp.outer(e_x[name], units[name])}
        if "bias" in cell[name]:
            grads[name]["bias"] = units[name]
    readout = {"kernel": jnp.outer(h, error), "bias": error}
    return {"params": {"cells_0": grads, "readout": readout}}


def gru_by_hand(params, state0, xs, ys, alpha):
    """flax's GRU: r = σ(x W_ir + b_ir + h W_hr), z = σ(x W_iz + b_iz + h W_hz),
    n = tanh(x W_in + b_in + r (h W_hn + b_hn)), h' = (1 - z) n + z h. Without the
    recurrent kernels D_t = z; D^f of each dense module's pre-activation by hand."""
    cell, readout = params["params"]["cells_0"], params["params"]["readout"]
    (h,) = state0
    e_f = {name: jnp.zeros_like(h) for name in ("r", "z", "in", "hn")}
    e_x = {name: jnp.zeros_like(cell[name]["kernel"][:, 0]) for name in cell}
    group = {"ir": "r", "hr": "r", "iz": "z", "hz": "z", "in": "in", "hn": "hn"}
    out = []
    for t, (x, y) in enumerate(zip(xs, ys)):

        def dense(name, a):
            return a @ cell[name]["kernel"] + cell[name].get("bias", 0.0)

        r = sigmoid(dense("ir", x) + dense("hr", h))
        z = sigmoid(dense("iz", x) + dense("hz", h))
        hn = dense("hn", h)
        n = jnp.tanh(dense("in", x) + r * hn)
        h_new = (1 - z) * n + z * h
        error = h_new @ readout["kernel"] + readout["bias"] - y
        d_f = {
            "r": (1 - z) * (1 - n**2) * hn * r * (1 - r),
            "z": (h - n) * z * (1 - z),
            "in": (1 - z) * (1 - n**2),
            "hn": (1 - z) * (1 - n**2) * r,
        }
        e_f = {k: smoothed(z * e_f[k], d_f[k], alpha) for k in e_f}
        e_x = {name: alpha * e_x[name] + (x if name[0] == "i" else h) for name in e_x}
        signal = (readout["kernel"] @ error) / (1 - alpha ** (t + 1))
        units = {name: signal * e_f[group[name]] for name in cell}
        out.append(cell_and_readout_grads(cell, e_x, units, h_new, error))
        h = h_new
    return out


def test_es_d_rtrl_on_a_gru_is_its_equations_written_out():
    model = uorojax.linen_model("gru", 3, 2)
    params, state0 = float64_model(model)
    xs, ys = regression_stream(8)
    expected = gru_by_hand(params, state0, xs, ys, ALPHA)
    assert_every_step_equal(runner(es_d_rtrl(model))(params, state0, xs, ys), expected)


# ----------------------------------------------------------------------------- LSTM


def lstm_by_hand(params, state0, xs, ys, alpha):
    """flax's LSTM, state (c, h): without the recurrent kernels D_t per unit is
    [[f, 0], [o tanh'(c_t) f, 0]]; every gate's ε^f has a c and an h part; the learning
    signal is zero on c and (readout)ᵀ error on h."""
    cell, readout = params["params"]["cells_0"], params["params"]["readout"]
    ((c, h),) = state0
    e_f = {g: (jnp.zeros_like(c), jnp.zeros_like(h)) for g in "ifgo"}
    e_x = {name: jnp.zeros_like(cell[name]["kernel"][:, 0]) for name in cell}
    out = []
    for t, (x, y) in enumerate(zip(xs, ys)):
        (i, f, o, g), c_new, h_new, error = lstm_step_by_hand(cell, readout, c, h, x, y)
        dh_dc = o * (1 - jnp.tanh(c_new) ** 2)
        dc_dz = {"i": g * i * (1 - i), "f": c * f * (1 - f), "g": i * (1 - g**2), "o": 0 * c}
        dh_dz = {k: dh_dc * v for k, v in dc_dz.items()}
        dh_dz["o"] = jnp.tanh(c_new) * o * (1 - o)
        e_f = {
            k: (smoothed(f * e_c, dc_dz[k], alpha), smoothed(dh_dc * f * e_c, dh_dz[k], alpha))
            for k, (e_c, _) in e_f.items()
        }
        e_x = {name: alpha * e_x[name] + (x if name[0] == "i" else h) for name in e_x}
        signal = (readout["kernel"] @ error) / (1 - alpha ** (t + 1))  # on h; zero on c
        units = {name: signal * e_f[name[1]][1] for name in cell}
        out.append(cell_and_readout_grads(cell, e_x, units, h_new, error))
        c, h = c_new, h_new
    return out


def test_es_d_rtrl_on_an_lstm_is_its_equations_written_out():
    model = uorojax.linen_model("lstm", 3, 2)
    params, state0 = float64_model(model)
    xs, ys = regression_stream(8)
    expected = lstm_by_hand(params, state0, xs, ys, ALPHA)
    assert_every_step_equal(runner(es_d_rtrl(model))(params, state0, xs, ys), expected)


# ----------------------------------------------------------------------------- limits, batches


def test_decay_zero_is_the_one_step_truncated_gradient():
    model = uorojax.linen_model("mgu", 3, 2)
    params, state0 = float64_model(model)
    xs, ys = regression_stream(5)
    grads = runner(es_d_rtrl(model, decay=0.0))(params, state0, xs, ys)
    tbptt1 = runner(uorojax.tbptt(model.apply, LOSS, 1))(params, state0, xs, ys)
    assert_every_step_equal(grads, [jax.tree.map(lambda a: a[t], tbptt1) for t in range(5)], 1e-12)


def test_the_warm_up_correction_ends_after_a_thousand_steps():
    """braintrace divides the unit trace by 1 - α^t up to step 1000 and by 1 after."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(1)
    decay = 0.999
    est = es_d_rtrl(model, decay)
    carry = est.init_state(params, h0)
    step = jax.jit(lambda steps: est.step(params, carry._replace(steps=steps), xs[0], ys[0],
                                          jax.random.key(0))[0])  # fmt: skip
    first, at_1000, at_1001 = (step(jnp.asarray(n, jnp.int32)) for n in (0, 999, 1000))
    np.testing.assert_allclose(first["b"] * (1 - decay), at_1001["b"], rtol=1e-12)
    np.testing.assert_allclose(at_1000["b"] * (1 - decay**1000), at_1001["b"], rtol=1e-12)
    np.testing.assert_allclose(at_1000["V"], at_1001["V"], rtol=1e-14)


def test_per_stream_es_d_rtrl_equals_a_loop_over_streams():
    model = uorojax.leaky_rnn(3, 2, 2, tau=3.0, dtype=jnp.float64)
    params = tiny_rnn()[1]
    states = 0.3 + 0.1 * jnp.arange(9.0).reshape(3, 3)
    xs, ys = regression_stream(4 * 3)
    xs, ys = xs.reshape(4, 3, 2), ys.reshape(4, 3, 2)
    est = es_d_rtrl(model)
    batched = runner(uorojax.per_stream(est))(params, states, xs, ys)
    one = runner(est)
    loop = [one(params, states[b], xs[:, b], ys[:, b]) for b in range(3)]
    mean = jax.tree.map(lambda *g: sum(g) / 3, *loop)
    np.testing.assert_allclose(
        jax.vmap(flat)(batched), jax.vmap(flat)(mean), rtol=1e-12, atol=1e-14
    )


def test_a_pre_activation_without_a_bias_reads_its_signal_from_its_kernels():
    """The fused step reads each pre-activation's ``∂L_t/∂z`` from a per-stream copy of
    its bias (the bias's gradient is ``∂L_t/∂z``), and from its kernels' gradients
    (``Σ_W δθ_W · a_W / Σ_W ‖a_W‖²``) when it has no bias. Naming the tanh RNN's bias as
    a pre-activation of its own leaves ``z = W h + U x + b`` with two names for one
    pre-activation, the kernels' without a bias: the gradients must not change, one
    stream or three."""
    model, params, h0 = tiny_rnn()
    layer_inputs = model.structure.layer_inputs

    def split_inputs(p, state, x):
        return [
            None if a is None else DenseInput("bias" if jnp.ndim(a) == 0 else "z", a)
            for a in layer_inputs(p, state, x)
        ]

    split = model._replace(structure=model.structure._replace(leaf_inputs=split_inputs))
    xs, ys = regression_stream(6)
    assert_every_step_equal(
        runner(es_d_rtrl(split))(params, h0, xs, ys),
        [jax.tree.map(lambda a: a[t], runner(es_d_rtrl(model))(params, h0, xs, ys))
         for t in range(6)],
        1e-12,
    )  # fmt: skip
    states = h0 + 0.1 * jnp.arange(3.0)[:, None]
    xs3, ys3 = xs.reshape(2, 3, 2), ys.reshape(2, 3, 2)
    np.testing.assert_allclose(
        jax.vmap(flat)(runner(uorojax.per_stream(es_d_rtrl(split)))(params, states, xs3, ys3)),
        jax.vmap(flat)(runner(uorojax.per_stream(es_d_rtrl(model)))(params, states, xs3, ys3)),
        rtol=1e-12,
        atol=1e-14,
    )


# ----------------------------------------------------------------------------- errors, structure


@pytest.mark.parametrize("decay", [1.0, -0.1, float("nan"), "0.9", True, None])
def test_a_bad_decay_is_named(decay):
    model, _, _ = tiny_rnn()
    with pytest.raises(ConfigError, match="decay must be"):
        uorojax.es_d_rtrl(model.apply, LOSS, structure=model.structure, decay=decay)


def test_a_missing_or_unfit_structure_is_named():
    model, params, h0 = tiny_rnn()
    missing = r"structure=None infers .* pass example_x=.*uorojax.infer_structure"
    with pytest.raises(ConfigError, match=missing):
        uorojax.es_d_rtrl(model.apply, LOSS, structure=None, decay=0.9).init_state(params, h0)
    with pytest.raises(ConfigError, match=missing):
        registry.build_estimator("es_d_rtrl", model.apply, LOSS).init_state(params, h0)
    apply_flat, theta, _ = uorojax.ravel_params(model.apply, params)
    est = uorojax.es_d_rtrl(apply_flat, LOSS, structure=model.structure, decay=0.9)
    with pytest.raises(ConfigError, match="es_d_rtrl: the structure maps none of these params"):
        est.init_state(theta, h0)

    def swapped(p, h, x):  # leaves U, V, W, b, c: U given h instead of x
        return [DenseInput("z", h), None, DenseInput("z", h), DenseInput("z", jnp.ones(())), None]

    wrong = model.structure._replace(leaf_inputs=swapped)
    est = uorojax.es_d_rtrl(model.apply, LOSS, structure=wrong, decay=0.9)
    xs, ys = regression_stream(1)
    with pytest.raises(
        ConfigError, match=r"leaf_inputs gives params leaf \['U'\] an input of shape"
    ):
        est.step(params, est.init_state(params, h0), xs[0], ys[0], jax.random.key(0))
    with pytest.raises(ConfigError, match="snap1 does not take decay"):
        registry.build_estimator("snap1", model.apply, LOSS, structure=model.structure, decay=0.5)


def test_a_wrong_pre_activation_is_caught():
    """GRU's W_hn is multiplied by the reset gate: it cannot share W_in's pre-activation."""
    model = uorojax.linen_model("gru", 3, 2)
    params, state0 = float64_model(model)
    inputs = model.structure.leaf_inputs

    def merged(p, s, x):
        return [None if d is None else d._replace(preactivation="in") if d.preactivation == "hn"
                else d for d in inputs(p, s, x)]  # fmt: skip

    with pytest.raises(
        ConfigError,
        match=r"pre-activation 'in' for params leaves .*'hn'\]\['bias'\].*feed different",
    ):
        check_structure(model.apply, model.structure._replace(leaf_inputs=merged), params,
                        state0, regression_stream(1)[0][0])  # fmt: skip
