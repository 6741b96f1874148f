r"""What structured estimators need to know about a model: its recurrent units.

UORO and RTRL treat a model as a black box. SnAp-1 and KF-RTRL exploit its structure,
and a :class:`Structure` describes it for one stream. A *layer* is a group of state
units that update together; every state leaf is a vector over the units of one layer.

* ``param_units(path, leaf)``: for a parameter leaf (``path`` a tuple of plain keys,
  such as ``("params", "cells_0", "hr", "kernel")``), the layer whose units it moves in
  one step and the leaf's axis that indexes those units (``Units(layer, axis)``): entry
  ``p`` of a dense kernel moves only unit ``p[axis]`` of its layer, in every state leaf
  of that layer (for an LSTM, both ``c`` and ``h``), and possibly any unit of the layers
  above it within the same step. ``None`` for a parameter that moves no state in one
  step (a readout). ``Units(layer, None)`` for a parameter that moves every unit of its
  layer (a learned input embedding): SnAp-1 and KF-RTRL refuse it.
  ``Feedforward(feeds)`` for a parameter between layers (an encoder, a norm, a layer's
  output map or MLP in a deep stack): within one step it may move any unit of layer
  ``feeds`` and of the layers above, and no state of a layer below ``feeds``; and it is
  declared to carry *no* influence from step to step. SnAp-1 accepts it and gives it
  its direct gradient at the step, ``δθ`` (spatial backpropagation within the step, no
  temporal trace), which is the online rule of Zucchet et al. (2023) for such
  parameters; KF-RTRL refuses it. :func:`leaf_units` reads it as None (no influence),
  :func:`declared_units` keeps it.
* ``state_units(path, leaf)``: the layer of a state leaf (a vector over its units).
* ``recurrent_kernels``: every dense map from a layer's own state into the
  pre-activations of its units (:class:`RecurrentKernel`), each with the bias added to
  the same pre-activation. Replacing each kernel by its diagonal, and moving the
  off-diagonal part of its product into the bias as a constant, keeps every value and
  makes the state Jacobian ``A_t = ∂s_t/∂s_{t-1}`` equal to its own unit-diagonal
  blocks (:func:`diagonalised_params`), which SnAp-1 needs. Moving the whole product
  (the kernel replaced by zero) gives the Jacobian of each unit's internal dynamics
  alone, which e-prop, RFLO and ES-D-RTRL need.
* ``layer_inputs`` (KF-RTRL): for a single dense layer ``h = σ(W a)``, a function
  ``(params, state, x) -> list`` giving, for every parameter leaf of the layer, the
  vector it multiplies (``x``, ``h_{t-1}``), a scalar 1 for a bias, and None for the
  other leaves (flattened order).
* ``leaf_inputs`` (ES-D-RTRL): the same for a layer whose leaves feed several
  pre-activations (the gates of a GRU or an LSTM): for every parameter leaf of the
  layer a :class:`DenseInput` ``(preactivation, vector)``, where leaves with the same
  ``preactivation`` name add into one pre-activation ``z`` of the layer's units
  (``z = x W_ir + b_ir + h W_hr``: ``"r"`` for all three). Then ``B_t`` of each leaf is
  ``D_z ⊗ a`` with ``D_z = ∂s_t/∂z`` (:func:`preactivation_derivatives`). Without it,
  ``layer_inputs`` counts as one pre-activation (:func:`dense_inputs`).

:func:`check_structure` verifies a description against dense autodiff Jacobians on one
step (for a ``Feedforward(feeds)`` leaf: that it moves no layer below ``feeds``, that it
moves layer ``feeds``, and that its influence on layer ``feeds`` is not confined to one
unit per entry, which would make it a parameter of that layer's own recurrence whose
trace SnAp-1 carries exactly); ``uorojax.tanh_rnn``, ``uorojax.linen_model``,
``uorojax.from_linen_cells`` and ``uorojax.lru_stack`` provide theirs, and the tests
check each. A model without one gets a
:class:`~uorojax.ConfigError` from :func:`~uorojax.snap1` and
:func:`~uorojax.kf_rtrl` saying what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from uorojax import checks

PyTree = Any
Path = tuple


class Units(NamedTuple):
    """The layer a leaf belongs to and the axis of the leaf that indexes its units
    (None: the leaf moves every unit of the layer)."""

    layer: int
    axis: int | None


class Feedforward(NamedTuple):
    """A parameter that feeds layer ``feeds`` within one step, and carries no influence.

    Within one step it may move any unit of layer ``feeds`` and of the layers above (an
    encoder feeds layer 0; layer l's norm feeds layer l; layer l's output map and MLP
    feed layer l + 1), never a state of a layer below ``feeds``. Estimators that carry an
    influence keep none for it: SnAp-1's gradient for it is its direct gradient ``δθ``
    at the step (exact spatial backpropagation within the step, no temporal trace).

    Example::

      def param_units(path, leaf):  # a dense encoder below one element-wise layer
          if path[1] == "encoder":
              return Feedforward(0)
          return Units(0, 0) if path[1] == "cell" else None
    """

    feeds: int


class RecurrentKernel(NamedTuple):
    """A dense map of a layer's own state into its units' pre-activations.

    Attributes:
      kernel: path of the square matrix in the params (a tuple of keys).
      bias: path of the bias added to the same pre-activation.
      state: path of the state vector the kernel reads.
      layout: ``"in_out"`` for ``z = s @ K`` (flax ``Dense``), ``"out_in"`` for
        ``z = K @ s``.
    """

    kernel: Path
    bias: Path
    state: Path
    layout: str = "in_out"


class DenseInput(NamedTuple):
    """What a params leaf of a layer multiplies, and the pre-activation it feeds.

    Attributes:
      preactivation: a name shared by the leaves that add into the same pre-activation
        of the layer's units (its kernels and its bias).
      vector: the vector the leaf multiplies (its input axis), a scalar 1 for a bias.
    """

    preactivation: str
    vector: Any


class Structure(NamedTuple):
    """The recurrent units of a model (see the module docstring)."""

    param_units: Callable[[Path, Any], Units | Feedforward | None]
    state_units: Callable[[Path, Any], int]
    recurrent_kernels: tuple[RecurrentKernel, ...] = ()
    layer_inputs: Callable[[PyTree, PyTree, Any], list] | None = None
    leaf_inputs: Callable[[PyTree, PyTree, Any], list] | None = None


# ----------------------------------------------------------------------------- paths


def get_path(tree: PyTree, path: Path):
    """The subtree of nested dicts, lists and tuples at ``path``."""
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: PyTree, path: Path, value) -> PyTree:
    """A copy of ``tree`` with ``value`` at ``path`` (containers copied along the path)."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, key: set_path(tree[key], rest, value)}
    items = list(tree)
    items[key] = set_path(items[key], rest, value)
    return type(tree)(items)


