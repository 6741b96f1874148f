r"""Dense uses: the products ``K @ v`` of a params value ``K`` with a vector ``v``.

A *dense use* is a ``dot_general`` one of whose operands is a pure params value (each
element one entry of one params leaf: the leaf itself, transposed, reshaped, sliced, or
a params-side concatenation of several leaves, as flax's ``OptimizedLSTMCell`` builds at
call time). Its *layer* is the lowest layer whose new state its output reaches; it is
**recurrent** when its vector depends on the old state of that layer, an **input** use
when it does not, and an **output** use when it reaches no state (a readout).

:func:`describe_uses` builds the :class:`DenseUse` records from the first analysis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from uorojax import checks
from uorojax.models.inference.affine import bounds


class DenseUse(NamedTuple):
    """One dense use of a params value (see the module docstring).

    Attributes:
      index: its position in ``Program.dense_uses`` (and in ``probes``).
      path: the equation's position in the jaxpr (indices through call-like equations).
      kind: ``"recurrent"``, ``"input"`` or ``"output"``.
      layer: its layer, None for an output use.
      kernel_operand: which operand of the ``dot_general`` is the params value (0, 1).
      leaves: ``(params leaf index, block)`` for each leaf in the params value, the block
        being the ``(start, stop)`` range it fills along each axis of the value.
      unit_axes: the value's axes that index the output (its free axes).
      input_axes: the value's axes contracted with the vector.
      vector_axes: the vector's contracted axes, paired with ``input_axes``.
      vector_batch: the vector's batch axes (none for a plain ``K @ v``).
      rows: ``((kind, leaf index), block)`` for each source the vector reads: which
        entries of the vector (a range per vector axis) read which params, state or
        input leaf (``[x, h] @ K``: x's rows, then h's).
      kernel_shape, vector_shape, out_shape: shapes of the params value, the vector and
        the product; out_dtype: the product's dtype.
      producer: the primitive that made the vector.
    """

    index: int
    path: tuple
    kind: str
    layer: int | None
    kernel_operand: int
    leaves: tuple
    unit_axes: tuple
    input_axes: tuple
    vector_axes: tuple
    vector_batch: tuple
    rows: tuple
    kernel_shape: tuple
    vector_shape: tuple
    out_shape: tuple
    out_dtype: Any
    producer: str


def block(rel, ndim: int) -> tuple:
    """The bounding ranges of a relation's output entries, per axis."""
    lo, hi = [None] * ndim, [None] * ndim
    for t in rel:
        for d, e in enumerate(t.out):
            a, b = bounds(t.ranges, e)
            lo[d] = a if lo[d] is None else min(lo[d], a)
            hi[d] = b if hi[d] is None else max(hi[d], b)
    return tuple((a, b + 1) for a, b in zip(lo, hi))


def source_of(traced, sid: int) -> tuple[str, int]:
    """``(kind, leaf index)`` of a source id."""
    for kind in ("params", "state", "x"):
        n = traced.count(kind)
        if sid < n:
            return kind, sid
        sid -= n
    raise IndexError(sid)


def layer_mask_min(mask: int) -> int | None:
    return (mask & -mask).bit_length() - 1 if mask else None


def describe_uses(traced, seen: dict, marks: dict, layer_of_leaf, names) -> tuple:
    """The :class:`DenseUse` of every dense use outside control flow, in jaxpr order.

    Args:
      traced: the traced model.
      seen: ``Context.uses`` of the first analysis.
      marks: equation path → bit mask of the layers its results reach.
      layer_of_leaf: the layer of every state leaf.
      names: the params leaves' paths.

    Raises:
      ConfigError: for a dense use inside ``lax.cond``/``scan``/``while`` or a custom
        derivative whose results reach the state: it cannot be marked.
    """
    out = []
    for path in sorted(seen):
        s = seen[path]
        if s.hidden is not None:
            if marks.get(s.hidden):
                leaves = [names[sid] for sid in s.infos[s.kernel].rels]
                raise checks.ConfigError(
                    f"infer: a dense map of params {', '.join(leaves)} inside a lax.cond, "
                    "lax.scan or lax.while_loop body, or inside a custom_jvp/custom_vjp "
                    "function, reaches the state; it cannot be marked for the structured "
                    "estimators. Compute it outside the control flow (jnp.where instead of "
                    "lax.cond), or use uoro or rtrl"
                )
            continue
        layer = layer_mask_min(marks.get(path, 0))
        eqn, k = s.eqn, s.kernel
        vector = s.infos[1 - k]
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        contract, batch = (lc, rc)[k], (lb, rb)[k]
        kernel_shape = tuple(eqn.invars[k].aval.shape)
        vector_shape = tuple(eqn.invars[1 - k].aval.shape)
        free = tuple(d for d in range(len(kernel_shape)) if d not in contract and d not in batch)
        state_sources = {
            source_of(traced, sid)[1] for sid in vector.rels if source_of(traced, sid)[0] == "state"
        }
        if layer is None:
            kind = "output"
        elif any(layer_of_leaf[k2] == layer for k2 in state_sources):
            kind = "recurrent"
        else:
            kind = "input"
        leaves = tuple(
            (sid, block(rel, len(kernel_shape))) for sid, rel in sorted(s.infos[k].rels.items())
        )
        rows = tuple(
            (source_of(traced, sid), block(rel, len(vector_shape)))
            for sid, rel in sorted(vector.rels.items())
        )
        out.append(
            DenseUse(
                len(out),
                path,
                kind,
                layer,
                k,
                leaves,
                free,
                tuple(contract),
                tuple((lc, rc)[1 - k]),
                tuple((lb, rb)[1 - k]),
                rows,
                kernel_shape,
                vector_shape,
                tuple(eqn.outvars[0].aval.shape),
                eqn.outvars[0].aval.dtype,
                s.producer,
            )
        )
    return tuple(out)


__all__ = ["DenseUse", "describe_uses"]
