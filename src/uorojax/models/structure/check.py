"""Checks of a structure: the leaves' shapes and what the estimators of today take
(:mod:`~uorojax.models.structure.leaves`), and the model's one-step behaviour
(:func:`check_structure`, which is :func:`~uorojax.models.structure.verify_structure`)."""

from __future__ import annotations

from uorojax.models.structure.leaves import check_leaves, check_single_stream, read_structure
from uorojax.models.structure.verify import verify_structure

#: The first name of :func:`~uorojax.models.structure.verify_structure`, kept.
check_structure = verify_structure

__all__ = ["check_leaves", "check_single_stream", "check_structure", "read_structure"]
