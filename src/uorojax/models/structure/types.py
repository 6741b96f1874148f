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
