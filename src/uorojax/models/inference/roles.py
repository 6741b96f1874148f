r"""The role of every params leaf: what it moves in one step.

* :class:`Units` ``(layer, axis, groups)``: entry ``p`` moves, in one step, only unit
  ``u(p)`` of layer ``layer`` (in every state leaf of that layer; any state of the layers
  above), where the leaf's ``axis`` has ``groups · n`` entries laid out block-major,
  ``p[axis] = g·n + u``. A GRU kernel fused as ``(m, 3n)`` or ``(3n, n)``, an LSTM kernel
  ``(m + n, 4n)``, a bias ``(3n,)``, an element-wise vector ``(n,)``, an LRU's ``nu``,
  ``theta`` and ``B (n, d)`` all are.
* :class:`Feedforward` ``(feeds)``: moves layer ``feeds`` but not per unit, moves no lower
  layer, and reaches layer ``feeds`` only through the vector of the input dense uses of
  that layer (an embedding, an encoder, a norm of the layer's input, the previous layer's
  output map in an LRU stack).
* ``None``: moves no state in one step (a readout).

Anything else is a :class:`~uorojax.ConfigError` that says why (an interleaved gate
layout ``u·G + g``, a reset gate applied before the recurrent kernel, a scalar gain on
the state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uorojax import checks
from uorojax.models.inference.affine import minus, scale
from uorojax.models.structure.types import Feedforward, Units, describe_role


def _src(term, axis, shape):
    e = term.src[axis]
    if e is None and shape[axis] == 1:
        return ((0,) * len(term.ranges), 0)
    return e


def units_axis(terms, shape, n) -> tuple[int, int] | None:
    """The last axis along which every term reads entry ``g·n + i`` for unit ``i``, and
    its number of groups, or None."""
    found = None
    for axis, size in enumerate(shape):
        if size % n:
            continue
        ok = True
        for t in terms:
            e = _src(t, axis, shape)
            if e is None:
                ok = False
                break
            d = minus(e, t.out[0])
            if any(d[0]) or d[1] % n or not 0 <= d[1] < size:
                ok = False
                break
        if ok:
            found = (axis, size // n)
    return found


def interleaved_axis(terms, shape, n) -> int | None:
    """An axis along which every term reads entry ``u·G + g`` for unit ``u``."""
    for axis, size in enumerate(shape):
        groups = size // n
        if groups < 2 or size % n:
            continue
        if all(
            (e := _src(t, axis, shape)) is not None
            and not any((d := minus(e, scale(t.out[0], groups)))[0])
            and 0 <= d[1] < groups
            for t in terms
        ):
            return axis
    return None


def candidate_roles(analysis, layers, sizes, names):
    """From the first analysis: each params leaf's :class:`Units`, None, or the lowest
    layer it moves (an ``int``: a Feedforward candidate, checked later).

    Raises:
      ConfigError: for an interleaved gate layout.
    """
    traced = analysis.traced
    layer_of = {k: layer for layer, leaves in enumerate(layers) for k in leaves}
    out = []
    for j in range(traced.count("params")):
        shape = tuple(traced.leaves[0][j].shape)
        moved = sorted(
            {
                layer_of[k]
                for k in range(traced.count("state"))
                if analysis.relation(("state", k), ("params", j))
            }
        )
        if not moved:
            out.append(None)
            continue
        layer, n = moved[0], sizes[moved[0]]
        terms = [t for k in layers[layer] for t in analysis.relation(("state", k), ("params", j))]
        found = units_axis(terms, shape, n)
        if found is not None:
            out.append(Units(layer, found[0], found[1]))
            continue
        axis = interleaved_axis(terms, shape, n)
        if axis is not None:
            raise checks.ConfigError(
                f"infer: params leaf {names[j]} lays the {shape[axis] // n} gates of layer "
                f"{layer}'s {n} units out interleaved along axis {axis} (entry u·G + g for "
                "unit u, gate g); interleaved gate layouts are not supported. Lay the gates "
                "out block-major (entry g·n + u: a concatenation of per-gate blocks, as "
                "flax and Equinox do)"
            )
        out.append(layer)
    return out


def feedforward_errors(candidates, ff_analysis, ff_ctx, uses, layers, names, traced) -> dict:
    """For every Feedforward candidate ``j`` that reaches its layer by another route than
    the input of that layer's dense uses, the error message; ``{}`` if none."""
    errors = {}
    by_path = {u.path: u for u in uses}
    for j, layer in enumerate(candidates):
        if not isinstance(layer, int) or isinstance(layer, bool):
            continue
        sid = traced.source("params", j)
        if not any(ff_analysis.outs[k].rels.get(sid) for k in layers[layer]):
            continue
        via = [
            by_path[p]
            for p, s in ff_ctx.uses.items()
            if p in by_path
            and by_path[p].kind == "recurrent"
            and by_path[p].layer == layer
            and sid in s.infos[1 - s.kernel].rels
        ]
        if via:
            use = via[0]
            kernel = ", ".join(names[i] for i, _ in use.leaves)
            errors[j] = (
                f"infer: params leaf {names[j]} moves every unit of layer {layer} in one step "
                f"through the recurrent kernel {kernel} @ v, whose vector v (made by "
                f"{use.producer}) depends on {names[j]} and on the layer's state, as in "
                "h~ = tanh(W x + Uh @ (r * h)) with r = sigmoid(Wr x + Ur h). SnAp-1, "
                "e-prop, ES-D-RTRL, KF-RTRL and OK need each params entry to move one unit: "
                "use uoro or rtrl, or write the cell as r * (Uh h + b) (flax's GRUCell form)"
            )
        else:
            errors[j] = (
                f"infer: params leaf {names[j]} moves several units of layer {layer} per "
                "entry in one step (not one unit per entry along an axis of n, or of groups "
                "of n, entries), and not only through the input of the layer's dense maps: "
                "for example a scalar gain on the state, or a norm of the pre-activations. "
                "Use uoro or rtrl, or give each unit its own parameter"
            )
    return errors


