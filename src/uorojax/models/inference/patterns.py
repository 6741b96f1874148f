r"""Relations drawn as index arrays: :func:`materialise` (a dense boolean pattern, for
tests) and the grids :mod:`~uorojax.models.inference.diagonal` enumerates a term's entries on.

Example::

    materialise(relation, (n,), (m, n))   # bool (n, m, n): which entries each reads
"""

from __future__ import annotations

import numpy as np

from uorojax.models.inference.affine import Affine, Term


def grid(term: Term, variables: list[int] | None = None) -> list[np.ndarray]:
    """Broadcastable index grids of the term's variables (only ``variables`` if given,
    the others held at 0)."""
    nv = len(term.ranges)
    chosen = range(nv) if variables is None else variables
    out = []
    for v in range(nv):
        shape = [1] * nv
        if v in chosen:
            shape[v] = term.ranges[v]
            out.append(np.arange(term.ranges[v]).reshape(shape))
        else:
            out.append(np.zeros(shape, int))
    return out


def evaluate(e: Affine, grids: list[np.ndarray]):
    """An affine expression on index grids."""
    value = np.asarray(e[1])
    for a, g in zip(e[0], grids):
        if a:
            value = value + a * g
    return value


def materialise(relation: frozenset, out_shape: tuple, src_shape: tuple) -> np.ndarray:
    """The relation as a boolean array of shape ``out_shape + src_shape``: entry
    ``[i, p]`` is True where ``V[i]`` depends on ``S[p]``.

    Args:
      relation: a frozenset of :class:`Term`.
      out_shape, src_shape: the shapes of the value and of the source.

    Returns:
      The dense pattern (for tests: its size is the product of both shapes).
    """
    out_shape, src_shape = tuple(out_shape), tuple(src_shape)
    pattern = np.zeros(out_shape + src_shape, bool)
    for term in relation:
        g = grid(term)
        nv = len(term.ranges)
        index = [np.broadcast_to(evaluate(e, g), term.ranges or ()) for e in term.out]
        for e, size in zip(term.src, src_shape):
            if e is None:
                index.append(slice(None) if nv else slice(0, size))
            else:
                index.append(np.broadcast_to(evaluate(e, g), term.ranges or ()))
        if nv == 0:
            index = [int(i) if isinstance(i, np.ndarray) else i for i in index]
        pattern[tuple(index)] = True
    return pattern


__all__ = ["evaluate", "grid", "materialise"]
