"""uorojax.infer_structure: a Structure read from the model, whose lookups agree with the
inferred program; tables of roles (from_roles); the repr and describe of a structure; and
what today's estimators do with an inferred structure (SnAp-1 takes one whose gates are
separate leaves, and fused gate blocks or a missing kernel list get a clear error)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import scan_estimator

import uorojax
from uorojax import ConfigError
from uorojax.models.structure import (
    Feedforward,
    Units,
    describe,
    diagonalised_params,
    from_roles,
    infer_structure,
    plain_path,
)


def linen_lstm():
    model = uorojax.linen_model("lstm", 3, 2, num_layers=2, vocab_size=4, embed_dim=2)
    x = jnp.asarray(1)
    params, state = model.init(jax.random.key(0), x)
    return model, params, state, x


def test_infer_structure_is_exported_where_users_look():
    assert uorojax.infer_structure is infer_structure
    assert uorojax.structure.infer_structure is infer_structure
    assert uorojax.verify_structure is uorojax.structure.verify_structure


def test_the_lookups_agree_with_the_inferred_program():
    model, params, state, x = linen_lstm()
    structure = infer_structure(model.apply, params, state, x)
    program = structure.program
    for (path, leaf), role in zip(jax.tree_util.tree_leaves_with_path(params), program.roles):
        assert structure.param_units(plain_path(path), leaf) == role
    for (path, leaf), layer in zip(
        jax.tree_util.tree_leaves_with_path(state), program.state_layers
    ):
        assert structure.state_units(plain_path(path), leaf) == layer
    embedding = ("params", "embed", "embedding")
    assert structure.param_units(embedding) == Feedforward(0)
    assert structure.param_units(("params", "cells_1", "hf", "kernel")) == Units(1, 1, 1)
    assert structure.recurrent_kernels == () and structure.leaf_inputs is None


def test_the_repr_lists_layers_units_and_every_leaf():
    model, params, state, x = linen_lstm()
    text = repr(infer_structure(model.apply, params, state, x))
    assert text.startswith("Structure (inferred)")
    assert "layer 0: 3 units, state [0][0], [0][1]" in text
    assert "layer 1: 3 units, state [1][0], [1][1]" in text
    line = "['params']['embed']['embedding']: Feedforward(feeds=0)  (feeds layer 0 only"
    assert line in text
    assert "['params']['readout']['kernel']: None  (moves no state in one step)" in text
    assert len(text.splitlines()) == 1 + 2 + 1 + len(jax.tree.leaves(params)) + 1


def test_a_hand_written_structure_says_what_it_can_without_params():
    model, params, state, x = linen_lstm()
    text = repr(model.structure)
    assert text.startswith("Structure (hand-written)")
    assert "describe(structure, params, state)" in text
    assert "recurrent kernel ['params']['cells_1']['hi']['kernel'] (in_out) on state [1][1]" in text
    tables = from_roles({("W",): Units(0, 0), ("V",): None}, {(): 0})
    assert "['W']: Units(layer=0, axis=0, groups=1)" in repr(tables)
    lines = describe(model.structure, params, state).splitlines()
    assert lines[:2] == [
        "layer 0: 3 units, state [0][0], [0][1]",
        "layer 1: 3 units, state [1][0], [1][1]",
    ]
    assert "['params']['cells_0']['hf']['kernel']: Units(layer=0, axis=1, groups=1)" in lines[3]


def test_a_table_without_a_leaf_names_it():
    structure = from_roles({("W",): Units(0, 0)}, {(): 0})
    with pytest.raises(
        ConfigError,
        match=r"no entry for params leaf \['V'\]; it was written for the params leaves \['W'\]",
    ):
        structure.param_units(("V",), None)


def test_snap1_on_an_inferred_structure_is_snap1_on_the_hand_written_one():
    """The estimators of today read an inferred structure's program for the diagonal
    state Jacobian (tanh RNN: one recurrent kernel, gates not fused)."""
    model = uorojax.tanh_rnn(3, 2, 2, dtype=jnp.float64)
    params, _ = model.init(jax.random.key(0))
    h0 = 0.3 * jnp.ones(3)
    xs = jax.random.normal(jax.random.key(1), (5, 2))
    ys = jax.random.normal(jax.random.key(2), (5, 2))
    inferred = infer_structure(model.apply, params, h0, xs[0])
    grads = []
    for structure in (model.structure, inferred):
        est = uorojax.snap1(model.apply, uorojax.squared_error, structure=structure)
        grads.append(scan_estimator(est, params, h0, xs, ys, jax.random.key(0))[1])
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_fused_gates_and_an_inferred_kernel_list_get_clear_errors():
    cell = nnx.GRUCell(2, 3, rngs=nnx.Rngs(0))
    model = uorojax.from_nnx(cell, jnp.zeros(3), example_x=jnp.zeros(2))
    params, h0 = model.init(jax.random.key(0), jnp.zeros(2))
    est = uorojax.kf_rtrl(model.apply, uorojax.squared_error, structure=model.structure)
    with pytest.raises(
        ConfigError, match=r"dense_h'\]\['kernel'\]\.value holds 3 fused gate blocks"
    ):
        est.init_state(params, h0)
    with pytest.raises(
        ConfigError, match="lists no recurrent kernels; its program diagonalises them"
    ):
        diagonalised_params(model.structure, params, h0)
