"""uorojax.models.inference on cells written in plain JAX, flax.nnx and Equinox: the roles a
reader of the code would write down, the layers, the dense uses, and the named errors
for the cells the structured estimators cannot use."""

import jax
import jax.numpy as jnp
import pytest
from inference_models import (
    VALID,
    cho_gru,
    concat_lstm,
    interleaved_gru,
    k_h_rnn,
    scalar_gain_rnn,
    state_norm_cell,
)

from uorojax import ConfigError
from uorojax.models.inference import Feedforward, Units, compare_roles, infer


@pytest.mark.parametrize("name", sorted(VALID))
def test_roles_are_those_of_the_code(name):
    case = VALID[name]()
    program = infer(case.apply, case.params, case.state, case.x)
    assert list(program.roles) == case.roles
    if case.layers is not None:
        assert program.layers == case.layers


def test_inference_reads_only_shapes():
    case = VALID["nnx_gru"]()
    shapes = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (case.params, case.state, case.x)
    )
    program = infer(case.apply, *shapes)
    assert list(program.roles) == case.roles


def test_a_concatenated_input_is_split_by_rows():
    case = concat_lstm()
    program = infer(case.apply, case.params, case.state, case.x)
    (use,) = program.dense_uses
    assert use.kind == "recurrent" and use.layer == 0
    assert use.leaves == ((0, ((0, 5), (0, 12))),)  # all of K
    assert dict(use.rows) == {("x", 0): ((0, 2),), ("state", 1): ((2, 5),)}
    (vector,) = program.dense_inputs(case.params, case.state, case.x)
    assert jnp.array_equal(vector, jnp.concatenate([case.x, case.state[1]]))


def test_a_params_side_concatenation_is_one_dense_use():
    """flax's OptimizedLSTMCell concatenates its four gate kernels at call time."""
    import uorojax

    model = uorojax.linen_model("optimized_lstm", 3, 2)
    params, state = model.init(jax.random.key(0), jnp.zeros(2))
    program = infer(model.apply, params, state, jnp.zeros(2))
    kinds = [(u.kind, len(u.leaves)) for u in program.dense_uses]
    assert kinds == [("recurrent", 4), ("input", 4), ("output", 1)]
    blocks = [b for _, b in program.dense_uses[0].leaves]
    assert sorted(b[1] for b in blocks) == [(0, 3), (3, 6), (6, 9), (9, 12)]


def test_the_reset_gate_before_the_recurrent_kernel_is_named():
    case = cho_gru()
    message = r"params leaf \['Ur'\] moves every unit of layer 0 in one step through the recurrent kernel \['Uh'\] @ v.*use uoro or rtrl, or write the cell as r \* \(Uh h \+ b\)"
    with pytest.raises(ConfigError, match=message):
        infer(case.apply, case.params, case.state, case.x)


def test_an_interleaved_gate_layout_is_named():
    case = interleaved_gru()
    with pytest.raises(
        ConfigError, match=r"params leaf \['Wh'\].*interleaved gate layouts are not supported"
    ):
        infer(case.apply, case.params, case.state, case.x)


def test_a_scalar_gain_on_the_state_is_named():
    case = scalar_gain_rnn()
    with pytest.raises(
        ConfigError,
        match=r"params leaf \['g'\] moves several units of layer 0 per entry.*scalar gain",
    ):
        infer(case.apply, case.params, case.state, case.x)


def test_a_norm_of_the_state_is_named():
    case = state_norm_cell()
    with pytest.raises(
        ConfigError,
        match=r"layer 0's state Jacobian is still not unit-diagonal.*through reduce_sum",
    ):
        infer(case.apply, case.params, case.state, case.x)


def test_a_parameter_read_at_another_units_index_is_refused():
    """Entry p of w moves unit p - 1: not the Units layout (entry g·n + u moves unit u)."""

    def apply(p, h, x):
        h = jnp.tanh(p["w"][1:4] * h + x)
        return h, h

    with pytest.raises(ConfigError, match=r"params leaf \['w'\] moves several units"):
        infer(apply, {"w": jnp.ones(6)}, jnp.zeros(3), jnp.zeros(3))


def test_a_dense_use_inside_control_flow_is_refused_only_if_it_reaches_the_state():
    def apply(p, h, x):
        z = jax.lax.cond(x[0] > 0, lambda v: p["K"] @ v, lambda v: v, h)
        out = jax.lax.cond(x[0] > 0, lambda v: p["V"] @ v, lambda v: v, h)
        return jnp.tanh(z + x), out

    params = {"K": jnp.eye(3), "V": jnp.eye(3)}
    with pytest.raises(ConfigError, match=r"params \['K'\] inside a lax.cond"):
        infer(apply, params, jnp.zeros(3), jnp.zeros(3))
    readout_only = lambda p, h, x: (jnp.tanh(h + x), apply(p, h, x)[1])  # noqa: E731
    program = infer(readout_only, params, jnp.zeros(3), jnp.zeros(3))
    assert program.roles == (None, None)


def test_a_state_leaf_that_is_not_a_vector_is_named():
    def apply(p, s, x):
        return {"m": jnp.tanh(p["W"] @ s["m"]), "v": s["v"]}, x

    params, state = {"W": jnp.eye(2)}, {"m": jnp.zeros((2, 2)), "v": jnp.zeros(2)}
    with pytest.raises(ConfigError, match=r"state leaf \['m'\] is not"):
        infer(apply, params, state, jnp.zeros(2))


def test_leaves_of_one_layer_must_have_one_size():
    def apply(p, s, x):
        a, b = s
        return (a * p["w"] + jnp.sum(b), b * jnp.sum(a)), x

    state = (jnp.zeros(2), jnp.zeros(3))
    with pytest.raises(ConfigError, match="same number of units"):
        infer(apply, {"w": jnp.ones(2)}, state, jnp.zeros(1))


def test_a_wrong_declared_structure_is_named():
    case = k_h_rnn()
    program = infer(case.apply, case.params, case.state, case.x)
    declared = [Units(0, 1), Units(0, 0), None, Feedforward(0)]
    lines = compare_roles(declared, program)
    assert len(lines) == 2
    assert lines[0].startswith("params leaf ['K']: declared Units(layer=0, axis=1")
    assert "moves only its own unit of layer 0 (axis 0" in lines[0]
    assert lines[1].startswith("params leaf ['b']") and "Units(layer=0, axis=0" in lines[1]
    assert compare_roles(case.roles, program) == []


def test_the_program_reads_well():
    case = concat_lstm()
    text = repr(infer(case.apply, case.params, case.state, case.x))
    assert "layer 0: 3 units, state[0], state[1]" in text
    assert "['K']: Units(layer=0, axis=1, groups=4)" in text
    assert "1 recurrent, 0 input, 0 output" in text
