r"""The structure a structured estimator runs on: inferred, or written by hand and checked.

Every structured estimator (SnAp-1, e-prop, RFLO, ES-D-RTRL, KF-RTRL, OK) takes
``structure=None`` (the default: the structure is inferred from the model,
:func:`~uorojax.models.structure.infer_structure`) or a :class:`Structure` written by
hand, and an example input ``example_x`` of one step. A :class:`StructureSource`
resolves it once per params and state shapes:

* ``structure=None``: inferred from ``(params, state0, example_x)`` at ``init_state``;
  an estimator without ``example_x`` raises one :class:`~uorojax.ConfigError` naming
  :func:`~uorojax.infer_structure` there (``init_state`` has no input to infer from).
* a hand-written structure: checked before any gradient (:func:`checked`): at
  ``init_state`` when the estimator has ``example_x``, otherwise when its first step
  is traced (the step's input), a mismatch a ConfigError naming the leaf and what it
  actually moves.

The resolved structure carries the inferred
:class:`~uorojax.models.inference.Program` wherever inference succeeds, and the
estimators then diagonalise and probe the model through it
(``program.apply(..., recurrent="diagonal" | "none", probes=...)``), never through the
hand-written ``recurrent_kernels`` or ``leaf_inputs``; where inference refuses the
model, the hand-written fields are verified numerically
(:func:`~uorojax.models.structure.verify_structure`) and used.

Example::

    source = StructureSource("snap1", model.apply, None, example_x=x0)
    structure = source.at_init(params, state0)   # inferred
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.structure.compare import compare_kernels, compare_layers, compare_leaf_roles
from uorojax.models.structure.leaves import check_leaves, read_structure
from uorojax.models.structure.paths import leaf_names
from uorojax.models.structure.types import Structure, Units
from uorojax.models.structure.verify_inputs import input_field

PyTree = Any
WHO = "verify_structure"


def shapes_of(tree: PyTree) -> PyTree:
    """``tree`` with every leaf a ``jax.ShapeDtypeStruct`` (arrays, tracers, structs)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def signature(*trees: PyTree) -> tuple:
    """The tree structures, shapes and dtypes of ``trees``: what a resolved structure
    depends on."""
    out = []
    for tree in trees:
        leaves, treedef = jax.tree.flatten(tree)
        out.append((treedef, tuple((jnp.shape(a), jnp.result_type(a)) for a in leaves)))
    return tuple(out)


def checked(apply_fn: Callable, structure: Structure, params, state, x) -> Structure:
    """A hand-written (or passed-in inferred) structure checked against the model.

    Where inference succeeds, the layers, every params leaf's role and every listed
    recurrent kernel are compared with the inferred ones (the checks of
    :func:`~uorojax.models.structure.verify_structure` that the estimators depend on:
    they diagonalise and probe through the inferred program, so the hand-written
    ``recurrent_kernels`` and ``leaf_inputs`` are not used); where it refuses, the whole
    structure is verified numerically at a random point. Shapes only: works on tracers.

    Returns:
      The structure with the inferred ``program`` attached (None where inference
      refused the model).

    Raises:
      ConfigError: naming the first state leaf, params leaf or kernel that disagrees,
        and what it actually does.

    Example::

      structure = checked(model.apply, model.structure, params, h0, x)
    """
    from uorojax.models.inference import infer
    from uorojax.models.structure.verify import verify_structure

    if structure.program is not None:  # inferred elsewhere: the same model?
        structure = verify_structure(apply_fn, structure, params, state, x)
        if getattr(structure.param_units, "inferred", False):
            return structure
        program = structure.program
    else:
        try:
            program = infer(apply_fn, shapes_of(params), shapes_of(state), shapes_of(x))
        except Exception:  # noqa: BLE001 - inference refused: the numeric checks decide
            return verify_structure(apply_fn, structure, params, state, x)
    declared, layers = read_structure(structure, params, state, WHO)
    shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(params)]
    declared = [
        d._replace(axis=d.axis % len(s))
        if isinstance(d, Units) and d.axis is not None and d.axis < 0
        else d
        for d, s in zip(declared, shapes)
    ]
    check_leaves(structure, params, state, WHO, declared, layers)
    names, state_names = leaf_names(params), leaf_names(state, "(the state)")
    compare_layers(program, layers, state_names)
    compare_leaf_roles(program, declared, names)
    if structure.recurrent_kernels:
        compare_kernels(program, structure, params, state, names, state_names)
    if structure.recurrent_kernels or input_field(structure) is not None:
        # the kernels' biases and the leaves' inputs, at a random point
        verify_structure(apply_fn, structure, params, state, x)
    return structure._replace(program=program)


def missing_example(who: str) -> checks.ConfigError:
    """The error of an estimator asked to infer a structure without an input."""
    return checks.ConfigError(
        f"{who}: structure=None infers the model's structure, which needs one step's input: "
        f"pass example_x= to {who}, or structure=uorojax.infer_structure(apply_fn, params, "
        "state, x)"
    )


class StructureSource:
    """The structure of one estimator, resolved once per params and state shapes (see
    the module docstring).

    Args:
      who: the estimator's name, for errors.
      apply_fn: the model's step.
      structure: None (inferred) or a :class:`Structure`.
      example_x: one stream's input of one step (arrays or ``jax.ShapeDtypeStruct``),
        or None.
    """

    def __init__(self, who: str, apply_fn: Callable, structure: Structure | None, example_x):
        if structure is not None and not isinstance(structure, Structure):
            raise checks.ConfigError(
                f"{who}: structure must be a uorojax.structure.Structure or None (inferred), "
                f"got {type(structure).__name__}"
            )
        self.who, self.apply_fn, self.structure = who, apply_fn, structure
        self.example_x = example_x
        self._resolved: dict = {}

    def at_init(self, params, state0) -> Structure:
        """The structure for ``init_state``: resolved from ``example_x``; without it, a
        hand-written structure as written (checked at the first step) or a ConfigError."""
        key = signature(params, state0)
        if key in self._resolved:
            return self._resolved[key]
        if self.example_x is None:
            if self.structure is None:
                raise missing_example(self.who)
            return self.structure
        return self._resolve(key, params, state0, self.example_x)

    def at_step(self, params, state, x) -> Structure:
        """The structure for a step of one stream (``state``, ``x`` without a stream axis):
        the one resolved at ``init_state``, or resolved now from the step's input."""
        key = signature(params, state)
        if key in self._resolved:
            return self._resolved[key]
        return self._resolve(key, params, state, x)

    def _resolve(self, key, params, state, x) -> Structure:
        from uorojax.models.structure.inferred import infer_structure

        if self.structure is None:
            found = infer_structure(self.apply_fn, *map(shapes_of, (params, state, x)))
        else:
            found = checked(self.apply_fn, self.structure, params, state, x)
        self._resolved[key] = found
        return found


__all__ = ["StructureSource", "checked", "missing_example", "shapes_of", "signature"]
