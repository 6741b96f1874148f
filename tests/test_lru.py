"""The LRU cell and deep LRU stacks: equations, ring init, structure, SnAp-1 on them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bptt_grad, flat, regression_stream, rel_err, scan_estimator
from jax.flatten_util import ravel_pytree

import uorojax
from uorojax import ConfigError
from uorojax.estimators.kf_rtrl import kf_rtrl
from uorojax.models.structure.check import check_structure
from uorojax.models.structure.types import Feedforward, Units

LOSS = uorojax.squared_error
F64 = jnp.float64


def as_float64(params, state0, state_value=0.2):
    """float64 params and a non-zero start state (every Jacobian block non-trivial)."""
    params = jax.tree.map(lambda a: a.astype(F64), params)
    state0 = jax.tree.map(lambda a: state_value + a.astype(F64), state0)
    return params, state0


def one_layer(tokens: bool):
    """One LRU layer (3 complex units), vector input of width 2 or tokens over 4."""
    if tokens:
        model = uorojax.linen_model("lru", 3, 4, vocab_size=4)
        params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
        xs = jnp.array([0, 3, 1, 2, 2, 0, 1, 3], jnp.int32)
        ys = jax.random.normal(jax.random.key(2), (8, 4), F64)
    else:
        model = uorojax.linen_model("lru", 3, 2)
        params, state0 = model.init(jax.random.key(0), jnp.zeros(2))
        xs, ys = regression_stream(8)
    return model, *as_float64(params, state0), xs, ys


def stack(num_layers=2, d_model=3, d_state=3, tokens=False, **kwargs):
    """A deep LRU stack; ``d_model == d_state`` by default, so that every square or
    ``(d_model,)`` leaf is a candidate for a unit pattern in the structure checks."""
    if tokens:
        model = uorojax.lru_stack(
            num_layers, d_model, d_state, 2, vocab_size=4, dtype=F64, **kwargs
        )
        params, state0 = model.init(jax.random.key(3), jnp.zeros((), jnp.int32))
        xs = jnp.array([0, 3, 1, 2, 2, 0], jnp.int32)
        ys = regression_stream(6)[1]
    else:
        model = uorojax.lru_stack(num_layers, d_model, d_state, 2, dtype=F64, **kwargs)
        params, state0 = model.init(jax.random.key(3), jnp.zeros(2, F64))
        xs, ys = regression_stream(6)
    return model, *as_float64(params, state0), xs, ys


def at(tree, t):
    return jax.tree.map(lambda a: a[t], tree)


# ----------------------------------------------------------------------------- equations


def test_the_cell_is_the_complex_recurrence_and_readout():
    """Against Orvieto et al.'s equations in complex jnp: h_t = λ h_{t-1} + γ B x_t,
    y_t = Re(C h_t) + D x_t, λ = exp(-e^ν + i e^θ), γ = sqrt(1 - |λ|²)."""
    cell = uorojax.LRUCell(features=4, r_min=0.5, r_max=0.95)
    x0 = jnp.zeros(3, F64)
    carry = cell.initialize_carry(jax.random.key(0), x0.shape)
    variables = cell.init(jax.random.key(1), carry, x0)
    p = jax.tree.map(lambda a: a.astype(F64), variables)["params"]
    lam = jnp.exp(-jnp.exp(p["nu"]) + 1j * jnp.exp(p["theta"]))
    gamma = jnp.sqrt(1 - jnp.abs(lam) ** 2)
    b, c = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]
    h = (0.3 - 0.2j) * jnp.ones(4)
    carry = (h.real, h.imag)
    step = jax.jit(cell.apply)
    for x in jax.random.normal(jax.random.key(2), (5, 3), F64):
        carry, y = step({"params": p}, carry, x)
        h = lam * h + gamma * (b @ x)
        np.testing.assert_allclose(carry[0], h.real, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(carry[1], h.imag, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(y, (c @ h).real + p["D"] * x, rtol=1e-12, atol=1e-14)


def written_out_stack(p, carry, x, vocab_size, mlp, norm):
    """One step of a deep LRU stack in complex numpy, from the equations of
    :func:`uorojax.lru_stack`: encoder; per layer ``x + M(GELU(LRU(norm(x))))``; readout."""
    p = jax.tree.map(np.asarray, p)

    def dense(q, v):
        return v @ q["kernel"] + q["bias"]

    def gelu(v):  # flax's default, the tanh approximation
        return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    if vocab_size is not None:
        x = np.eye(vocab_size)[x]
    x = dense(p["encoder"], np.asarray(x))
    new_carry = []
    for layer, (h_re, h_im) in enumerate(carry):
        q = p[f"layers_{layer}"]
        z = x
        if norm == "layer":
            z = (x - x.mean()) / np.sqrt(x.var() + 1e-6) * q["norm"]["scale"] + q["norm"]["bias"]
        u = q["lru"]
        lam = np.exp(-np.exp(u["nu"]) + 1j * np.exp(u["theta"]))
        h = lam * (h_re + 1j * h_im) + np.sqrt(1 - abs(lam) ** 2) * (
            (u["B_re"] + 1j * u["B_im"]) @ z
        )
        y = gelu(((u["C_re"] + 1j * u["C_im"]) @ h).real + u["D"] * z)
        if mlp == "glu":
            y = dense(q["value"], y) / (1 + np.exp(-dense(q["gate"], y)))
        else:
            y = dense(q["dense"], y)
        x = x + y
        new_carry.append((h.real, h.imag))
    return new_carry, dense(p["readout"], x)


@pytest.mark.parametrize(
    "kwargs", [{}, {"tokens": True, "num_layers": 3, "mlp": "mlp", "norm": "none"}]
)
def test_the_stack_is_its_written_out_equations(kwargs):
    """``lru_stack``'s step against the stack written out in complex numpy (each block's
    norm, LRU, GELU, GLU or MLP and skip connection), over a few steps of float64."""
    model, params, state0, xs, _ = stack(**kwargs)
    vocab = 4 if kwargs.get("tokens") else None
    mlp, norm = kwargs.get("mlp", "glu"), kwargs.get("norm", "layer")
    step = jax.jit(model.apply)
    carry, expected_carry = state0, jax.tree.map(np.asarray, state0)
    for x in xs[:3]:
        carry, out = step(params, carry, x)
        expected_carry, expected = written_out_stack(
            params["params"], expected_carry, x, vocab, mlp, norm
        )
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
        for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected_carry)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_the_ring_initialisation():
    """|λ| on [r_min, r_max], uniform in area (|λ|² uniform: mean (r_min² + r_max²)/2,
    not the (r_min² + r_min r_max + r_max²)/3 of |λ| uniform), phase uniform on
    [0, max_phase], and B, C at their scales."""
    r_min, r_max, max_phase, n, d_in = 0.3, 0.8, math.pi / 3, 2000, 2
    cell = uorojax.LRUCell(features=n, r_min=r_min, r_max=r_max, max_phase=max_phase)
    x0 = jnp.zeros(d_in)
    p = cell.init(jax.random.key(4), cell.initialize_carry(jax.random.key(0), x0.shape), x0)
    p = p["params"]
    radius, phase = np.exp(-np.exp(p["nu"])), np.exp(p["theta"])
    assert radius.min() >= r_min - 1e-6 and radius.max() <= r_max + 1e-6
    assert radius.min() < r_min + 0.01 and radius.max() > r_max - 0.01
    assert phase.min() >= 0 and phase.max() <= max_phase * (1 + 1e-6)
    assert phase.max() > 0.99 * max_phase
    sd_mean = (r_max**2 - r_min**2) / math.sqrt(12 * n)  # ~0.0036 (|λ| uniform: -0.042)
    assert abs(np.mean(radius**2) - (r_min**2 + r_max**2) / 2) < 4 * sd_mean
    assert abs(np.mean(phase) - max_phase / 2) < 4 * max_phase / math.sqrt(12 * n)
    np.testing.assert_allclose(np.std(p["B_re"]), 1 / math.sqrt(2 * d_in), rtol=0.05)
    np.testing.assert_allclose(np.std(p["B_im"]), 1 / math.sqrt(2 * d_in), rtol=0.05)
    np.testing.assert_allclose(np.std(p["C_re"]), 1 / math.sqrt(n), rtol=0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r_min": 0.9, "r_max": 0.5}, "r_min <= r_max"),
        ({"r_max": 1.5}, "r_max <= 1"),
        ({"r_min": 1.0}, "r_min < 1"),
        ({"max_phase": 0.0}, "max_phase must be > 0"),
    ],
)
def test_a_bad_ring_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        uorojax.LRUCell(features=3, **kwargs)
    with pytest.raises(ConfigError, match=message):
        uorojax.lru_stack(1, 2, 2, 2, **kwargs)


# ----------------------------------------------------------------------------- one layer


def step_loss_gradients(apply_fn, params, state0, xs, ys):
    """``dL_t/dθ`` for every step t, by ``jax.jacrev`` of the step losses through the
    unrolled sequence (one pass for all steps; ``bptt_grad`` does one step)."""

    def losses(p):
        def body(s, xy):
            s, out = apply_fn(p, s, xy[0])
            return s, LOSS(out, xy[1])

        return jax.lax.scan(body, state0, (xs, ys))[1]

    return jax.jacrev(losses)(params)


@pytest.mark.parametrize("tokens", [False, True])
def test_snap1_on_one_lru_layer_is_exact_rtrl_and_bptt(tokens):
    model, params, state0, xs, ys = one_layer(tokens)
    est = uorojax.snap1(model.apply, LOSS, structure=model.structure)
    _, snap, _ = scan_estimator(est, params, state0, xs, ys, jax.random.key(0))
    _, exact, _ = scan_estimator(
        uorojax.rtrl(model.apply, LOSS), params, state0, xs, ys, jax.random.key(0)
    )
    unrolled = step_loss_gradients(model.apply, params, state0, xs, ys)
    for t in range(len(xs)):
        assert rel_err(at(snap, t), at(exact, t)) < 1e-10, t
        assert rel_err(at(snap, t), at(unrolled, t)) < 1e-10, t
    last = bptt_grad(model.apply, LOSS, params, state0, xs, ys, len(xs) - 1)
    assert rel_err(at(snap, -1), last) < 1e-10
    # The history matters: the last gradient is far from its one-step truncation.
    _, truncated, _ = scan_estimator(
        uorojax.tbptt(model.apply, LOSS, 1), params, state0, xs, ys, jax.random.key(0)
    )
    assert rel_err(at(truncated, -1), at(snap, -1)) > 1e-2


# ----------------------------------------------------------------------------- stacks


def per_layer_rtrl(model, params, state0, xs, ys):
    """The per-layer approximation written out densely: ``J_t = (B_t + A_t J_{t-1}) ⊙ M``
    with ``M[s, p] = 1`` when parameter p is one of layer l's ``nu``, ``theta``,
    ``B_re``, ``B_im`` and state entry s is in layer l (the layer's own states, all of
    its units: per-layer exact RTRL), 0 otherwise (the encoder, norms, C, D, GLU and
    readout carry nothing); ``g_t = δθ + δs · J_{t-1}``, where δθ holds every parameter's
    within-step influence on the loss, through the layers above included."""
    flat_p, unravel_p = ravel_pytree(params)
    flat_s, unravel_s = ravel_pytree(state0)
    p_layer = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(k, "key", None) for k in path]
        recurrent = (
            len(keys) == 4 and keys[2] == "lru" and keys[3] in ("nu", "theta", "B_re", "B_im")
        )
        p_layer += [int(keys[1][len("layers_") :]) if recurrent else -1] * leaf.size
    s_layer = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state0):
        s_layer += [path[0].idx] * leaf.size
    mask = np.array(s_layer)[:, None] == np.array(p_layer)[None]

    @jax.jit
    def step(flat_s, jacobian, x, y):
        new_state = lambda p, s: ravel_pytree(model.apply(unravel_p(p), unravel_s(s), x)[0])[0]  # noqa: E731
        loss = lambda p, s: LOSS(model.apply(unravel_p(p), unravel_s(s), x)[1], y)  # noqa: E731
        d_theta, d_s = jax.grad(loss, argnums=(0, 1))(flat_p, flat_s)
        a = jax.jacfwd(new_state, argnums=1)(flat_p, flat_s)
        b = jax.jacrev(new_state)(flat_p, flat_s)
        return new_state(flat_p, flat_s), (b + a @ jacobian) * mask, d_theta + d_s @ jacobian

    jacobian = jnp.zeros((flat_s.size, flat_p.size))
    grads = []
    for x, y in zip(xs, ys):
        flat_s, jacobian, grad = step(flat_s, jacobian, x, y)
        grads.append(grad)
    return jnp.stack(grads)


def test_snap1_on_a_stack_is_per_layer_rtrl_and_not_exact_rtrl():
    model, params, state0, xs, ys = stack()
    est = uorojax.snap1(model.apply, LOSS, structure=model.structure)
    _, snap, _ = scan_estimator(est, params, state0, xs, ys, jax.random.key(0))
    expected = per_layer_rtrl(model, params, state0, xs, ys)
    np.testing.assert_allclose(jax.vmap(flat)(snap), expected, rtol=1e-10, atol=1e-13)
    # The approximation is real: a layer's influence on the layers above through their
    # histories (and the feedforward parameters' traces) is dropped.
    exact = step_loss_gradients(model.apply, params, state0, xs, ys)
    assert rel_err(at(snap, 0), at(exact, 0)) < 1e-12  # the first step has no history
    assert rel_err(at(snap, -1), at(exact, -1)) > 1e-3


def test_diagnostics_report_snap1s_cosine_on_the_lru():
    """uorojax.diagnostics measures SnAp-1's gradient against exact RTRL on the LRU: a
    cosine of 1 and no bias on one layer (exact there); on a stack, the cosine of the
    per-layer approximation written out above, below 1 once the history matters."""
    model, params, state0, xs, ys = one_layer(False)
    est = uorojax.snap1(model.apply, LOSS, structure=model.structure)
    stats = uorojax.diagnostics.gradient_statistics(
        est, model.apply, LOSS, params, state0, xs, ys, jax.random.key(1), num_keys=2
    )
    np.testing.assert_allclose(stats.mean_cosine, 1.0, atol=1e-12)
    assert np.max(stats.relative_bias) < 1e-10

    model, params, state0, xs, ys = stack()
    est = uorojax.snap1(model.apply, LOSS, structure=model.structure)
    stats = uorojax.diagnostics.gradient_statistics(
        est, model.apply, LOSS, params, state0, xs, ys, jax.random.key(1), num_keys=2
    )
    expected = per_layer_rtrl(model, params, state0, xs, ys)
    exact = jax.vmap(flat)(step_loss_gradients(model.apply, params, state0, xs, ys))
    cosine = jnp.sum(expected * exact, 1) / (
        jnp.linalg.norm(expected, axis=1) * jnp.linalg.norm(exact, axis=1)
    )
    np.testing.assert_allclose(stats.mean_cosine, cosine, rtol=1e-10)
    assert stats.mean_cosine[0] > 1 - 1e-12 and stats.mean_cosine[-1] < 1 - 1e-6


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("glu_layer_norm", {}),
        ("tokens_three_layers_mlp_no_norm", {"tokens": True, "num_layers": 3, "mlp": "mlp", "norm": "none"}),
    ],
)  # fmt: skip
def test_stack_structures_match_their_jacobians(name, kwargs):
    model, params, state0, xs, _ = stack(**kwargs)
    check_structure(model.apply, model.structure, params, state0, xs[0], rtol=1e-10)


def test_linen_lru_structures_match_their_jacobians():
    """A one-layer LRU with token input and a two-layer linen LRU stack (the one-layer
    vector case is in test_family's sweep of every cell)."""
    model, params, state0, xs, _ = one_layer(tokens=True)
    check_structure(model.apply, model.structure, params, state0, xs[0], rtol=1e-10)
    model = uorojax.linen_model("lru", 2, 3, num_layers=2, vocab_size=3)
    params, state0 = as_float64(*model.init(jax.random.key(0), jnp.zeros((), jnp.int32)))
    check_structure(model.apply, model.structure, params, state0, jnp.asarray(1), rtol=1e-10)
    units = model.structure.param_units
    assert units(("params", "cells_0", "C_re"), None) == Feedforward(1)
    assert units(("params", "cells_1", "C_re"), None) is None
    assert units(("params", "cells_1", "B_im"), None) == Units(1, 0)


def _declaring(structure, target, declared):
    def param_units(path, leaf):
        return declared if path == target else structure.param_units(path, leaf)

    return structure._replace(param_units=param_units)


@pytest.mark.parametrize(
    "target, declared, message",
    [
        (("params", "layers_0", "lru", "C_re"), Feedforward(0), r"\['layers_0'\]\['lru'\]\['C_re'\]: declared Feedforward\(feeds=0\).*but it feeds layer 1 only"),
        (("params", "layers_1", "lru", "D"), Feedforward(1), r"\['D'\]: declared Feedforward\(feeds=1\).*but it moves no state in one step"),
        (("params", "encoder", "kernel"), Feedforward(1), r"\['encoder'\]\['kernel'\]: declared Feedforward\(feeds=1\).*but it feeds layer 0 only"),
        (("params", "layers_1", "norm", "scale"), Feedforward(2), r"\['scale'\] is declared to feed layer 2, which has no state"),
        (("params", "layers_1", "lru", "nu"), Feedforward(1), r"\['nu'\]: declared Feedforward\(feeds=1\).*but it moves only its own unit of layer 1 \(axis 0 indexes units\)"),
        (("params", "layers_0", "lru", "B_re"), Feedforward(0), r"\['B_re'\]: declared Feedforward\(feeds=0\).*but it moves only its own unit"),
        (("params", "layers_0", "lru", "C_re"), None, r"\['C_re'\]: declared None.*but it feeds layer 1"),
        (("params", "layers_0", "norm", "bias"), Units(0, 0), r"\['bias'\]: declared Units\(layer=0, axis=0, groups=1\).*but it feeds layer 0 only"),
    ],
)  # fmt: skip
def test_a_wrong_stack_structure_is_named(target, declared, message):
    model, params, state0, xs, _ = stack()
    structure = _declaring(model.structure, target, declared)
    with pytest.raises(ConfigError, match=message):
        check_structure(model.apply, structure, params, state0, xs[0])


def test_feedforward_parameters_are_taken_by_snap1_only():
    model, params, state0, xs, ys = stack()
    with pytest.raises(
        ConfigError,
        match=r"\['encoder'\]\['bias'\] is declared Feedforward\(0\).*kf_rtrl has no rule",
    ):
        kf_rtrl(model.apply, LOSS, structure=model.structure).init_state(params, state0)
    carry = uorojax.snap1(model.apply, LOSS, structure=model.structure).init_state(params, state0)
    # No influence for a feedforward parameter; one entry per unit for ν in each state leaf
    # of its own layer (h_re, h_im of layer 1) only.
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    nu_1 = names.index("['params']['layers_1']['lru']['nu']")
    encoder = names.index("['params']['encoder']['kernel']")
    assert carry.influence[encoder] is None
    assert carry.influence[nu_1].shape == (2, 3)


# ----------------------------------------------------------------------------- complex


def test_complex_params_or_state_are_refused_by_name():
    model, params, state0, xs, ys = one_layer(tokens=False)
    complex_params = jax.tree.map(lambda a: a + 0j, params)
    with pytest.raises(ConfigError, match=r"params leaf .*\['B_im'\] is complex \(complex128\)"):
        uorojax.rtrl(model.apply, LOSS).init_state(complex_params, state0)
    snap = uorojax.snap1(model.apply, LOSS, structure=model.structure)
    with pytest.raises(ConfigError, match=r"params leaf .* is complex"):
        snap.init_state(complex_params, state0)
    carry = snap.init_state(params, state0)
    with pytest.raises(ConfigError, match=r"params leaf .* is complex"):
        snap.step(complex_params, carry, xs[0], ys[0], jax.random.key(0))
    complex_state = (state0[0][0] + 1j * state0[0][1],)
    with pytest.raises(ConfigError, match=r"snap1: state leaf \[0\] is complex"):
        snap.init_state(params, complex_state)


# ----------------------------------------------------------------------------- batches


def test_per_stream_snap1_on_a_stack_equals_a_loop_over_streams_under_jit():
    model, params, state0, xs, ys = stack()
    num_streams, steps = 3, 4
    scales = jnp.array([1.0, -0.5, 2.0])
    states0 = jax.tree.map(lambda a: scales[:, None] * a[None], state0)
    xs_b = jnp.stack([xs[:steps] * s for s in scales], axis=1)
    ys_b = jnp.stack([ys[:steps] + s for s in scales], axis=1)
    est = uorojax.per_stream(uorojax.snap1(model.apply, LOSS, structure=model.structure))

    @jax.jit
    def run(params, states0, xs_b, ys_b):
        return scan_estimator(est, params, states0, xs_b, ys_b, jax.random.key(0))[:2]

    carry, grads = run(params, states0, xs_b, ys_b)
    single = uorojax.snap1(model.apply, LOSS, structure=model.structure)
    run_one = jax.jit(lambda *a: scan_estimator(single, *a, jax.random.key(0))[:2])
    per_stream_grads = []
    for b in range(num_streams):
        carry_b, grads_b = run_one(params, at(states0, b), xs_b[:, b], ys_b[:, b])
        per_stream_grads.append(jax.vmap(flat)(grads_b))
        np.testing.assert_allclose(flat(at(carry, b)), flat(carry_b), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(
        jax.vmap(flat)(grads), np.mean(per_stream_grads, axis=0), rtol=1e-11, atol=1e-13
    )
