"""Checks of a structure against the model: shapes and paths at construction, and the
one-step Jacobians (:func:`check_structure`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from uorojax import checks
from uorojax.models.structure.dense import (
    check_dense_inputs,
    check_layer_inputs,
    dense_inputs,
    kronecker_leaf,
    layer_derivative,
    preactivation_derivatives,
)
from uorojax.models.structure.jacobian import diagonalised_params, unit_jacobian
from uorojax.models.structure.types import (
    Feedforward,
    Structure,
    declared_units,
    get_path,
    leaf_units,
    state_layers,
)

PyTree = Any


def check_single_stream(
    structure: Structure, params: PyTree, state: PyTree, who: str, *, feedforward: bool = False
) -> None:
    """Leaves agree with the structure: real vector states, unit axes within range, no
    parameter that moves every unit, and :class:`Feedforward` leaves only where the
    caller takes them (``feedforward=True``: SnAp-1 does, KF-RTRL does not), each feeding
    a layer that has state. Raises ConfigError naming the leaf."""
    checks.check_real("state", state, who)
    try:
        declared = declared_units(structure, params)
        units = leaf_units(structure, params)
        layers = state_layers(structure, state)
    except (ValueError, TypeError) as err:
        raise checks.ConfigError(
            f"{who}: the structure does not match the params or state tree ({err})"
        ) from err
    if not any(u is not None for u in units):
        raise checks.ConfigError(
            f"{who}: the structure maps none of these params to a recurrent layer: it "
            "describes another params tree (a flat vector from uorojax.ravel_params has no "
            "structure; build the estimator on the model's own params)"
        )
    for rk in structure.recurrent_kernels:
        for tree, path, what in ((params, rk.kernel, "params"), (params, rk.bias, "params"),
                                 (state, rk.state, "state")):  # fmt: skip
            try:
                get_path(tree, path)
            except (KeyError, IndexError, TypeError) as err:
                raise checks.ConfigError(
                    f"{who}: the structure's recurrent kernel names {what} path {path}, "
                    f"which these {what} do not have ({type(err).__name__}: {err})"
                ) from err
    sizes: dict[int, int] = {}
    for (path, leaf), layer in zip(jax.tree_util.tree_leaves_with_path(state), layers):
        if jnp.ndim(leaf) != 1:
            raise checks.ConfigError(
                f"{who} treats one stream: state leaf {jax.tree_util.keystr(path)} has shape "
                f"{list(jnp.shape(leaf))}, not a vector of units. For a batch, use "
                f"uorojax.per_stream({who}(...)) (a shared system would need an entry per "
                "stream for every parameter anyway)."
            )
        sizes.setdefault(layer, jnp.shape(leaf)[0])
    for (path, _), d in zip(jax.tree_util.tree_leaves_with_path(params), declared):
        if not isinstance(d, Feedforward):
            continue
        name = jax.tree_util.keystr(path)
        if not feedforward:
            raise checks.ConfigError(
                f"{who}: params leaf {name} is declared Feedforward({d.feeds}) (no influence "
                f"carried from step to step); {who} has no rule for such a parameter. "
                "SnAp-1 takes it (its direct gradient at each step)."
            )
        if d.feeds not in sizes:
            raise checks.ConfigError(
                f"{who}: params leaf {name} is declared to feed layer {d.feeds}, which has no state"
            )
    for (path, leaf), u in zip(jax.tree_util.tree_leaves_with_path(params), units):
        if u is None:
            continue
        name = jax.tree_util.keystr(path)
        if u.axis is None:
            raise checks.ConfigError(
                f"{who}: params leaf {name} moves every unit of layer {u.layer} in one step "
                "(a learned input embedding, for example); its influence has no sparse "
                "form. Use one-hot input (embed_dim=None) or another estimator."
            )
        if u.layer not in sizes:
            raise checks.ConfigError(
                f"{who}: params leaf {name} names layer {u.layer}, which has no state"
            )
        if jnp.shape(leaf)[u.axis] != sizes[u.layer]:
            raise checks.ConfigError(
                f"{who}: params leaf {name} has {jnp.shape(leaf)[u.axis]} entries on its unit "
                f"axis {u.axis}, but layer {u.layer} has {sizes[u.layer]} units"
            )


def check_structure(
    apply_fn: Callable,
    structure: Structure,
    params: PyTree,
    state: PyTree,
    x: Any,
    *,
    rtol: float = 1e-6,
) -> None:
    """Verifies a :class:`Structure` against dense Jacobians of one step (small models).

    Checks that every parameter moves, in one step, only its declared unit of its own
    layer (and nothing in earlier layers; readouts nothing at all); that a
    ``Feedforward(feeds)`` parameter moves no layer below ``feeds``, does move layer
    ``feeds``, and moves it otherwise than one unit per entry along an axis (that would
    be a parameter of the layer's own recurrence, to be declared ``Units``; checked for
    layers of more than one unit); that :func:`diagonalised_params` keeps every value
    and gives exactly the unit-diagonal blocks of ``A_t``; and, when ``layer_inputs``
    (``leaf_inputs``) is given, that ``B_t`` of the layer (of each leaf) is the Kronecker
    product ``D_t ⊗ a_t`` KF-RTRL (ES-D-RTRL) assumes.

    Raises:
      ModelError: naming the first leaf that disagrees.

    Example::

      uorojax.structure.check_structure(model.apply, model.structure, params, h0, x)
    """
    check_single_stream(structure, params, state, "check_structure", feedforward=True)
    units = leaf_units(structure, params)
    declared = declared_units(structure, params)
    layers = state_layers(structure, state)
    p_leaves = jax.tree_util.tree_leaves_with_path(params)
    s_leaves = jax.tree.leaves(state)
    flat_p, unravel_p = ravel_pytree(params)
    flat_s, unravel_s = ravel_pytree(state)

    def new_state(p_flat, s_flat):
        return ravel_pytree(apply_fn(unravel_p(p_flat), unravel_s(s_flat), x)[0])[0]

    b_dense = np.asarray(jax.jacrev(new_state)(flat_p, flat_s))
    a_dense = np.asarray(jax.jacfwd(new_state, argnums=1)(flat_p, flat_s))
    scale = max(np.abs(b_dense).max(), np.abs(a_dense).max(), 1.0)
    tol = rtol * scale
    s_offsets = np.cumsum([0] + [a.size for a in s_leaves])
    p_offsets = np.cumsum([0] + [leaf.size for _, leaf in p_leaves])

    for j, ((path, leaf), u) in enumerate(zip(p_leaves, units)):
        name = jax.tree_util.keystr(path)
        blocks_of = [
            b_dense[s_offsets[k] : s_offsets[k + 1], p_offsets[j] : p_offsets[j + 1]].reshape(
                s_leaf.shape[0], *np.shape(leaf)
            )
            for k, s_leaf in enumerate(s_leaves)
        ]
        if isinstance(declared[j], Feedforward):
            check_feedforward_leaf(name, np.shape(leaf), declared[j].feeds, blocks_of, layers, tol)
            continue
        for k, s_leaf in enumerate(s_leaves):
            block = blocks_of[k]
            if u is None or layers[k] < u.layer:
                allowed = np.zeros_like(block, bool)
            elif layers[k] > u.layer:
                continue
            else:
                unit_index = np.arange(s_leaf.shape[0])
                entry_unit = np.indices(np.shape(leaf))[u.axis]
                allowed = unit_index.reshape(-1, *([1] * leaf.ndim)) == entry_unit[None]
            bad = np.abs(np.where(allowed, 0.0, block)) > tol
            if bad.any():
                where = (
                    "move no state"
                    if u is None
                    else f"move only its unit (axis {u.axis}) of layer {u.layer}"
                )
                raise checks.ModelError(
                    f"structure: params leaf {name} is declared to {where}, but in one step "
                    f"it moves state leaf {k} (layer {layers[k]}) outside that (|dB| up to "
                    f"{np.abs(block[bad]).max():.3g})"
                )

    diag_params = diagonalised_params(structure, params, state)
    true_out = apply_fn(params, state, x)
    diag_out = apply_fn(diag_params, state, x)
    for a, b in zip(jax.tree.leaves(true_out), jax.tree.leaves(diag_out)):
        if not np.allclose(a, b, rtol=rtol, atol=tol):
            raise checks.ModelError(
                "structure: the diagonalised recurrent kernels change the step's values; "
                "each RecurrentKernel's bias must be added to the same pre-activation"
            )
    blocks = unit_jacobian(apply_fn, structure, params, state, x)
    for k in range(len(s_leaves)):
        for k2 in range(len(s_leaves)):
            true_block = a_dense[s_offsets[k] : s_offsets[k + 1], s_offsets[k2] : s_offsets[k2 + 1]]
            if blocks[k][k2] is None:
                continue
            if not np.allclose(np.diagonal(true_block), blocks[k][k2], rtol=rtol, atol=tol):
                raise checks.ModelError(
                    f"structure: the unit-diagonal block of A_t between state leaves {k2} "
                    f"and {k} is wrong: a recurrent kernel is missing from "
                    "recurrent_kernels, or its layout or bias is wrong"
                )

    def check_kronecker(inputs, derivative, field):
        """``B_t`` of every leaf with an input is ``D ⊗ a`` on each state leaf of its layer."""
        for j, ((path, leaf), a_j) in enumerate(zip(p_leaves, inputs)):
            if a_j is None:
                continue
            for k, s_leaf in enumerate(s_leaves):
                if layers[k] != units[j].layer:
                    continue
                rows = slice(s_offsets[k], s_offsets[k + 1])
                block = b_dense[rows, p_offsets[j] : p_offsets[j + 1]]
                block = block.reshape(s_leaf.shape[0], *np.shape(leaf))
                d = np.asarray(derivative(j, k))
                kron = kronecker_leaf(d, np.asarray(a_j), np.ndim(leaf), units[j].axis)
                idx = np.arange(d.shape[0]).reshape(-1, *([1] * leaf.ndim))
                unit_of = np.indices(np.shape(leaf))[units[j].axis]
                expected = np.where(idx == unit_of[None], kron[None], 0.0)
                if not np.allclose(block, expected, rtol=rtol, atol=tol):
                    raise checks.ModelError(
                        f"structure: B_t of params leaf {jax.tree_util.keystr(path)} is not "
                        f"D_t ⊗ a_t with the layer input {field} gives"
                    )

    if structure.layer_inputs is not None:
        inputs = structure.layer_inputs(params, state, x)
        check_layer_inputs(structure, params, inputs, "check_structure")
        d = layer_derivative(apply_fn, structure, params, state, x, inputs)
        check_kronecker(inputs, lambda j, k: d, "layer_inputs")
    if structure.leaf_inputs is not None:
        dense = dense_inputs(structure, params, state, x)
        check_dense_inputs(structure, params, dense, "check_structure")
        names, derivatives = preactivation_derivatives(apply_fn, structure, params, state, x, dense)
        vectors = [None if d is None else d.vector for d in dense]
        group = [None if d is None else names.index(d.preactivation) for d in dense]
        check_kronecker(vectors, lambda j, k: derivatives[k][group[j]], "leaf_inputs")


def check_feedforward_leaf(
    name: str, shape: tuple, feeds: int, blocks: list, layers: list[int], tol: float
) -> None:
    """A ``Feedforward(feeds)`` leaf's one-step influence ``blocks[k]`` on state leaf k
    (``(units of k, *shape)``): none on a layer below ``feeds``, some on layer ``feeds``,
    and not confined to one unit per entry along an axis. Raises ModelError naming it."""
    on_feeds = []
    for k, block in enumerate(blocks):
        if layers[k] < feeds and (np.abs(block) > tol).any():
            raise checks.ModelError(
                f"structure: params leaf {name} is declared Feedforward({feeds}), but in one "
                f"step it moves state leaf {k} of layer {layers[k]}, below the layer it "
                f"feeds (|dB| up to {np.abs(block).max():.3g})"
            )
        if layers[k] == feeds:
            on_feeds.append(block)
    if not any((np.abs(b) > tol).any() for b in on_feeds):
        raise checks.ModelError(
            f"structure: params leaf {name} is declared Feedforward({feeds}), but it moves "
            f"no state of layer {feeds} in one step: declare the lowest layer it moves, or "
            "None for a readout"
        )
    n = on_feeds[0].shape[0]
    if n < 2:
        return
    for axis, size in enumerate(shape):
        if size != n:
            continue
        unit_of = np.indices(shape)[axis][None]
        off_unit = np.arange(n).reshape(-1, *([1] * len(shape))) != unit_of
        if all(not (np.abs(np.where(off_unit, b, 0.0)) > tol).any() for b in on_feeds):
            raise checks.ModelError(
                f"structure: params leaf {name} is declared Feedforward({feeds}), but each "
                f"of its entries moves only its own unit (axis {axis}) of layer {feeds}: a "
                f"parameter of that layer's own recurrence, whose trace SnAp-1 carries "
                f"exactly; declare it Units({feeds}, {axis})"
            )
