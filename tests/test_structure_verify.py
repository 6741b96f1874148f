"""uorojax.structure.verify_structure: every hand-written structure of the built-in models
passes, and every single-field mutation of it is refused with a ConfigError naming what
was changed, at zero state and one-hot input; with inference (the roles compared with the
inferred ones) and without (the model wrapped in a lax.cond, which inference refuses, so
the roles are measured at a random point)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from structures import CASES, Case, mutations, structure

import uorojax
from uorojax import ConfigError
from uorojax.models import inference
from uorojax.models.structure import (
    Feedforward,
    RecurrentKernel,
    Units,
    from_roles,
    infer_structure,
    verify_structure,
)

NUMERIC = ("tanh_rnn", "linen_lstm_1", "linen_gru_2", "elementwise_mgu", "lru_stack")


@pytest.fixture(autouse=True, scope="module")
def one_inference_per_model():
    """``infer`` reads only the step's jaxpr, the shapes, dtypes and tree structure, never
    values: every structure and mutation of one model is checked against one inference
    (or one refusal), as ``verify_structure`` would infer it again."""
    infer, memo = inference.infer, {}

    def once(apply_fn, params, state, x):
        trees = (params, state, x)
        avals = tuple((np.shape(a), np.asarray(a).dtype) for a in jax.tree.leaves(trees))
        key = (apply_fn, jax.tree.structure(trees), avals)
        if key not in memo:
            try:
                memo[key] = infer(apply_fn, params, state, x)
            except Exception as err:  # the refusal, raised again on every call
                memo[key] = err
        if isinstance(memo[key], Exception):
            raise memo[key]
        return memo[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference, "infer", once)
        yield


def behind_cond(apply):
    """The same step inside a lax.cond on the input: inference refuses it (a dense use
    inside control flow that reaches the state)."""

    def step(params, state, x):
        return jax.lax.cond(jnp.sum(jnp.asarray(x)) > -1, apply, apply, params, state, x)

    return step


@functools.cache
def case_of(name: str, numeric: bool) -> Case:
    case = CASES[name]()
    return case._replace(apply=behind_cond(case.apply)) if numeric else case


def verify(case: Case, **kwargs):
    return verify_structure(case.apply, structure(case), case.params, case.state, case.x, **kwargs)


@pytest.mark.parametrize(
    "name, numeric",
    [(name, False) for name in sorted(CASES)] + [(name, True) for name in NUMERIC],
    ids=[f"{name}-inferred" for name in sorted(CASES)] + [f"{name}-numeric" for name in NUMERIC],
)
def test_every_hand_written_structure_passes(name, numeric):
    """Every case with inference; the numeric path (inference refused) on a subset."""
    checked = verify(case_of(name, numeric))
    assert (checked.program is None) == numeric


def refusals(case: Case) -> list[str]:
    """Every mutation of ``case`` that is not refused, or refused without naming what
    was changed."""
    missed = []
    for m in mutations(case):
        try:
            verify(m.case)
        except ConfigError as err:
            if m.blame and not any(b in str(err) for b in m.blame):
                missed.append(f"{m.what}: refused without naming {m.blame}: {err}")
        else:
            missed.append(f"{m.what}: not refused")
    return missed


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_single_field_mutation_is_refused_by_name(name):
    case = case_of(name, False)
    assert len(mutations(case)) >= 5
    assert refusals(case) == []


@pytest.mark.parametrize("name", NUMERIC)
def test_every_mutation_is_refused_where_inference_refuses_the_model(name):
    assert refusals(case_of(name, True)) == []


@pytest.mark.parametrize("numeric", [False, True], ids=["inferred", "numeric"])
def test_a_wrong_axis_of_a_square_kernel_is_refused_at_zero_state(numeric):
    """At h = 0 the recurrent kernel's gradient is zero whatever its axis: the check runs
    at a random state."""
    case = case_of("tanh_rnn", numeric)
    assert not np.any(case.state)
    wrong = case._replace(roles={**case.roles, ("W",): Units(0, 1)})
    message = r"params leaf \['W'\]: declared Units\(layer=0, axis=1, groups=1\).*axis 0"
    with pytest.raises(ConfigError, match=message):
        verify(wrong)


def elementwise_fused_gru(params, h, x):
    """A GRU whose recurrence is element-wise (``u ⊙ h``) and whose input kernel fuses
    its three gates, ``x @ W (m, 3n)``."""
    ir, iz, in_ = jnp.split(x @ params["W"] + params["b"], 3)
    ur, uz, un = params["u"]
    r, z = jax.nn.sigmoid(ir + ur * h), jax.nn.sigmoid(iz + uz * h)
    h = (1 - z) * jnp.tanh(in_ + r * un * h) + z * h
    return h, h


def test_a_fused_kernel_declared_feedforward_is_refused_numerically():
    """W's unit axis has 3n entries: a check of the axes of n entries alone passed it."""
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(2, 9)), "b": rng.normal(size=9), "u": rng.normal(size=(3, 3))}
    roles = {("W",): Units(0, 1, 3), ("b",): Units(0, 0, 3), ("u",): Units(0, 1)}
    apply, h, x = behind_cond(elementwise_fused_gru), jnp.zeros(3), jnp.ones(2)
    assert verify_structure(apply, from_roles(roles, {(): 0}), params, h, x).program is None
    wrong = from_roles({**roles, ("W",): Feedforward(0)}, {(): 0})
    message = (
        r"\['W'\]: declared Feedforward\(feeds=0\).*it moves only its own unit of layer 0 "
        r"\(axis 1 indexes 3 groups of units\).*measured numerically"
    )
    with pytest.raises(ConfigError, match=message):
        verify_structure(apply, wrong, params, h, x)


