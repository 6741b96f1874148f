r"""Diagonalised recurrent uses: the pairing of a kernel's rows and columns by unit.

In ``"diagonal"`` mode a recurrent use ``K @ v`` of layer L becomes
``K @ v_f + diag(K) ⊙ (v − v_f)``, ``v_f`` being ``v`` with the old state held constant.
``diag(K)`` pairs row ``r`` of the vector with the output columns ``c`` of the same unit:
rows from the vector's relation to layer L's state (``v[r]`` reads unit ``u(r)``),
columns from the kernel leaves' :class:`~uorojax.models.inference.roles.Units` (column
``g·n + u`` of group g). :func:`pairing` turns that into index arrays, so the diagonal
product is a gather: ``Σ_j K[k_j(c)] (v − v_f)[r_j(c)]``.

:func:`diagonal_relation` is the same pairing as a relation (output ``c`` depends on
unit ``u(c)`` of each state leaf of L the vector reads); the second analysis uses it at
every recurrent use, and :func:`check_unit_diagonal` then verifies that the state
Jacobian within every layer is unit-diagonal, naming the value that mixes units if not.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from uorojax import checks
from uorojax.models.inference.affine import Term, canonical, restrict, shift, used
from uorojax.models.inference.patterns import evaluate, grid
from uorojax.models.structure.types import Units

GRID_LIMIT = 1 << 24


class Pairing(NamedTuple):
    """Index arrays of one recurrent use's diagonal (see the module docstring).

    ``row_mask`` (the vector's shape) marks the entries that read the layer's old state;
    for output entry ``c`` (flat) and slot ``j``: ``rows[c, j]`` is a flat index of the
    vector in contraction order, ``kernel[c, j]`` a flat index of the params value, and
    ``valid[c, j]`` whether the slot is used.
    """

    row_mask: np.ndarray
    rows: np.ndarray
    kernel: np.ndarray
    valid: np.ndarray


def diagonal_relation(use, kernel_rels, roles, traced, n) -> frozenset:
    """Output entry ``c`` of the use reads unit ``u(c)`` (a relation to one ``(n,)``
    state leaf). Raises ConfigError when a kernel leaf is not a Units leaf of the use's
    layer, or its columns cannot be paired."""
    terms = []
    for sid, rel in kernel_rels.items():
        j = sid  # params sources come first
        role = roles[j]
        if not isinstance(role, Units) or role.layer != use.layer:
            raise checks.ConfigError(
                f"infer: params leaf {traced.paths[0][j]} is the kernel of a recurrent dense "
                f"use of layer {use.layer}, but it does not move one unit of that layer per "
                f"entry (its role: {role!r}); its diagonal cannot be taken"
            )
        axis = len(use.kernel_shape) + role.axis
        for t in rel:
            for g in range(role.groups):
                # a FREE source axis is one of size 1 (n = 1): nothing to pair
                whole = t.src[role.axis] is None
                parts = [t] if whole else restrict(t, axis, g * n, (g + 1) * n)
                if parts is None:
                    raise checks.ConfigError(
                        f"infer: the columns of params leaf {traced.paths[0][j]} in its "
                        "recurrent dense use cannot be paired with units"
                    )
                for p in parts:
                    out = tuple(p.out[a] for a in use.unit_axes)
                    src = (shift(p.src[role.axis] or ((0,) * len(p.ranges), 0), -g * n),)
                    terms.append(canonical(Term(p.ranges, out, src), (n,)))
    return frozenset(t for t in terms if t is not None)


def _enumerate(t, exprs):
    """The expressions on the grid of the term's variables that its output axes use
    (raveled), or None if that grid is too large."""
    chosen = sorted(set().union(*[used(e) for e in t.out])) if t.out else []
    if np.prod([t.ranges[v] for v in chosen]) > GRID_LIMIT:
        return None
    g = grid(t, chosen)
    shape = tuple(t.ranges[v] if v in chosen else 1 for v in range(len(t.ranges)))
    return [np.broadcast_to(evaluate(e, g), shape).ravel() for e in exprs], set(chosen)


def _flat(idx, axes, shape):
    dims = tuple(shape[a] for a in axes)
    if not dims:
        return np.zeros(len(idx[0]) if idx else 1, int)
    return np.ravel_multi_index([idx[a] for a in axes], dims)


def _pairs(rel, out_shape, order):
    """``(flat output index in axis order ``order``, unit)`` pairs of a relation to one
    ``(n,)`` leaf, or None if some output entry reads a range of units."""
    flat_out, units = [], []
    for t in rel:
        if t.src[0] is None:
            return None
        got = _enumerate(t, [*t.out, t.src[0]])
        if got is None or not used(t.src[0]) <= got[1]:
            return None
        *idx, unit = got[0]
        flat_out.append(_flat(idx, order, out_shape) if idx else np.zeros(len(unit), int))
        units.append(unit)
    if not flat_out:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(flat_out), np.concatenate(units)


def _unique_map(flat, units, size, what):
    table = np.full(size, -1)
    table[flat] = units
    if (table[flat] != units).any():
        raise checks.ConfigError(f"infer: {what} reads more than one unit of its layer")
    return table


def pairing(use, vector_rels, true_rels, diag_rel, layer_leaves, traced, n) -> Pairing:
    """The index arrays of one recurrent use (see :class:`Pairing`).

    Args:
      use: the :class:`~uorojax.models.inference.uses.DenseUse` (its vector fully contracted).
      vector_rels: the vector's relations in the diagonalised analysis.
      true_rels: the vector's relations in the first analysis.
      diag_rel: :func:`diagonal_relation` of the use.
      layer_leaves: the state leaves of the use's layer.
      traced: the traced model.
      n: the layer's number of units.
    """
    vshape, kshape, vaxes = use.vector_shape, use.kernel_shape, use.vector_axes
    natural = tuple(range(len(vshape)))
    size = int(np.prod(vshape))
    mask = np.zeros(size, bool)
    row_unit = np.full(size, -1)
    kernels = ", ".join(traced.paths[0][j] for j, _ in use.leaves)
    for k in layer_leaves:
        sid = traced.source("state", k)
        for t in true_rels.get(sid, ()):
            got = _enumerate(t, t.out)
            if got is None:
                mask[:] = True
            else:
                mask[_flat(got[0], natural, vshape)] = True
        rel = vector_rels.get(sid)
        if not rel:
            continue
        pairs = _pairs(rel, vshape, vaxes)
        if pairs is None:
            raise checks.ConfigError(
                f"infer: the vector of the recurrent dense use of {kernels} (made by "
                f"{use.producer}) mixes the units of layer {use.layer}: each of its entries "
                "must read one unit of the layer's state. SnAp-1 and the other structured "
                "estimators cannot use this model; use uoro or rtrl"
            )
        table = _unique_map(*pairs, size, f"an entry of the vector made by {use.producer}")
        if ((row_unit >= 0) & (table >= 0) & (row_unit != table)).any():
            raise checks.ConfigError(
                f"infer: the vector made by {use.producer} reads different units of layer "
                f"{use.layer} from different state leaves"
            )
        row_unit = np.where(table >= 0, table, row_unit)
    out_size = int(np.prod(use.out_shape))
    col_pairs = _pairs(diag_rel, use.out_shape, tuple(range(len(use.out_shape))))
    if col_pairs is None:
        raise checks.ConfigError(f"infer: the columns of {kernels} cannot be paired with units")
    col_unit = _unique_map(*col_pairs, out_size, f"a column of {kernels}")
    rows_of = [[] for _ in range(n)]
    for r in np.nonzero(row_unit >= 0)[0]:
        rows_of[row_unit[r]].append(r)
    width = max(1, max(len(rs) for rs in rows_of))
    table = np.full((n, width), -1)
    for u, rs in enumerate(rows_of):
        table[u, : len(rs)] = rs
    rows = np.where(col_unit[:, None] >= 0, table[np.maximum(col_unit, 0)], -1)
    valid = rows >= 0
    rows = np.where(valid, rows, 0)
    cshape = tuple(vshape[a] for a in vaxes)
    free_idx = np.unravel_index(np.arange(out_size), tuple(kshape[a] for a in use.unit_axes))
    contract_idx = np.unravel_index(rows, cshape) if cshape else ()
    index = [None] * len(kshape)
    for a, fi in zip(use.unit_axes, free_idx):
        index[a] = np.broadcast_to(fi[:, None], rows.shape)
    for a, ci in zip(use.input_axes, contract_idx):
        index[a] = ci
    kernel = np.ravel_multi_index(index, kshape) if kshape else np.zeros_like(rows)
    return Pairing(mask.reshape(vshape), rows, np.where(valid, kernel, 0), valid)


def unit_diagonal_errors(outs, layers, traced) -> list[tuple[int, int, int]]:
    """``(layer, k, k2)`` for every pair of state leaves of one layer whose one-step
    relation (in the diagonalised analysis) is not unit-diagonal."""
    bad = []
    for layer, leaves in enumerate(layers):
        for k in leaves:
            for k2 in leaves:
                rel = outs[k].rels.get(traced.source("state", k2), ())
                if any(t.src[0] is None or t.src[0] != t.out[0] for t in rel):
                    bad.append((layer, k, k2))
    return bad


def mixing_value(scopes, marks, layer, sid) -> str:
    """The first equation whose result reaches ``layer`` and reads a range of entries of
    source ``sid``: the value that mixes units (for error messages)."""
    for path, eqn, outs in scopes:
        if not (marks.get(path, 0) >> layer) & 1:
            continue
        for o in outs:
            for t in o.rels.get(sid, ()):
                out_vars = set().union(*[used(e) for e in t.out]) if t.out else set()
                if t.src[0] is None or not used(t.src[0]) <= out_vars:
                    return f"{eqn.primitive.name}{_where(eqn)}"
    return "a value the analysis could not locate"


def _where(eqn) -> str:
    try:
        from jax._src import source_info_util

        return f" at {source_info_util.summarize(eqn.source_info)}"
    except Exception:  # noqa: BLE001 - the location is a courtesy
        return ""


__all__ = ["Pairing", "diagonal_relation", "pairing", "unit_diagonal_errors"]
