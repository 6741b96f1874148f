r"""What structured estimators need to know about a model: its recurrent units.

UORO and RTRL treat a model as a black box. SnAp-1 and KF-RTRL exploit its structure,
and a :class:`Structure` describes it for one stream. A *layer* is a group of state
units that update together; every state leaf is a vector over the units of one layer.

* ``param_units(path, leaf)``: for a parameter leaf (``path`` a tuple of plain keys,
  :func:`~uorojax.models.structure.paths.plain_path`, such as
  ``("params", "cells_0", "hr", "kernel")``), the layer whose units it moves in one step
  and the leaf's axis that indexes those units (``Units(layer, axis, groups)``): entry
  ``p`` of a dense kernel moves only unit ``p[axis] mod n`` of its layer of ``n`` units,
  in every state leaf of that layer (for an LSTM, both ``c`` and ``h``), and possibly any
  unit of the layers above it within the same step; the axis has ``groups · n`` entries,
  block-major (``p[axis] = g·n + u``: fused gates, as in a GRU kernel ``(m, 3n)``). ``None`` for a parameter that moves no state in one
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

``program``: the :class:`~uorojax.models.inference.Program` a structure was inferred
from (:func:`~uorojax.models.structure.infer_structure`), None for one written by hand.
:func:`~uorojax.models.structure.verify_structure` checks a hand-written structure
against the inferred one, or numerically where inference refuses the model;
``uorojax.tanh_rnn``, ``uorojax.linen_model``, ``uorojax.from_linen_cells`` and
``uorojax.lru_stack`` provide theirs. A model without one gets a
:class:`~uorojax.ConfigError` from :func:`~uorojax.snap1` and :func:`~uorojax.kf_rtrl`
saying what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.structure.paths import Path, get_path, path_name, plain_path, set_path

PyTree = Any


class Units(NamedTuple):
    """Entry ``p`` of the leaf moves only unit ``p[axis] mod n`` of layer ``layer`` (of
    ``n`` units) in one step; ``axis`` has ``groups · n`` entries, block-major
    (``p[axis] = g·n + u``). ``axis=None``: the leaf moves every unit of the layer (no
    sparse form; SnAp-1 and KF-RTRL refuse it).

    Example::

      Units(0, 1)      # a flax Dense kernel (inputs, n) of layer 0: column u, unit u
      Units(0, 1, 3)   # a GRU's fused kernel (inputs, 3n): column g·n + u, unit u
    """

    layer: int
    axis: int | None
    groups: int = 1


class Feedforward(NamedTuple):
    """A parameter that feeds layer ``feeds`` within one step, and carries no influence.

    Within one step it may move any unit of layer ``feeds`` and of the layers above (an
    encoder or a learned embedding feeds layer 0; layer l's norm feeds layer l; layer
    l's output map and MLP feed layer l + 1), never a state of a layer below ``feeds``.
    Estimators that carry an influence keep none for it: SnAp-1's gradient for it is its
    direct gradient ``δθ`` at the step (exact spatial backpropagation within the step,
    no temporal trace).

    Example::

      def param_units(path, leaf):  # a dense encoder below one element-wise layer
          if path[1] == "encoder":
              return Feedforward(0)
          return Units(0, 0) if path[1] == "cell" else None
    """

    feeds: int


Role = Units | Feedforward | None


def describe_role(role: Role) -> str:
    """What a role says the leaf moves, in words.

    Example::

      describe_role(Units(0, 1, 3))
      # 'moves only its own unit of layer 0 (axis 1 indexes 3 groups of units)'
    """
    if role is None:
        return "moves no state in one step"
    if isinstance(role, Feedforward):
        return f"feeds layer {role.feeds} only through the input of its dense maps"
    if role.axis is None:
        return f"moves every unit of layer {role.layer}"
    what = f"{role.groups} groups of units" if role.groups > 1 else "units"
    return f"moves only its own unit of layer {role.layer} (axis {role.axis} indexes {what})"


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


class RoleTable:
    """A lookup ``(path, leaf) -> value`` from a table keyed by plain paths: the
    ``param_units`` or ``state_units`` of a structure written as data or inferred.

    ``inferred`` says whether the table was read from the model (by
    :func:`~uorojax.models.structure.infer_structure`) or written by hand.

    Example::

      param_units = RoleTable({("W",): Units(0, 0), ("V",): None}, "params")
      param_units(("W",), W)  # Units(layer=0, axis=0, groups=1)
    """

    def __init__(self, table: dict, what: str, inferred: bool = False):
        self.table = {tuple(k): v for k, v in table.items()}
        self.what = what
        self.inferred = inferred

    def __call__(self, path: Path, leaf: Any = None):
        try:
            return self.table[tuple(path)]
        except KeyError:
            known = ", ".join(path_name(k) for k in list(self.table)[:6])
            raise checks.ConfigError(
                f"the structure has no entry for {self.what} leaf {path_name(path)}; it was "
                f"written for the {self.what} leaves {known}"
                f"{', ...' if len(self.table) > 6 else ''}"
            ) from None

    def __repr__(self) -> str:
        return f"RoleTable({len(self.table)} {self.what} leaves)"


class Structure(NamedTuple):
    """The recurrent units of a model (see the module docstring).

    ``repr`` lists what the structure says without params: its layers, units and each
    leaf's role for a structure written as tables (:func:`from_roles`) or inferred, the
    fields otherwise (:func:`~uorojax.models.structure.describe` then lists the roles
    for given params and state).
    """

    param_units: Callable[[Path, Any], Role]
    state_units: Callable[[Path, Any], int]
    recurrent_kernels: tuple[RecurrentKernel, ...] = ()
    layer_inputs: Callable[[PyTree, PyTree, Any], list] | None = None
    leaf_inputs: Callable[[PyTree, PyTree, Any], list] | None = None
    program: Any = None

    def __repr__(self) -> str:
        if getattr(self.param_units, "inferred", False):
            kind = "inferred"
        elif self.program is not None:
            kind = "hand-written, verified against the inferred program"
        else:
            kind = "hand-written"
        lines = [f"Structure ({kind})"]
        if isinstance(self.state_units, RoleTable):
            layers: dict[int, list] = {}
            for path, layer in self.state_units.table.items():
                layers.setdefault(layer, []).append(path_name(path))
            for layer in sorted(layers):
                size = "" if self.program is None else f"{self.program.sizes[layer]} units, "
                lines.append(f"  layer {layer}: {size}state {', '.join(layers[layer])}")
        else:
            lines.append(f"  state_units: {_callable_name(self.state_units)}")
        if isinstance(self.param_units, RoleTable):
            lines.append("  params:")
            for path, role in self.param_units.table.items():
                lines.append(f"    {path_name(path)}: {role!r}  ({describe_role(role)})")
        else:
            lines.append(
                f"  param_units: {_callable_name(self.param_units)} (roles: "
                "uorojax.models.structure.describe(structure, params, state))"
            )
        for rk in self.recurrent_kernels:
            lines.append(
                f"  recurrent kernel {path_name(rk.kernel)} ({rk.layout}) on state "
                f"{path_name(rk.state)}, bias {path_name(rk.bias)}"
            )
        for field in ("layer_inputs", "leaf_inputs"):
            if getattr(self, field) is not None:
                lines.append(f"  {field}: {_callable_name(getattr(self, field))}")
        if self.program is not None:
            kinds = [u.kind for u in self.program.dense_uses]
            counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("recurrent", "input", "output"))
            lines.append(f"  dense uses: {counts}")
        return "\n".join(lines)


def _callable_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def declared_units(structure: Structure, params: PyTree) -> list[Role]:
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
            f"none was given. {model_hint} Infer it with uorojax.infer_structure(apply_fn, "
            "params, state, x), or describe the model with uorojax.structure.Structure and "
            "verify it with uorojax.structure.verify_structure."
        )
    if not isinstance(structure, Structure):
        raise checks.ConfigError(
            f"{who}: structure must be a uorojax.structure.Structure, got "
            f"{type(structure).__name__}"
        )
    return structure


__all__ = [
    "DenseInput",
    "Feedforward",
    "Path",
    "RecurrentKernel",
    "Role",
    "RoleTable",
    "Structure",
    "Units",
    "along",
    "declared_units",
    "describe_role",
    "get_path",
    "leaf_units",
    "plain_path",
    "require",
    "set_path",
    "state_layers",
]
