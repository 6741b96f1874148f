"""The structured estimators on inferred structures: no structure written, fused gates,
any layout, and never a wrong structure.

Plain-JAX models the built-ins do not cover are checked against SnAp-1 and e-prop
written out from their definitions with dense Jacobians; the ``flax.nnx`` and Equinox
GRU cells and a plain-JAX 2-layer GRU train with no structure written; the built-in
models' hand-written structures (the old path: diagonalised params, ``leaf_inputs``)
give the gradients of the inferred program; mutated structures are refused at
``init_state``.
"""

import functools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_err, scan_estimator
from jax.flatten_util import ravel_pytree
from structures import CASES, mutations, structure

import uorojax
from uorojax import ConfigError
from uorojax.estimators import es_d_rtrl as es_d_rtrl_module
from uorojax.estimators import kf_rtrl as kf_rtrl_module
from uorojax.estimators.sparse_influence import EPropState, sparse_step

sg = jax.lax.stop_gradient
N, M, STEPS = 3, 2, 20


def loss(out, y):
    return jnp.sum((out - y) ** 2)


def normal(key, shape, scale=0.5):
    return scale * jax.random.normal(key, shape, jnp.float64)


def stream(length=STEPS, inputs=M, outputs=2, seed=3):
    kx, ky = jax.random.split(jax.random.key(seed))
    return normal(kx, (length, inputs), 1.0), normal(ky, (length, outputs), 1.0)


# ------------------------------------------------------------------ plain-JAX models
# Each: (apply(params, state, x, hold=False), params, state0, roles), roles as
# {name: (layer, axis, groups) or None} and the state leaves' layers as {name: layer}.
# ``hold`` holds the recurrent products' state vector constant: e-prop's written-out
# Jacobian of each unit's own dynamics.


def k_at_h():
    """``h = tanh(W @ h + U @ x + b)``: kernels laid out (out, in)."""
    k = jax.random.split(jax.random.key(0), 5)
    params = {"W": normal(k[0], (N, N)), "U": normal(k[1], (N, M)), "b": normal(k[2], (N,)),
              "V": normal(k[3], (2, N))}  # fmt: skip

    def apply(p, h, x, hold=False):
        h = jnp.tanh(p["W"] @ (sg(h) if hold else h) + p["U"] @ x + p["b"])
        return h, p["V"] @ h

    roles = {"W": (0, 0, 1), "U": (0, 0, 1), "b": (0, 0, 1), "V": None}
    return apply, params, normal(k[4], (N,)), roles, {"": 0}


def dict_state_leaky():
    """A leaky tanh RNN whose state is a dict ``{"h": h}``."""
    k = jax.random.split(jax.random.key(1), 5)
    params = {"W": normal(k[0], (N, N)), "U": normal(k[1], (M, N)), "b": normal(k[2], (N,)),
              "V": normal(k[3], (N, 2))}  # fmt: skip

    def apply(p, s, x, hold=False):
        h = s["h"]
        z = (sg(h) if hold else h) @ p["W"] + x @ p["U"] + p["b"]
        new = 0.7 * h + 0.3 * jnp.tanh(z)
        return {"h": new}, new @ p["V"]

    roles = {"W": (0, 1, 1), "U": (0, 1, 1), "b": (0, 0, 1), "V": None}
    return apply, params, {"h": normal(k[4], (N,))}, roles, {"h": 0}


def fused_gru():
    """A GRU with fused gate kernels ``(m, 3n)`` and ``(n, 3n)`` and no recurrent bias
    (``flax.nnx.GRUCell``'s layout): ``n = tanh(x_n + r * (h @ K_n))``."""
    k = jax.random.split(jax.random.key(2), 5)
    params = {"Ki": normal(k[0], (M, 3 * N)), "bi": normal(k[1], (3 * N,)),
              "Kh": normal(k[2], (N, 3 * N)), "V": normal(k[3], (N, 2))}  # fmt: skip

    def apply(p, h, x, hold=False):
        xi = x @ p["Ki"] + p["bi"]
        hh = (sg(h) if hold else h) @ p["Kh"]
        r = jax.nn.sigmoid(xi[:N] + hh[:N])
        z = jax.nn.sigmoid(xi[N : 2 * N] + hh[N : 2 * N])
        n = jnp.tanh(xi[2 * N :] + r * hh[2 * N :])
        new = (1 - z) * n + z * h
        return new, new @ p["V"]

    roles = {"Ki": (0, 1, 3), "bi": (0, 0, 3), "Kh": (0, 1, 3), "V": None}
    return apply, params, normal(k[4], (N,)), roles, {"": 0}


