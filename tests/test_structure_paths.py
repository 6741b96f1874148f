"""One path convention (uorojax.models.structure.paths) on every kind of pytree the
estimators meet: plain_path names a leaf, get_path reads it back and set_path replaces it,
on dicts, lists, tuples, NamedTuples, flax.nnx states and Equinox modules; a recurrent
kernel named by such a path is diagonalised on nnx and Equinox params."""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from uorojax.models.structure import (
    RecurrentKernel,
    Structure,
    diagonalised_params,
    get_path,
    plain_path,
    set_path,
)


class Carry(NamedTuple):
    c: jax.Array
    h: jax.Array


def nnx_params():
    cell = nnx.GRUCell(2, 3, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(cell, nnx.Param, ...)
    return params, lambda p, h, x: nnx.merge(graphdef, p, rest)(h, x)


def eqx_params():
    cell = eqx.nn.GRUCell(2, 3, key=jax.random.key(0))
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    return params, lambda p, h, x: eqx.combine(p, static)(x, h)


TREES = {
    "dict_of_lists": lambda: {"a": [jnp.ones(2), {"b": jnp.zeros(3)}], "c": jnp.ones(1)},
    "tuple": lambda: (jnp.ones(2), (jnp.zeros(3), jnp.ones(4))),
    "namedtuple": lambda: {"carry": Carry(jnp.ones(2), jnp.zeros(2))},
    "nnx_state": lambda: nnx_params()[0],
    "equinox_module": lambda: eqx_params()[0],
}


@pytest.mark.parametrize("kind", sorted(TREES))
def test_every_leaf_is_read_and_replaced_at_its_plain_path(kind):
    tree = TREES[kind]()
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    for i, (path, leaf) in enumerate(flat):
        keys = plain_path(path)
        assert get_path(tree, keys) is leaf
        marked = jnp.full(jnp.shape(leaf), 7.0)
        new = set_path(tree, keys, marked)
        assert jax.tree.structure(new) == treedef
        for j, (other, orig) in enumerate(zip(jax.tree.leaves(new), jax.tree.leaves(tree))):
            np.testing.assert_array_equal(other, marked if j == i else orig)


def test_the_plain_paths_name_fields_and_the_nnx_value():
    assert [
        plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(TREES["namedtuple"]())
    ] == [
        ("carry", "c"),
        ("carry", "h"),
    ]
    names = [plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx_params()[0])]
    assert ("dense_h", "kernel", "value") in names
    names = [plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(eqx_params()[0])]
    assert ("weight_hh",) in names


def test_a_subtree_is_read_and_replaced_whole():
    tree = TREES["dict_of_lists"]()
    assert get_path(tree, ("a", 1)) is tree["a"][1]
    new = set_path(tree, ("a",), [jnp.zeros(2), {"b": jnp.ones(3)}])
    np.testing.assert_array_equal(new["a"][1]["b"], jnp.ones(3))
    assert new["c"] is tree["c"]


@pytest.mark.parametrize(
    "path, message",
    [
        (("a", 2), r"path \('a', 2\): \['a'\] has no key 2; its keys are \[0, 1\]"),
        (("c", 0), r"path \('c', 0\): \['c'\] is a leaf \(ArrayImpl\), it has no key 0"),
        (("z",), r"the root has no key 'z'; its keys are \['a', 'c'\]"),
    ],
)
def test_a_missing_key_is_named_with_the_keys_there(path, message):
    with pytest.raises(KeyError, match=message):
        get_path(TREES["dict_of_lists"](), path)
    with pytest.raises(KeyError, match=message):
        set_path(TREES["dict_of_lists"](), path, 0.0)


def _kernel_structure(kernel, bias):
    return Structure(
        lambda p, leaf: None, lambda p, leaf: 0, (RecurrentKernel(kernel, bias, (), "in_out"),)
    )


@pytest.mark.parametrize("kind", ["nnx", "equinox"])
def test_a_recurrent_kernel_on_nnx_and_equinox_params_is_diagonalised(kind):
    """nnx's ('dense_h', 'kernel', 'value') failed with 'JAX does not support string
    indexing' before; Equinox modules could not be indexed at all. A square block of
    each fused kernel stands in for a recurrent kernel here."""
    if kind == "nnx":
        params, _ = nnx_params()
        kernel, bias = ("dense_h", "kernel", "value"), ("dense_i", "bias", "value")
        square = get_path(params, kernel)[:, :3]
        bias_value = get_path(params, bias)[:3]
    else:
        params, _ = eqx_params()
        kernel, bias = ("weight_hh",), ("bias_n",)
        square = get_path(params, kernel)[:3]
        bias_value = get_path(params, bias)
    params = set_path(set_path(params, kernel, square), bias, bias_value)
    h = jnp.array([0.5, -1.0, 2.0])
    local = diagonalised_params(_kernel_structure(kernel, bias), params, h)
    np.testing.assert_allclose(get_path(local, kernel), jnp.diag(jnp.diagonal(square)))
    moved = h @ square - h * jnp.diagonal(square)
    np.testing.assert_allclose(get_path(local, bias), bias_value + moved, rtol=1e-6)
    assert jax.tree.structure(local) == jax.tree.structure(params)
