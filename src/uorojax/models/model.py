"""The model protocol: a recurrent model as two pure functions, and its structure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from uorojax.models.structure.types import Structure

PyTree = Any


class Model(NamedTuple):
    """A recurrent model as two pure functions, and its structure where known.

    Attributes:
      init: ``(key, example_x) -> (params, state0)``.
      apply: ``(params, state, x) -> (new_state, output)`` for one time step.
      structure: the :class:`~uorojax.structure.Structure` of its recurrent units, or
        None (SnAp-1 and KF-RTRL need it; the other estimators do not).
      example_x: an input of one step, or None: what the structure is (or can be)
        inferred from (:func:`~uorojax.infer_structure`).
    """

    init: Callable[[jax.Array, Any], tuple[PyTree, PyTree]]
    apply: Callable[[PyTree, PyTree, Any], tuple[PyTree, Any]]
    structure: Structure | None = None
    example_x: Any = None
