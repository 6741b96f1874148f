"""E-prop and RFLO against their papers' equations written out by hand, and SnAp-1."""

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
    tiny_rnn,
)

import uorojax
from uorojax import ConfigError
from uorojax.estimators import registry
from uorojax.estimators.shared import without_recurrent_kernels
from uorojax.models.structure.check import check_structure

LOSS = uorojax.squared_error
TAU = 3.0


def leaky_model(tau=TAU):
    model = uorojax.leaky_rnn(3, 2, 2, tau=tau, dtype=jnp.float64)
    params, _ = model.init(jax.random.key(0))
    params["b"] = 0.1 * jnp.arange(3, dtype=jnp.float64)
    return model, params, 0.3 * jnp.ones(3, jnp.float64)


def runner(est):
    """``(params, state0, xs, ys) -> the gradient at every step`` (frozen params), compiled
    once for its shapes."""
    return jax.jit(lambda p, s, xs, ys: scan_estimator(est, p, s, xs, ys, jax.random.key(0))[1])


def gradients(est, params, state0, xs, ys):
    return runner(est)(params, state0, xs, ys)


def at(tree, t):
    return jax.tree.map(lambda a: a[t], tree)


def assert_every_step_equal(grads, expected, tol=1e-10):
    for t, reference in enumerate(expected):
        assert rel_err(at(grads, t), reference) < tol, t


# ----------------------------------------------------------------------------- RFLO


def rflo_by_hand(params, h0, xs, ys, tau):
    """Murray (2019): P_t = (1 - 1/τ) P_{t-1} + (1/τ) φ'(u_t) ⊗ [h_{t-1}; x_t; 1], the
    weights' gradient (∂L_t/∂h_t) ⊙ P_t, the readout's (o_t - y_t) ⊗ h_t."""
    W, U, b, V, c = (params[k] for k in ("W", "U", "b", "V", "c"))
    p_w, p_u, p_b = jnp.zeros_like(W), jnp.zeros_like(U), jnp.zeros_like(b)
    h, out = h0, []
    for x, y in zip(xs, ys):
        u = W @ h + U @ x + b
        h_new = (1 - 1 / tau) * h + jnp.tanh(u) / tau
        error = V @ h_new + c - y
        signal = V.T @ error  # ∂L_t/∂h_t
        slope = 1 - jnp.tanh(u) ** 2
        p_w = (1 - 1 / tau) * p_w + jnp.outer(slope, h) / tau
        p_u = (1 - 1 / tau) * p_u + jnp.outer(slope, x) / tau
        p_b = (1 - 1 / tau) * p_b + slope / tau
        out.append(
            {
                "W": signal[:, None] * p_w,
                "U": signal[:, None] * p_u,
                "b": signal * p_b,
                "V": jnp.outer(error, h_new),
                "c": error,
            }
        )
        h = h_new
    return out


@pytest.mark.parametrize("factory", [uorojax.eprop, uorojax.rflo])
def test_eprop_on_the_leaky_rnn_is_rflo_written_out(factory):
    model, params, h0 = leaky_model()
    xs, ys = regression_stream(8)
    est = factory(model.apply, LOSS, structure=model.structure)
    assert_every_step_equal(
        gradients(est, params, h0, xs, ys), rflo_by_hand(params, h0, xs, ys, TAU)
    )


def test_the_leaky_rnn_is_murrays_model_and_its_structure_holds():
    model, params, h0 = leaky_model()
    xs, _ = regression_stream(1)
    check_structure(model.apply, model.structure, params, h0, xs[0], rtol=1e-10)
    h1, out = model.apply(params, h0, xs[0])
    u = params["W"] @ h0 + params["U"] @ xs[0] + params["b"]
    np.testing.assert_allclose(h1, (1 - 1 / TAU) * h0 + jnp.tanh(u) / TAU, rtol=1e-14)
    np.testing.assert_allclose(out, params["V"] @ h1 + params["c"], rtol=1e-14)
    with pytest.raises(ConfigError, match="tau must be >= 1"):
        uorojax.leaky_rnn(3, 2, 2, tau=0.5)