def two_leaf_lstm():
    """An LSTM with state ``(c, h)`` and one fused kernel ``(m + n, 4n)`` on ``[x, h]``."""
    k = jax.random.split(jax.random.key(4), 5)
    params = {"K": normal(k[0], (M + N, 4 * N)), "b": normal(k[1], (4 * N,)),
              "V": normal(k[2], (N, 2))}  # fmt: skip

    def apply(p, s, x, hold=False):
        c, h = s
        g = jnp.concatenate([x, sg(h) if hold else h]) @ p["K"] + p["b"]
        i, f, o = (jax.nn.sigmoid(g[j * N : (j + 1) * N]) for j in range(3))
        c = f * c + i * jnp.tanh(g[3 * N :])
        h = o * jnp.tanh(c)
        return (c, h), h @ p["V"]

    state = (normal(k[3], (N,)), normal(k[4], (N,)))
    return apply, params, state, {"K": (0, 1, 4), "b": (0, 0, 4), "V": None}, {"0": 0, "1": 0}


def gru_stack():
    """Two fused GRU layers (the plain-JAX 2-layer GRU); layer 1 reads layer 0's new h."""
    k = jax.random.split(jax.random.key(5), 9)
    params = {f"l{i}": {"Ki": normal(k[3 * i], (M if i == 0 else N, 3 * N)),
                        "bi": normal(k[3 * i + 1], (3 * N,)),
                        "Kh": normal(k[3 * i + 2], (N, 3 * N))} for i in range(2)}  # fmt: skip
    params["V"] = normal(k[6], (N, 2))

    def cell(q, h, x, hold):
        xi = x @ q["Ki"] + q["bi"]
        hh = (sg(h) if hold else h) @ q["Kh"]
        r = jax.nn.sigmoid(xi[:N] + hh[:N])
        z = jax.nn.sigmoid(xi[N : 2 * N] + hh[N : 2 * N])
        return (1 - z) * jnp.tanh(xi[2 * N :] + r * hh[2 * N :]) + z * h

    def apply(p, s, x, hold=False):
        h0 = cell(p["l0"], s[0], x, hold)
        h1 = cell(p["l1"], s[1], h0, hold)
        return (h0, h1), h1 @ p["V"]

    roles = {
        f"l{i}{k}": (i, 1 if k[0] == "K" else 0, 3) for i in range(2) for k in ("Ki", "bi", "Kh")
    }
    roles["V"] = None
    return apply, params, (normal(k[7], (N,)), normal(k[8], (N,))), roles, {"0": 0, "1": 1}


PLAIN = {"k_at_h": k_at_h, "dict_state": dict_state_leaky, "fused_gru": fused_gru,
         "two_leaf_lstm": two_leaf_lstm, "gru_stack": gru_stack}  # fmt: skip