@pytest.mark.parametrize("numeric", [False, True], ids=["inferred", "numeric"])
def test_a_wrong_vector_is_blamed_on_its_own_leaf(numeric):
    """Layer 1's input kernels given the old h1 instead of the new h0: the error names
    the first of them, not a recurrent leaf of the same pre-activation."""
    case = case_of("linen_gru_2", numeric)
    inputs = {p: (pre, "h" if s == "below" else s, lay) for p, (pre, s, lay) in case.inputs.items()}
    message = r"params leaf \['params'\]\['cells_1'\]\['in'\]\['kernel'\] multiplies another vector"
    with pytest.raises(ConfigError, match=message):
        verify(case._replace(inputs=inputs))


@pytest.mark.parametrize("numeric", [False, True], ids=["inferred", "numeric"])
def test_a_kernel_error_names_the_kernel(numeric):
    case = case_of("linen_gru_1", numeric)
    hz = ("params", "cells_0", "hz", "kernel")
    dropped = tuple(rk for rk in case.kernels if rk.kernel != hz)
    message = (
        r"\['hz'\]\['kernel'\] is a recurrent kernel of layer 0.*does not list it"
        if not numeric
        else r"still reads other units of old state leaf \[0\].*missing from recurrent_kernels"
    )
    with pytest.raises(ConfigError, match=message):
        verify(case._replace(kernels=dropped))
    moved = tuple(
        rk._replace(bias=("params", "cells_0", "in", "bias")) if rk.kernel == hz else rk
        for rk in case.kernels
    )
    with pytest.raises(
        ConfigError,
        match=r"recurrent kernel \['params'\]\['cells_0'\]\['hz'\]\['kernel'\] \(bias .*\['in'\]",
    ):
        verify(case._replace(kernels=moved))