# ----------------------------------------------------------------------------- LSTM


def bellec_lstm_by_hand(params, state0, xs, ys):
    """Bellec et al. (2020), e-prop for LSTMs: the eligibility vector runs through the
    cell state, e^c_t = f_t e^c_{t-1} + ∂c_t/∂θ (gates i, f, g), and the gradient is
    L_t ⊙ (∂h_t/∂c_t e^c_t + ∂h_t/∂θ|_c) with L_t = ∂L_t/∂h_t (the readout reads h)."""
    cell, readout = params["params"]["cells_0"], params["params"]["readout"]
    ((c, h),) = state0
    trace = {name: dict(leaf) for name, leaf in jax.tree.map(jnp.zeros_like, cell).items()}
    out = []
    for x, y in zip(xs, ys):
        inputs = {"i": x, "h": h}
        (i, f, o, g), c_new, h_new, error = lstm_step_by_hand(cell, readout, c, h, x, y)
        signal = readout["kernel"] @ error  # L_t = ∂L_t/∂h_t
        dc_dz = {"i": g * i * (1 - i), "f": c * f * (1 - f), "g": i * (1 - g**2)}
        dh_dc = o * (1 - jnp.tanh(c_new) ** 2)
        dh_dzo = jnp.tanh(c_new) * o * (1 - o)
        grads = {}
        for gate in "ifgo":
            for side in "ih":
                name = f"{side}{gate}"
                grads[name] = {}
                for kind in cell[name]:
                    a = inputs[side] if kind == "kernel" else 1.0
                    if gate == "o":  # no cell-state trace: ∂h_t/∂θ directly
                        grads[name][kind] = jnp.multiply.outer(a, signal * dh_dzo)
                        continue
                    trace[name][kind] = f * trace[name][kind] + jnp.multiply.outer(a, dc_dz[gate])
                    grads[name][kind] = signal * dh_dc * trace[name][kind]
        readout_grads = {"kernel": jnp.outer(h_new, error), "bias": error}
        out.append({"params": {"cells_0": grads, "readout": readout_grads}})
        c, h = c_new, h_new
    return out


@pytest.mark.parametrize("name", ["lstm", "optimized_lstm"])
def test_eprop_on_an_lstm_is_bellecs_lstm_rule_written_out(name):
    model = uorojax.linen_model(name, 3, 2)
    params, state0 = float64_model(model)
    xs, ys = regression_stream(8)
    est = uorojax.eprop(model.apply, LOSS, structure=model.structure)
    expected = bellec_lstm_by_hand(params, state0, xs, ys)
    assert_every_step_equal(gradients(est, params, state0, xs, ys), expected)


# ----------------------------------------------------------------------------- SnAp-1


def _model_and_zero_kernels(name):
    if name == "leaky":
        model, params, h0 = leaky_model()
        return model, params, h0, {**params, "W": jnp.zeros_like(params["W"])}
    model = uorojax.linen_model("lstm", 3, 2)
    params, state0 = float64_model(model)
    cell = dict(params["params"]["cells_0"])
    for kernel in (f"h{g}" for g in "ifgo"):  # the LSTM's recurrent kernels
        cell[kernel] = {**cell[kernel], "kernel": jnp.zeros_like(cell[kernel]["kernel"])}
    zeroed = {"params": {**params["params"], "cells_0": cell}}
    return model, params, state0, zeroed