def _same(declared, inferred) -> bool:
    if declared is None or inferred is None:
        return declared is None and inferred is None
    if isinstance(declared, Feedforward):
        return isinstance(inferred, Feedforward) and declared.feeds == inferred.feeds
    return isinstance(declared, Units) and isinstance(inferred, Units) and declared == inferred


def compare_roles(
    declared: Sequence, inferred: Any, names: Sequence[str] | None = None
) -> list[str]:
    """Where a declared (hand-written) role differs from the inferred one.

    Args:
      declared: one role per params leaf in flatten order (``Units(layer, axis, groups)``,
        ``Feedforward(feeds)`` or None), for example
        ``uorojax.structure.declared_units(structure, params)``.
      inferred: a :class:`~uorojax.models.inference.Program`, or its ``roles``.
      names: the leaves' paths (taken from the program when it is one).

    Returns:
      One line per leaf that differs, naming the leaf and what it actually moves.

    Example::

      program = infer(model.apply, params, state0, x)
      for line in compare_roles(declared_units(model.structure, params), program):
          print(line)
    """
    roles = getattr(inferred, "roles", inferred)
    if names is None:
        names = getattr(inferred, "param_paths", None) or [f"#{j}" for j in range(len(roles))]
    declared = list(declared)
    if len(declared) != len(roles):
        return [f"declared {len(declared)} roles for {len(roles)} params leaves"]
    return [
        f"params leaf {name}: declared {d!r} ({describe_role(d)}), but it {describe_role(r)}: {r!r}"
        for name, d, r in zip(names, declared, roles)
        if not _same(d, r)
    ]


__all__ = ["Feedforward", "Units", "compare_roles", "describe_role"]