def test_a_structure_in_one_layer_numbering_and_an_embedding_every_unit_are_refused():
    case = case_of("linen_lstm_1", False)
    c = next(iter(case.layers))
    with pytest.raises(
        ConfigError,
        match=r"state leaf \[0\]\[0\] is declared layer 1, but it is layer 0, one layer with state leaf \[0\]\[1\]",
    ):
        verify(case._replace(layers={**case.layers, c: 1}, roles=case.roles))
    model = uorojax.linen_model("gru", 3, 2, vocab_size=4, embed_dim=2)
    x = jnp.asarray(1)
    params, state = model.init(jax.random.key(0), x)
    own = model.structure.param_units

    def every_unit(path, leaf):
        return Units(0, None) if path[1] == "embed" else own(path, leaf)

    with pytest.raises(
        ConfigError,
        match=r"\['embed'\]\['embedding'\] is declared Units\(layer=0, axis=None, groups=1\).*is Feedforward\(0\)",
    ):
        verify_structure(
            model.apply, model.structure._replace(param_units=every_unit), params, state, x
        )
    verify_structure(model.apply, model.structure, params, state, x)  # Feedforward(0)


def test_an_inferred_structure_is_checked_against_its_model():
    case = case_of("tanh_rnn", False)
    inferred = infer_structure(case.apply, case.params, case.state, case.x)
    assert verify_structure(case.apply, inferred, case.params, case.state, case.x) is inferred
    other = uorojax.leaky_rnn(3, 4, 2, tau=2.0, vocab_size=4, dtype=jnp.float64)
    with pytest.raises(ConfigError, match="inferred from another model"):
        verify_structure(other.apply, inferred, case.params, case.state, case.x)
    with pytest.raises(ConfigError, match="has tree"):
        verify_structure(case.apply, inferred, {"W": case.params["W"]}, case.state, case.x)


def test_bad_structures_get_one_clear_error():
    case = case_of("tanh_rnn", False)
    with pytest.raises(ConfigError, match="structure must be a uorojax.structure.Structure"):
        verify_structure(case.apply, {"W": 0}, case.params, case.state, case.x)
    bad = case._replace(roles={**case.roles, ("W",): "units"})
    with pytest.raises(ConfigError, match=r"gives params leaf \['W'\] a str"):
        verify(bad)
    missing = {k: v for k, v in case.roles.items() if k != ("V",)}
    with pytest.raises(ConfigError, match=r"no entry for params leaf \['V'\]"):
        verify(case._replace(roles=missing))
    kernel = RecurrentKernel(("W",), ("b",), (), "sideways")
    with pytest.raises(ConfigError, match="layout 'sideways'"):
        verify(case._replace(kernels=(kernel,)))


def test_a_float32_model_passes_at_its_tolerance():
    """The built-in structure of a float32 LSTM, with its leaf_inputs."""
    model = uorojax.linen_model("lstm", 8, 3)
    x = jnp.zeros(5, jnp.float32)
    params, state = model.init(jax.random.key(0), x)
    assert {a.dtype for a in jax.tree.leaves((params, state))} == {jnp.dtype(jnp.float32)}
    checked = verify_structure(model.apply, model.structure, params, state, x)
    assert checked.program is not None


@pytest.mark.parametrize("numeric", [False, True], ids=["inferred", "numeric"])
def test_shapes_alone_and_tracers_are_checked_too(numeric):
    """An estimator's init_state, traced under jax.jit, has only tracers: the check needs
    shapes alone, and runs at its random point."""
    case = case_of("linen_lstm_1", numeric)
    shapes = jax.eval_shape(lambda: (case.params, case.state))
    verify_structure(case.apply, structure(case), *shapes, case.x)
    hf = ("params", "cells_0", "hf", "kernel")  # square: a wrong axis fits its shape
    wrong = case._replace(roles={**case.roles, hf: Units(0, 0)})

    @jax.jit
    def init_state(params, state):
        verify_structure(case.apply, structure(wrong), params, state, case.x)
        return state

    with pytest.raises(ConfigError, match=r"\['hf'\]\['kernel'\]: declared Units\(layer=0, axis=0"):
        init_state(case.params, case.state)
    fine = jax.jit(lambda p, s: verify_structure(case.apply, structure(case), p, s, case.x) and s)
    fine(case.params, case.state)
