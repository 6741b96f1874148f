r"""Structures as data: inferred from the model (:func:`infer_structure`), written as
tables of roles (:func:`from_roles`), and described in words (:func:`describe`).

:func:`infer_structure` reads the structure from the step's jaxpr
(:func:`uorojax.models.inference.infer`) and returns a :class:`Structure` whose
``param_units`` and ``state_units`` are lookups in the inferred roles and layers, and
whose ``program`` is the inferred :class:`~uorojax.models.inference.Program` (its
``apply(..., recurrent="diagonal"|"none", probes=...)`` and ``dense_inputs`` are what the
structured estimators read instead of ``recurrent_kernels`` and ``leaf_inputs``)::

    structure = uorojax.infer_structure(model.apply, params, state0, x)
    print(structure)   # its layers, units and every params leaf's role
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from uorojax.models.structure.paths import Path, path_name, plain_path
from uorojax.models.structure.types import (
    RecurrentKernel,
    Role,
    RoleTable,
    Structure,
    declared_units,
    describe_role,
    state_layers,
)

PyTree = Any


def from_roles(
    param_roles: Mapping[Path, Role],
    state_layers: Mapping[Path, int],
    recurrent_kernels: tuple[RecurrentKernel, ...] = (),
    *,
    layer_inputs: Callable | None = None,
    leaf_inputs: Callable | None = None,
    program: Any = None,
) -> Structure:
    """A :class:`Structure` written as data: a role per params path, a layer per state path.

    Args:
      param_roles: ``{plain path: Units | Feedforward | None}`` for every params leaf
        (paths as :func:`~uorojax.models.structure.paths.plain_path` gives them).
      state_layers: ``{plain path: layer}`` for every state leaf (``{(): 0}`` for a
        state that is one vector).
      recurrent_kernels, layer_inputs, leaf_inputs: as for :class:`Structure`.
      program: the inferred program, if any.

    Returns:
      The structure; its ``repr`` lists every leaf's role, and a leaf missing from a
      table is a :class:`~uorojax.ConfigError` naming it.

    Example::

      structure = from_roles(
          {("W",): Units(0, 0), ("U",): Units(0, 0), ("b",): Units(0, 0), ("V",): None},
          {(): 0},
          (RecurrentKernel(("W",), ("b",), (), "out_in"),),
      )
    """
    return Structure(
        param_units=RoleTable(param_roles, "params"),
        state_units=RoleTable(state_layers, "state"),
        recurrent_kernels=tuple(recurrent_kernels),
        layer_inputs=layer_inputs,
        leaf_inputs=leaf_inputs,
        program=program,
    )


def _paths(tree: PyTree) -> list[Path]:
    return [plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def infer_structure(apply_fn: Callable, params: PyTree, state: PyTree, x: Any) -> Structure:
    """The structure of ``apply_fn``, read from its jaxpr (no hand-written description).

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)`` for one step of one
        stream; the state's leaves are real vectors.
      params, state, x: pytrees of arrays or ``jax.ShapeDtypeStruct`` (dicts, tuples,
        NamedTuples, ``flax.nnx`` states, Equinox modules).

    Returns:
      A :class:`Structure` whose ``param_units``/``state_units`` look up the inferred
      roles and layers by plain path and whose ``program`` is the inferred
      :class:`~uorojax.models.inference.Program`; it has no ``recurrent_kernels``,
      ``layer_inputs`` or ``leaf_inputs`` (the program's ``apply`` and ``dense_inputs``
      stand for them).

    Raises:
      ConfigError: where the model lacks the structure the structured estimators need,
        saying why (a reset gate before the recurrent kernel, interleaved gates, a state
        mixed outside a dense kernel, a dense use inside control flow, ...).

    Example::

      structure = uorojax.infer_structure(model.apply, params, state0, x)
      structure.param_units(("params", "cells_0", "hr", "kernel"))  # Units(0, 1, 1)
    """
    from uorojax.models.inference import infer

    program = infer(apply_fn, params, state, x)
    return Structure(
        param_units=RoleTable(dict(zip(_paths(params), program.roles)), "params", True),
        state_units=RoleTable(dict(zip(_paths(state), program.state_layers)), "state", True),
        program=program,
    )


def describe(structure: Structure, params: PyTree, state: PyTree) -> str:
    """What a structure says about these params and state, in words: every layer with
    its units and state leaves, then every params leaf's path and role.

    Example::

      print(describe(model.structure, params, state0))
      # layer 0: 8 units, state [0]
      # ['params']['cells_0']['hr']['kernel']: Units(layer=0, axis=1, groups=1)  (moves ...)
    """
    layers = state_layers(structure, state)
    leaves = jax.tree.leaves(state)
    lines = []
    for layer in sorted(set(layers)):
        members = [k for k, lay in enumerate(layers) if lay == layer]
        names = ", ".join(path_name(_paths(state)[k]) for k in members)
        size = jax.numpy.shape(leaves[members[0]])
        lines.append(f"layer {layer}: {size[0] if size else 1} units, state {names}")
    roles = declared_units(structure, params)
    for path, role in zip(_paths(params), roles):
        lines.append(f"{path_name(path)}: {role!r}  ({describe_role(role)})")
    return "\n".join(lines)


__all__ = ["describe", "from_roles", "infer_structure"]