def _key(path) -> str:
    return "".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def pattern(params, state, roles, layers):
    """SnAp-1's mask M[i, p] (flat state entry i, flat params entry p): p moves unit
    ``p[axis] mod n`` of its layer, in every state leaf of that layer."""
    s_layer, s_unit, p_layer, p_unit = [], [], [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        s_layer += [layers[_key(path)]] * leaf.size
        s_unit += list(range(leaf.size))
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        role = roles[_key(path)]
        if role is None:
            p_layer += [-1] * leaf.size
            p_unit += [-1] * leaf.size
            continue
        layer, axis, groups = role
        n = leaf.shape[axis] // groups
        p_layer += [layer] * leaf.size
        p_unit += list((np.indices(leaf.shape)[axis] % n).ravel())
    same_layer = np.equal.outer(np.array(s_layer), np.array(p_layer))
    return jnp.asarray(same_layer & np.equal.outer(np.array(s_unit), np.array(p_unit)))


def unit_diagonal(state, layers):
    """D[i, i']: state entries of one layer and one unit (the unit-diagonal blocks)."""
    lay, unit = [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        lay += [layers[_key(path)]] * leaf.size
        unit += list(range(leaf.size))
    lay, unit = np.array(lay), np.array(unit)
    return jnp.asarray(np.equal.outer(lay, lay) & np.equal.outer(unit, unit))


def by_definition(apply, params, state0, xs, ys, mask):
    """SnAp-1 written out: ``g_t = ∂L_t/∂θ + ∂L_t/∂s_{t-1} J_{t-1}`` and ``J_t = (B_t +
    A_t J_{t-1}) ⊙ M`` with dense Jacobians ``B_t = ∂s_t/∂θ``, ``A_t = ∂s_t/∂s_{t-1}``."""
    theta, unravel_p = ravel_pytree(params)
    s, unravel_s = ravel_pytree(state0)

    def f(th, s, x):
        return ravel_pytree(apply(unravel_p(th), unravel_s(s), x)[0])[0]

    def step_loss(th, s, x, y):
        return loss(apply(unravel_p(th), unravel_s(s), x)[1], y)

    @jax.jit
    def step(th, s, jac, x, y):
        b, a = jax.jacfwd(f, 0)(th, s, x), jax.jacfwd(f, 1)(th, s, x)
        g_th, g_s = jax.grad(step_loss, (0, 1))(th, s, x, y)
        return f(th, s, x), (b + a @ jac) * mask, g_th + g_s @ jac

    return _forward_jacobian_run(step, theta, s, xs, ys)


def _forward_jacobian_run(step, theta, s, xs, ys) -> list:
    """The gradients of a written-out reference whose ``step(θ, s, J, x, y) -> (s, J, g)``
    carries the (masked) Jacobian ``J = ∂s/∂θ``, from ``J = 0``."""
    jac = jnp.zeros((s.size, theta.size), theta.dtype)
    grads = []
    for x, y in zip(xs, ys):
        s, jac, g = step(theta, s, jac, x, y)
        grads.append(g)
    return grads


def estimator_grads(est, params, state0, xs, ys):
    _, grads, _ = scan_estimator(est, params, state0, xs, ys, jax.random.key(0))
    return [ravel_pytree(jax.tree.map(lambda a: a[t], grads))[0] for t in range(len(xs))]


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_snap1_on_the_inferred_structure_is_snap1_by_definition(name):
    apply, params, state0, roles, layers = PLAIN[name]()
    xs, ys = stream()
    inferred = uorojax.infer_structure(apply, params, state0, xs[0])
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        role = roles[_key(path)]
        expected = None if role is None else uorojax.structure.Units(*role)
        got = inferred.param_units(uorojax.structure.plain_path(path), leaf)
        assert got == expected, (path, got)
    est = uorojax.snap1(apply, loss, example_x=xs[0])
    got = estimator_grads(est, params, state0, xs, ys)
    want = by_definition(apply, params, state0, xs, ys, pattern(params, state0, roles, layers))
    for t, (g, w) in enumerate(zip(got, want)):
        assert rel_err(g, w) < 1e-10, (t, rel_err(g, w))
    # and the pattern matters: the dense recursion (RTRL) differs after two steps
    exact = estimator_grads(uorojax.rtrl(apply, loss), params, state0, xs, ys)
    assert rel_err(got[-1], exact[-1]) > 1e-4


@pytest.mark.parametrize("name", ["fused_gru", "two_leaf_lstm"])
def test_eprop_on_the_inferred_structure_is_eprop_written_out(name):
    apply, params, state0, roles, layers = PLAIN[name]()
    xs, ys = stream()
    est = uorojax.eprop(apply, loss, example_x=xs[0])
    got = estimator_grads(est, params, state0, xs, ys)
    want = _eprop_by_definition(apply, params, state0, xs, ys, roles, layers)
    for t, (g, w) in enumerate(zip(got, want)):
        assert rel_err(g, w) < 1e-10, (t, rel_err(g, w))
    snap = estimator_grads(uorojax.snap1(apply, loss, example_x=xs[0]), params, state0, xs, ys)
    assert rel_err(got[-1], snap[-1]) > 1e-4  # the recurrent kernels are taken out


def _eprop_by_definition(apply, params, state0, xs, ys, roles, layers):
    theta, unravel_p = ravel_pytree(params)
    s, unravel_s = ravel_pytree(state0)
    mask, diag = pattern(params, state0, roles, layers), unit_diagonal(state0, layers)

    def f(th, s, x, hold=False):
        return ravel_pytree(apply(unravel_p(th), unravel_s(s), x, hold)[0])[0]

    def after(th, s, x, y):  # L_t as a function of θ (readout) and the new state
        s_new = f(th, s, x)
        out = apply(unravel_p(th), unravel_s(s), x)[1]
        return loss(out, y), s_new

    @jax.jit
    def step(th, s, jac, x, y):
        b = jax.jacfwd(f, 0)(th, s, x)
        a_local = jax.jacfwd(lambda s: f(th, s, x, True))(s) * diag
        jac = b * mask + a_local @ jac
        s_new = f(th, s, x)
        # λ_t = ∂L_t/∂s_t and the readout's direct gradient, with s_t an input
        readout = jax.grad(lambda th2, sn: _readout_loss(apply, unravel_p, unravel_s, th2, sn, y),
                           (0, 1))(th, s_new)  # fmt: skip
        return s_new, jac, readout[0] + readout[1] @ jac

    return _forward_jacobian_run(step, theta, s, xs, ys)


def _readout_loss(apply, unravel_p, unravel_s, th, s_new, y):
    """The output read from the new state by the model's readout ``V`` (its last leaf)."""
    p = unravel_p(th)
    h = unravel_s(s_new)
    h = h["h"] if isinstance(h, dict) else (h[-1] if isinstance(h, tuple) else h)
    return loss(h @ p["V"], y)


# ------------------------------------------------------------------ library cells


def _library_models():
    from flax import nnx

    x0 = jnp.zeros(M)
    nnx_model = uorojax.from_nnx(
        functools.partial(nnx.GRUCell, M, N, param_dtype=jnp.float64), jnp.zeros(N)
    )
    eqx = pytest.importorskip("equinox")
    eqx_model = uorojax.from_equinox(
        functools.partial(eqx.nn.GRUCell, M, N, dtype=jnp.float64), jnp.zeros(N),
        call="x_state",
    )  # fmt: skip
    apply, params, state0, _, _ = gru_stack()
    out = {}
    for name, model in (("nnx", nnx_model), ("eqx", eqx_model)):
        params_m, h0 = model.init(jax.random.key(0), x0)
        out[name] = (model.apply, params_m, h0.astype(jnp.float64) + 0.1)
    out["plain_gru_2"] = (lambda p, s, x: apply(p, s, x), params, state0)
    return out


@pytest.mark.parametrize("name", ["nnx", "eqx", "plain_gru_2"])
def test_snap1_eprop_es_d_rtrl_train_library_cells_with_no_structure_written(name):
    """nnx.GRUCell (fused kernels, no recurrent bias), eqx.nn.GRUCell (``K @ h``, two
    biases) and a plain-JAX 2-layer GRU: the estimators infer the structure from
    ``example_x``. SnAp-1 equals RTRL on the first step, and on one layer on the second
    too (J_1 = B_1 lies on the pattern); e-prop equals them on the first; ES-D-RTRL at
    decay 0 is the one-step gradient ∂L_t/∂z ⊗ a_t = δθ_t (TBPTT of one step), exactly,
    through the probes (nnx's ``h_0 @ K_n`` has no bias)."""
    xs, ys = stream(4, outputs=N)
    apply, params, h0 = _library_models()[name]
    two = loss
    ys = ys if name != "plain_gru_2" else ys[:, :2]
    rtrl = estimator_grads(uorojax.rtrl(apply, two), params, h0, xs, ys)
    snap = estimator_grads(uorojax.snap1(apply, two, example_x=xs[0]), params, h0, xs, ys)
    eprop = estimator_grads(uorojax.eprop(apply, two, example_x=xs[0]), params, h0, xs, ys)
    assert rel_err(snap[0], rtrl[0]) < 1e-10 and rel_err(eprop[0], rtrl[0]) < 1e-10
    if name != "plain_gru_2":
        assert rel_err(snap[1], rtrl[1]) < 1e-10
    assert rel_err(snap[-1], rtrl[-1]) > 1e-6 and rel_err(eprop[-1], snap[-1]) > 1e-6
    tbptt = uorojax.tbptt(apply, two, truncation=1, example_x=xs[0], example_y=ys[0])
    one_step = estimator_grads(tbptt, params, h0, xs, ys)
    es = uorojax.es_d_rtrl(apply, two, example_x=xs[0], decay=0.0)
    es_grads = estimator_grads(es, params, h0, xs, ys)
    for t in range(len(xs)):
        assert rel_err(es_grads[t], one_step[t]) < 1e-10, t


# ------------------------------------------------------------------ built-in models


class Fixed:
    """A structure source that gives one structure as written (the old path: the
    hand-written ``recurrent_kernels`` diagonalised in the params, ``leaf_inputs``)."""

    def __init__(self, structure):
        self.structure = structure

    example_x = None

    def at_step(self, *args):
        return self.structure

    def at_init(self, *args):
        return self.structure


SPARSE = (("snap1", True), ("eprop", False))


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_inferred_structure_gives_the_hand_written_gradients(name):
    """Every built-in model, every structured estimator that takes it: the gradients on
    the inferred program equal those of the hand-written structure's own path (its
    kernels diagonalised in the params with their biases, its ``leaf_inputs``)."""
    case = CASES[name]()
    written = structure(case)
    inferred = uorojax.infer_structure(case.apply, case.params, case.state, case.x)
    states = jax.tree.map(lambda a: 0.3 + a[None], case.state)
    n = int(jnp.size(case.x)) if jnp.ndim(case.x) else None
    xs = (jnp.arange(2) % 4) if n is None else stream(2, n)[0]
    ys = stream(2, outputs=2, seed=4)[1]
    one_layer = len(set(case.layers.values())) == 1
    for _, keep in SPARSE if one_layer else SPARSE[:1]:  # e-prop's path: one layer suffices
        carry = EPropState(states, _zero_influence(inferred, case.params, case.state))
        old = _sparse_run(case, Fixed(written), keep, carry, xs, ys)
        new = _sparse_run(case, Fixed(inferred), keep, carry, xs, ys)
        assert rel_err(old, new) < 1e-10, (name, keep)
    if case.field is not None:  # ES-D-RTRL on leaf_inputs against the probes
        old = _es_run(case, Fixed(written), xs, ys)
        new = _es_run(case, Fixed(inferred), xs, ys)
        assert rel_err(old, new) < 1e-10, name
    if case.field == "layer_inputs":  # KF-RTRL on layer_inputs against the probes
        old = _kf_run(case, Fixed(written), xs, ys)
        new = _kf_run(case, Fixed(inferred), xs, ys)
        assert rel_err(old, new) < 1e-10, name


def _zero_influence(structure, params, state):
    from uorojax.estimators.sparse_influence import zero_influence

    return jax.tree.map(lambda a: a[None], zero_influence(structure, params, state, "test"))


def _sparse_run(case, source, keep, carry, xs, ys):
    step = jax.jit(functools.partial(sparse_step, case.apply, loss, source, keep, EPropState))
    return _gradients(step, case.params, carry, xs[:, None], ys[:, None], keys=False)


def _es_run(case, source, xs, ys):
    init = es_d_rtrl_module.es_d_rtrl_init(source, case.params, case.state)
    carry = jax.tree.map(lambda a: a[None], init)
    step = jax.jit(
        functools.partial(es_d_rtrl_module.es_d_rtrl_streams, case.apply, loss, source, 0.8)
    )
    carry = carry._replace(state=jax.tree.map(lambda a: a + 0.3, carry.state))
    return _gradients(step, case.params, carry, xs[:, None], ys[:, None], keys=False)


def _kf_run(case, source, xs, ys):
    carry = kf_rtrl_module.kf_rtrl_init(source, case.params, case.state)
    step = jax.jit(functools.partial(kf_rtrl_module.kf_rtrl_step, case.apply, loss, source, 1e-7))
    carry = carry._replace(state=jax.tree.map(lambda a: a + 0.3, carry.state))
    return _gradients(step, case.params, carry, xs, ys, keys=True)


def _gradients(step, params, carry, xs, ys, *, keys: bool):
    """The flat gradients of ``step`` over the sequence, concatenated (step ``t`` keyed
    by ``jax.random.key(t)`` with ``keys``, else by None)."""
    out = []
    for t in range(len(xs)):
        g, carry, _ = step(params, carry, xs[t], ys[t], jax.random.key(t) if keys else None)
        out.append(ravel_pytree(g)[0])
    return jnp.concatenate(out)


# ------------------------------------------------------------------ wrong structures


def _kind(what: str) -> str:
    """A mutation's kind: its last word(s) after the leaf it names."""
    return what.rsplit("]", 1)[-1].strip() if "]" in what else what


def _sampled_mutations(per_kind: int = 2, seed: int = 0) -> list:
    """A sample of every case's single-field mutations with every kind (a role's layer,
    axis, groups, Feedforward or None; a state layer; a kernel dropped or its kernel,
    bias, state or layout; a leaf input's vector or pre-activation) at least once."""
    by_kind: dict = {}
    for name in sorted(CASES):
        for m in mutations(CASES[name]()):
            by_kind.setdefault(_kind(m.what), []).append((name, m))
    rng = random.Random(seed)
    return [
        pick
        for kind in sorted(by_kind)
        for pick in rng.sample(by_kind[kind], min(per_kind, len(by_kind[kind])))
    ]


MUTANTS = _sampled_mutations()


def test_the_sample_covers_every_mutation_kind():
    kinds = {_kind(m.what) for _, m in MUTANTS}
    assert {"layer", "axis", "groups", "as Feedforward", "as None", "as Units", "dropped",
            "kernel", "bias", "state", "layout", "pre-activation"} <= kinds, kinds  # fmt: skip
    assert any(k.startswith("vector") for k in kinds), kinds


@pytest.mark.parametrize("mutant", range(len(MUTANTS)), ids=lambda i: MUTANTS[i][1].what)
def test_a_wrong_structure_is_refused_at_init_state_before_any_gradient(mutant):
    """The mutated structure passed to the estimator itself (SnAp-1, and ES-D-RTRL where
    the case has inputs): ``init_state`` raises a ConfigError naming what was changed,
    so no step, and no gradient, runs on it."""
    name, m = MUTANTS[mutant]
    case = m.case
    algos = ["snap1"] + (["es_d_rtrl"] if case.inputs is not None else [])
    for algo in algos:
        est = getattr(uorojax, algo)(case.apply, loss, structure=structure(case), example_x=case.x)
        with pytest.raises(ConfigError) as raised:
            est.init_state(case.params, case.state)
        if m.blame:
            assert any(b in str(raised.value) for b in m.blame), (name, algo, str(raised.value))


def test_without_an_example_a_wrong_structure_is_refused_at_the_first_step():
    name, m = next((n, m) for n, m in MUTANTS if _kind(m.what) == "layer")
    case = m.case
    est = uorojax.snap1(case.apply, loss, structure=structure(case))
    with pytest.raises(ConfigError):
        carry = est.init_state(case.params, case.state)
        est.step(case.params, carry, case.x, jnp.zeros(2), jax.random.key(0))


def test_the_cho_gru_gets_its_named_error_through_snap1():
    """``h~ = tanh(W x + Uh @ (r * h))``: Ur moves every unit in one step."""
    k = jax.random.split(jax.random.key(7), 6)
    params = {"Wr": normal(k[0], (N, M)), "Ur": normal(k[1], (N, N)),
              "W": normal(k[2], (N, M)), "Uh": normal(k[3], (N, N)), "V": normal(k[4], (2, N))}  # fmt: skip

    def apply(p, h, x):
        r = jax.nn.sigmoid(p["Wr"] @ x + p["Ur"] @ h)
        h = jnp.tanh(p["W"] @ x + p["Uh"] @ (r * h))
        return h, p["V"] @ h

    est = uorojax.snap1(apply, loss, example_x=jnp.zeros(M))
    with pytest.raises(ConfigError, match=r"\['Ur'\] moves every unit of layer 0 in one step") as e:
        est.init_state(params, normal(k[5], (N,)))
    assert "use uoro or rtrl, or write the cell as r * (Uh h + b)" in str(e.value)


@pytest.mark.parametrize("algorithm", ["snap1", "eprop", "es_d_rtrl"])
@pytest.mark.parametrize("model", ["nnx_gru", "eqx_gru", "jax_gru"])
def test_the_runner_trains_library_gru_cells_by_model_name(tmp_path, model, algorithm):
    """nnx's and Equinox's GRU cells and a two-layer GRU in plain JAX, by name, with no
    structure written."""
    from uorojax import runs

    c = runs.default_config()
    c.task, c.task_args, c.model, c.algorithm = "anbn", {"k": 1, "l": 4}, model, algorithm
    c.hidden_size, c.steps, c.chunk, c.log_every, c.checkpoint_every = 4, 20, 10, 10, 20
    if model == "jax_gru":
        c.num_layers = 2
    c.quiet = True
    summary = runs.run(c, str(tmp_path / "run"))
    assert np.isfinite(summary["final_metrics_last_10pct"]["loss"])