def plain_path(path) -> Path:
    """A JAX key path as a tuple of plain dict keys, indices and attribute names."""
    keys = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                keys.append(getattr(entry, attr))
                break
    return tuple(keys)


def declared_units(structure: Structure, params: PyTree) -> list[Units | Feedforward | None]:
    """What ``param_units`` declares for every parameter leaf (``jax.tree.leaves`` order)."""
    return [
        structure.param_units(plain_path(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    ]


def leaf_units(structure: Structure, params: PyTree) -> list[Units | None]:
    """The :class:`Units` of every parameter leaf that carries an influence, in the order
    of ``jax.tree.leaves``: None for a readout and for a :class:`Feedforward` leaf."""
    return [u if isinstance(u, Units) else None for u in declared_units(structure, params)]


def state_layers(structure: Structure, state: PyTree) -> list[int]:
    """The layer of every state leaf, in the order of ``jax.tree.leaves``."""
    return [
        int(structure.state_units(plain_path(path), leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    ]


def along(vector: jax.Array, ndim: int, axis: int) -> jax.Array:
    """An ``(n,)`` vector shaped to broadcast along ``axis`` of an ``ndim``-array."""
    shape = [1] * ndim
    shape[axis] = vector.shape[0]
    return jnp.reshape(vector, shape)


def diagonalised_params(
    structure: Structure, params: PyTree, state: PyTree, *, keep_diagonal: bool = True
) -> PyTree:
    """Params whose one-step state Jacobian at ``state`` is the unit-diagonal blocks of
    the true one, with the same values.

    Each recurrent kernel ``K`` becomes ``diag(K)`` and its off-diagonal product with
    the state, held constant, moves into the paired bias: the pre-activation keeps its
    value and its derivative in the state keeps only ``∂z_i/∂s_i = K_ii``. With
    ``keep_diagonal=False`` the kernel becomes zero and its whole product moves into the
    bias: the state Jacobian is then that of each unit's internal dynamics alone (a
    leak, an LSTM's forget gate), with the recurrent kernels taken out.

    Only the state is held constant in the moved product, so the derivatives in the
    params are those of the true step: a VJP through these params gives the exact
    parameter gradient together with the state cotangent of the reduced Jacobian.

    Example::

      local = diagonalised_params(model.structure, params, h, keep_diagonal=False)
      model.apply(local, h, x)  # the same values as model.apply(params, h, x)
    """
    for rk in structure.recurrent_kernels:
        kernel = get_path(params, rk.kernel)
        s = jax.lax.stop_gradient(get_path(state, rk.state))
        full = s @ kernel if rk.layout == "in_out" else kernel @ s
        if keep_diagonal:
            diagonal = jnp.diagonal(kernel)
            moved, kept = full - s * diagonal, jnp.diag(diagonal)
        else:  # a constant zero kernel: XLA shares the step's forward between its uses
            moved, kept = full, jnp.zeros_like(kernel)
        params = set_path(params, rk.kernel, kept)
        params = set_path(params, rk.bias, get_path(params, rk.bias) + moved)
    return params


def unit_jacobian(
    apply_fn, structure: Structure, params, state, x, *, keep_diagonal: bool = True
) -> list[list]:
    """``blocks[k][k2][i] = ∂s_k[i] / ∂s_k2[i]`` for state leaves k, k2 of one layer
    (None across layers): the unit-diagonal blocks of ``A_t``
    (:func:`unit_jacobian_columns` arranged by block)."""
    layers = state_layers(structure, state)
    columns = unit_jacobian_columns(
        apply_fn, structure, params, state, x, keep_diagonal=keep_diagonal
    )
    q = len(layers)
    return [
        [columns[k2][k] if layers[k] == layers[k2] else None for k2 in range(q)] for k in range(q)
    ]


def unit_jacobian_columns(
    apply_fn, structure: Structure, params, state, x, *, keep_diagonal: bool = True
) -> list[jax.Array]:
    """``columns[k2][k, i] = ∂s_k[i] / ∂s_k2[i]`` for every state leaf k2, and every state
    leaf k of the same layer (rows of another layer hold no block of ``A_t``).

    Within a layer the diagonalised model's state Jacobian (:func:`diagonalised_params`;
    with ``keep_diagonal=False``, the model without its recurrent kernels) is
    unit-diagonal, so a cotangent of ones on state leaf k pulls back to exactly its
    diagonal on each state leaf k2: one VJP per state leaf k, all of them batched. The
    rows of one column come out as one array, stacked over k.
    """
    diag_params = diagonalised_params(structure, params, state, keep_diagonal=keep_diagonal)
    _, pullback = jax.vjp(lambda s: apply_fn(diag_params, s, x)[0], state)
    return jax.tree.leaves(jax.vmap(lambda ones: pullback(ones)[0])(ones_on_each_leaf(state)))


def ones_on_each_leaf(tree: PyTree) -> PyTree:
    """For a tree of q leaves, the q trees with ones on one leaf and zeros elsewhere,
    stacked along a new leading axis: leaf j's row k is ones when ``j == k``."""
    leaves, treedef = jax.tree.flatten(tree)
    q = len(leaves)
    return jax.tree.unflatten(
        treedef,
        [
            jnp.stack([jnp.full_like(a, float(j == k)) for k in range(q)])
            for j, a in enumerate(leaves)
        ],
    )


# ----------------------------------------------------------------------------- checks


def require(structure: Structure | None, who: str, model_hint: str) -> Structure:
    """The structure, or a ConfigError that says what is missing."""
    if structure is None:
        raise checks.ConfigError(
            f"{who} needs the model's recurrent structure (structure=model.structure), and "
            f"none was given. {model_hint} Describe another model with "
            "uorojax.structure.Structure and verify it with uorojax.structure.check_structure."
        )
    if not isinstance(structure, Structure):
        raise checks.ConfigError(
            f"{who}: structure must be a uorojax.structure.Structure, got "
            f"{type(structure).__name__}"
        )
    return structure


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


__all__ = [
    "DenseInput",
    "Feedforward",
    "RecurrentKernel",
    "Structure",
    "Units",
    "check_structure",
    "declared_units",
    "diagonalised_params",
    "unit_jacobian",
    "unit_jacobian_columns",
]
