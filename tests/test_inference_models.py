"""uorojax.models.inference on the built-in models: the inferred roles and layers are the
hand-written structures' (a learned embedding is Feedforward(0) in both)."""

import jax
import jax.numpy as jnp
import pytest

import uorojax
from uorojax.models.inference import Feedforward, compare_roles, infer
from uorojax.models.structure import declared_units, state_layers

CELLS = ("simple", "gru", "mgu", "lstm", "optimized_lstm", "elementwise_mgu")


def check(model, params, state, x, differ=()):
    program = infer(model.apply, params, state, x)
    lines = compare_roles(declared_units(model.structure, params), program)
    assert [line.split(":")[0] for line in lines] == [f"params leaf {name}" for name in differ]
    assert list(program.state_layers) == state_layers(model.structure, state)
    return program


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_linen_stacks(cell, layers):
    model = uorojax.linen_model(cell, 3, 2, num_layers=layers, vocab_size=5, embed_dim=4)
    x = jnp.zeros((), jnp.int32)
    params, state = model.init(jax.random.key(0), x)
    embedding = "['params']['embed']['embedding']"
    program = check(model, params, state, x)
    assert program.roles[program.param_paths.index(embedding)] == Feedforward(0)
    kinds = {u.kind for u in program.dense_uses}
    assert kinds == (
        {"input", "output"} if cell == "elementwise_mgu" else {"recurrent", "input", "output"}
    )


@pytest.mark.parametrize("make", [uorojax.tanh_rnn, lambda *a: uorojax.leaky_rnn(*a, tau=3.0)])
def test_dense_rnns(make):
    model = make(4, 3, 2)
    params, h0 = model.init(jax.random.key(0))
    check(model, params, h0, jnp.zeros(3))


def test_lru_stack():
    model = uorojax.lru_stack(3, 4, 3, 2, vocab_size=5)
    x = jnp.zeros((), jnp.int32)
    params, state = model.init(jax.random.key(0), x)
    program = check(model, params, state, x)
    assert program.layers == ((0, 1), (2, 3), (4, 5))