@pytest.mark.parametrize("name", ["leaky", "lstm"])
def test_eprop_is_snap1_without_recurrent_kernels_and_differs_with_them(name):
    model, params, state0, zeroed = _model_and_zero_kernels(name)
    xs, ys = regression_stream(6)
    eprop = runner(uorojax.eprop(model.apply, LOSS, structure=model.structure))
    snap = runner(uorojax.snap1(model.apply, LOSS, structure=model.structure))
    same = snap(zeroed, state0, xs, ys)
    assert_every_step_equal(eprop(zeroed, state0, xs, ys), [at(same, t) for t in range(6)])
    differ = at(snap(params, state0, xs, ys), 5)
    assert rel_err(at(eprop(params, state0, xs, ys), 5), differ) > 1e-3


def test_eprop_on_a_tanh_rnn_is_the_one_step_truncated_gradient():
    """Without W, h_t = tanh(U x_t + b + const) does not depend on h_{t-1}: Ã_t = 0."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(6)
    eprop = gradients(
        uorojax.eprop(model.apply, LOSS, structure=model.structure), params, h0, xs, ys
    )
    tbptt1 = gradients(uorojax.tbptt(model.apply, LOSS, 1), params, h0, xs, ys)
    assert_every_step_equal(eprop, [at(tbptt1, t) for t in range(6)], tol=1e-12)


@pytest.mark.parametrize("name", ["tanh", "gru", "lstm"])
def test_without_recurrent_kernels_keeps_values_and_the_exact_params_gradient(name):
    if name == "tanh":
        model, params, state = tiny_rnn()
    else:
        model = uorojax.linen_model(name, 3, 2)
        params, state = float64_model(model)
    xs, ys = regression_stream(1)

    def step_loss(p, local):
        q = without_recurrent_kernels(model.structure, p, state) if local else p
        new_state, output = model.apply(q, state, xs[0])
        return LOSS(output, ys[0]) + sum(jnp.sum(s**2) for s in jax.tree.leaves(new_state))

    np.testing.assert_allclose(step_loss(params, True), step_loss(params, False), rtol=1e-14)
    exact = jax.grad(step_loss)(params, False)
    assert rel_err(jax.grad(step_loss)(params, True), exact) < 1e-13


# ----------------------------------------------------------------------------- batches, errors


def test_per_stream_eprop_equals_a_loop_over_streams():
    model, params, h0 = leaky_model()
    states = h0 + 0.1 * jnp.arange(3.0)[:, None]
    xs, ys = regression_stream(4 * 3)
    xs, ys = xs.reshape(4, 3, 2), ys.reshape(4, 3, 2)
    est = uorojax.eprop(model.apply, LOSS, structure=model.structure)
    batched = gradients(uorojax.per_stream(est), params, states, xs, ys)
    one = runner(est)
    loop = [one(params, states[b], xs[:, b], ys[:, b]) for b in range(3)]
    mean = jax.tree.map(lambda *g: sum(g) / 3, *loop)
    np.testing.assert_allclose(
        jax.vmap(flat)(batched), jax.vmap(flat)(mean), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("who", ["eprop", "rflo"])
def test_a_missing_or_wrong_structure_is_named(who):
    factory = getattr(uorojax, who)
    model, params, h0 = leaky_model()
    missing = r"structure=None infers .* pass example_x=.*uorojax.infer_structure"
    with pytest.raises(ConfigError, match=missing):
        factory(model.apply, LOSS, structure=None).init_state(params, h0)
    with pytest.raises(
        ConfigError, match=f"{who}: structure must be a uorojax.structure.Structure"
    ):
        factory(model.apply, LOSS, structure={"W": 0})
    apply_flat, theta, _ = uorojax.ravel_params(model.apply, params)
    est = factory(apply_flat, LOSS, structure=model.structure)
    with pytest.raises(ConfigError, match=f"{who}: the structure maps none of these params"):
        est.init_state(theta, h0)
    with pytest.raises(ConfigError, match=missing):
        registry.build_estimator(who, model.apply, LOSS).init_state(params, h0)
    with pytest.raises(ConfigError, match="supports batch_mode per_stream"):
        registry.build_estimator(who, model.apply, LOSS, num_streams=2, batch_mode="shared",
                                 structure=model.structure)  # fmt: skip
