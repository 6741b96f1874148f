"""Dense layers in a structure: the vector each params leaf multiplies, the
pre-activation it feeds, and the derivatives ``D_t`` KF-RTRL, OK and ES-D-RTRL read."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.structure.types import DenseInput, PyTree, Structure, Units, along, leaf_units


def check_layer_inputs(
    structure: Structure, params, inputs: list, who: str, field: str = "layer_inputs"
) -> None:
    """``layer_inputs`` (or the vectors of ``leaf_inputs``, named by ``field``) lines up
    with the params: an input for every leaf of the dense layer (a scalar for a bias, a
    vector as long as the kernel's input axis), None for every other leaf. Raises
    ConfigError naming the leaf. Shapes only: works on tracers."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if len(inputs) != len(leaves):
        raise checks.ConfigError(
            f"{who}: {field} gave {len(inputs)} entries for {len(leaves)} params leaves"
        )
    for (path, leaf), a, u in zip(leaves, inputs, leaf_units(structure, params)):
        name = jax.tree_util.keystr(path)
        if (a is None) != (u is None):
            what = "an input for" if a is not None else "no input for"
            role = "which moves no state" if u is None else "a leaf of the layer"
            raise checks.ConfigError(f"{who}: {field} gives {what} params leaf {name}, {role}")
        if a is None:
            continue
        expected = input_shape(leaf, u)
        if jnp.shape(a) != expected:
            raise checks.ConfigError(
                f"{who}: {field} gives params leaf {name} an input of shape "
                f"{list(jnp.shape(a))}; its input axis needs {list(expected)}"
            )


def input_shape(leaf, units: Units) -> tuple:
    """The shape of the vector a dense layer's params leaf multiplies: ``()`` for a
    bias, the kernel's input axis otherwise."""
    return () if jnp.ndim(leaf) == 1 else (jnp.shape(leaf)[1 - units.axis],)


def kronecker_leaf(d: jax.Array, a: jax.Array, ndim: int, axis: int):
    """The entries ``d[unit] * a[input]`` in a leaf's layout (a bias: ``d`` itself)."""
    if ndim == 1:
        return d * a
    other = 1 - axis
    return along(d, 2, axis) * along(a, 2, other)


def input_direction(params, units: list, inputs: list) -> PyTree:
    """The params tangent ``1 ⊗ a_j / Σ_j ‖a_j‖²`` on the leaves j with an input (zero on
    the others). It moves ``Σ_j W_j a_j`` by exactly 1 in every unit: the pre-activation
    those leaves feed, when they feed one. Zero where every input is zero."""
    leaves, treedef = jax.tree.flatten(params)
    norm_sq = sum(jnp.sum(jnp.square(a)) for a in inputs if a is not None)
    norm_sq = jnp.where(norm_sq > 0, norm_sq, 1)
    tangent = []
    for leaf, a, u in zip(leaves, inputs, units):
        if a is None:
            tangent.append(jnp.zeros_like(leaf))
        else:
            n = jnp.shape(leaf)[u.axis]
            tangent.append(kronecker_leaf(jnp.ones(n, leaf.dtype), a, leaf.ndim, u.axis) / norm_sq)
    return jax.tree.unflatten(treedef, tangent)


def layer_derivative(apply_fn, structure: Structure, params, state, x, inputs) -> jax.Array:
    """``D_t = σ'(z_t)`` of a dense layer ``h = σ(W a)`` (as an ``(n,)`` vector), from one
    JVP along the params direction ``1 ⊗ a/‖a‖²`` (:func:`input_direction`), which moves
    every pre-activation by exactly 1."""
    tangent = input_direction(params, leaf_units(structure, params), inputs)
    out = jax.jvp(lambda p: apply_fn(p, state, x)[0], (params,), (tangent,))[1]
    return jax.tree.leaves(out)[0]


def dense_inputs(structure: Structure, params, state, x) -> list:
    """Every params leaf's :class:`DenseInput` (None for a leaf that moves no state):
    ``leaf_inputs``, or ``layer_inputs`` as the one pre-activation ``"layer"``."""
    if structure.leaf_inputs is not None:
        return list(structure.leaf_inputs(params, state, x))
    return [
        None if a is None else DenseInput("layer", a)
        for a in structure.layer_inputs(params, state, x)
    ]


def check_dense_inputs(structure: Structure, params, inputs: list, who: str) -> None:
    """:func:`dense_inputs` lines up with the params (see :func:`check_layer_inputs`),
    and each pre-activation name stays within one layer. Raises ConfigError."""
    for entry in inputs:
        if entry is not None and not isinstance(entry, DenseInput):
            raise checks.ConfigError(
                f"{who}: leaf_inputs must give a uorojax.structure.DenseInput or None for "
                f"every params leaf, got {type(entry).__name__}"
            )
    vectors = [None if d is None else d.vector for d in inputs]
    check_layer_inputs(structure, params, vectors, who, "leaf_inputs")
    layer_of: dict[str, int] = {}
    for d, u in zip(inputs, leaf_units(structure, params)):
        if d is not None and layer_of.setdefault(d.preactivation, u.layer) != u.layer:
            raise checks.ConfigError(
                f"{who}: leaf_inputs names pre-activation {d.preactivation!r} in layers "
                f"{layer_of[d.preactivation]} and {u.layer}; a pre-activation is one layer's"
            )


def preactivation_derivatives(apply_fn, structure: Structure, params, state, x, inputs):
    """``D_z = ∂s_t/∂z`` for every pre-activation ``z`` that :func:`dense_inputs` names,
    from one JVP each along :func:`input_direction` restricted to its leaves (exact
    whenever one of them, a bias for one, has a non-zero input).

    Returns:
      ``(names, derivatives)``: the pre-activation names in the order they first occur,
      and, for every state leaf k, a ``(len(names), n_k)`` array (row g: ``∂s_k/∂z_g``
      per unit).
    """
    units = leaf_units(structure, params)
    names = list(dict.fromkeys(d.preactivation for d in inputs if d is not None))
    tangents = [
        input_direction(
            params,
            units,
            [None if d is None or d.preactivation != name else d.vector for d in inputs],
        )
        for name in names
    ]
    # Only the leaves with an input move: the others are held as constants, so the JVP
    # forms no tangent of the products they take part in.
    moving = [j for j, d in enumerate(inputs) if d is not None]
    leaves, treedef = jax.tree.flatten(params)
    stacked = [jnp.stack([jax.tree.leaves(t)[j] for t in tangents]) for j in moving]

    def new_state(*moving_leaves):
        full = list(leaves)
        for j, leaf in zip(moving, moving_leaves):
            full[j] = leaf
        return apply_fn(jax.tree.unflatten(treedef, full), state, x)[0]

    def push(*tangent):
        return jax.jvp(new_state, [leaves[j] for j in moving], list(tangent))[1]

    return names, jax.tree.leaves(jax.vmap(push)(*stacked))
