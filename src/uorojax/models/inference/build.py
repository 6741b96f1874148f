r"""``infer``: a model's recurrent structure, read from its jaxpr.

Three analyses of the traced step (:mod:`~uorojax.models.inference.analysis`):

1. with every params, state and input leaf as a source: the layers (strongly connected
   components of the state graph), the dense uses and their kind, and each params
   leaf's candidate role;
2. with the Feedforward candidates as sources, stopping at the vector of the input
   dense uses of their layer: a candidate that still reaches its layer is an error;
3. with the state as source and every recurrent use diagonalised: the state Jacobian
   within each layer must be unit-diagonal, and each recurrent use's rows and columns
   are paired by unit for the evaluator.
"""

from __future__ import annotations

from collections.abc import Callable

from uorojax import checks
from uorojax.models.inference.analysis import reach
from uorojax.models.inference.diagonal import (
    diagonal_relation,
    mixing_value,
    pairing,
    unit_diagonal_errors,
)
from uorojax.models.inference.layers import check_layers, layers_of
from uorojax.models.inference.primitives import dot_relations
from uorojax.models.inference.program import Program
from uorojax.models.inference.roles import Feedforward, candidate_roles, feedforward_errors
from uorojax.models.inference.tracing import analyse_traced, trace
from uorojax.models.inference.uses import describe_uses


def infer(apply_fn: Callable, params, state, x) -> Program:
    """The recurrent structure of ``apply_fn`` and an evaluator of its step.

    Reads only shapes, dtypes, tree structure and the jaxpr: never module types, leaf
    names or values.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)`` for one step of one
        stream; the state's leaves are real vectors.
      params, state, x: pytrees of arrays or ``jax.ShapeDtypeStruct``.

    Returns:
      A :class:`~uorojax.models.inference.Program`.

    Raises:
      ConfigError: where the model does not have the structure the structured
        estimators need (the message says why and what to do).

    Example::

      program = infer(model.apply, params, state0, x)
      program.roles          # one Units / Feedforward / None per params leaf
      new_state, out = program.apply(params, state0, x, recurrent="diagonal")
    """
    traced = trace(apply_fn, params, state, x)
    names = list(traced.paths[0])
    first, ctx = analyse_traced(traced)
    layers, sizes = _layers(traced, first)
    layer_of = {k: layer for layer, leaves in enumerate(layers) for k in leaves}
    marks: dict = {}
    q, n_out = traced.count("state"), len(traced.jaxpr.outvars) - traced.count("state")
    reach(traced.jaxpr, [1 << layer_of[k] for k in range(q)] + [0] * n_out, marks)
    uses = describe_uses(traced, ctx.uses, marks, layer_of, names)
    roles = _feedforward(traced, candidate_roles(first, layers, sizes, names), uses, layers, names)
    recurrent = [u for u in uses if u.kind == "recurrent"]
    _check_recurrent_vectors(recurrent, names)
    diag = {
        u.index: diagonal_relation(
            u, ctx.uses[u.path].infos[u.kernel_operand].rels, roles, traced, sizes[u.layer]
        )
        for u in recurrent
    }
    second, ctx2 = analyse_traced(
        traced,
        kinds=("state",),
        hook=_diagonaliser(traced, recurrent, diag, layers, layer_of),
        keep_scopes=True,
    )
    pairings = {
        u.index: pairing(
            u,
            ctx2.uses[u.path].infos[1 - u.kernel_operand].rels,
            ctx.uses[u.path].infos[1 - u.kernel_operand].rels,
            diag[u.index],
            layers[u.layer],
            traced,
            sizes[u.layer],
        )
        for u in recurrent
    }
    _check_unit_diagonal(traced, second, ctx2, layers, marks)
    return Program(traced, roles, layers, sizes, uses, pairings)


def _state_names(traced) -> list[str]:
    return [f"state leaf {name or '(the state)'}" for name in traced.paths[1]]


def _layers(traced, first):
    """The layers of the first analysis' state graph, and their sizes (ConfigError
    for a state leaf that is not a real vector, or a layer of leaves of two sizes)."""
    q = traced.count("state")
    deps = [
        {k2 for k2 in range(q) if first.relation(("state", k), ("state", k2))} for k in range(q)
    ]
    layers = layers_of(deps)
    shapes = [tuple(leaf.shape) for leaf in traced.leaves[1]]
    dtypes = [leaf.dtype for leaf in traced.leaves[1]]
    return layers, check_layers(layers, shapes, dtypes, _state_names(traced))


def _check_recurrent_vectors(recurrent, names) -> None:
    for u in recurrent:
        if u.vector_batch or len(u.vector_axes) != len(u.vector_shape):
            raise checks.ConfigError(
                f"infer: the recurrent dense use of {_kernels(u, names)} multiplies a "
                f"vector of shape {u.vector_shape} with batch or free axes; only K @ v with "
                "v contracted whole can be diagonalised"
            )


def _diagonaliser(traced, recurrent, diag, layers, layer_of):
    """The hook of the diagonalised analysis: at a recurrent use of layer L, output
    entry c reads unit u(c) of each state leaf of L its vector reads (and, as before,
    the other layers' state)."""
    by_path = {u.path: u for u in recurrent}
    source_layer = {traced.source("state", k): layer for k, layer in layer_of.items()}

    def hook(seen, default):
        use = by_path.get(seen.path)
        if use is None:
            return None
        out = {s: r for s, r in default.items() if source_layer.get(s) != use.layer}
        vector = seen.infos[1 - seen.kernel].rels
        for k in layers[use.layer]:
            sid = traced.source("state", k)
            if vector.get(sid) and diag[use.index]:
                out[sid] = diag[use.index]
        return out

    return hook


def _check_unit_diagonal(traced, second, ctx2, layers, marks) -> None:
    """ConfigError naming the first pair of state leaves of a layer whose diagonalised
    one-step relation is not unit-diagonal, and the value that mixes their units."""
    bad = unit_diagonal_errors(second.outs, layers, traced)
    if not bad:
        return
    layer, k, k2 = bad[0]
    names = _state_names(traced)
    culprit = mixing_value(ctx2.scopes, marks, layer, traced.source("state", k2))
    raise checks.ConfigError(
        f"infer: with its recurrent kernels diagonalised, layer {layer}'s state Jacobian "
        f"is still not unit-diagonal: new {names[k]} depends on other units of old "
        f"{names[k2]} through {culprit} (for example a layer norm of the state, or "
        "a state shifted or mixed by a fixed matrix). SnAp-1 needs every unit to read "
        "only itself outside the dense recurrent kernels; use uoro or rtrl"
    )


def _kernels(use, names) -> str:
    return ", ".join(names[j] for j, _ in use.leaves)


def _feedforward(traced, candidates, uses, layers, names) -> list:
    """The roles, with every Feedforward candidate checked by the stop-at-input
    analysis. Raises ConfigError for the first candidate that fails."""
    ff = {
        traced.source("params", j): layer
        for j, layer in enumerate(candidates)
        if isinstance(layer, int) and not isinstance(layer, bool)
    }
    if not ff:
        return list(candidates)
    stops = {u.path: u.layer for u in uses if u.kind == "input"}
    src_shapes = traced.src_shapes()

    def stop_at_inputs(seen, default):
        layer = stops.get(seen.path)
        if layer is None:
            return None
        eqn, k = seen.eqn, seen.kernel
        rels = [dict(seen.infos[0].rels), dict(seen.infos[1].rels)]
        rels[1 - k] = {s: r for s, r in rels[1 - k].items() if ff.get(s) != layer}
        shapes = [tuple(v.aval.shape) for v in eqn.invars]
        return dot_relations(eqn.params, rels, shapes, tuple(eqn.outvars[0].aval.shape), src_shapes)

    third, ctx3 = analyse_traced(traced, kinds=("params",), only=set(ff), hook=stop_at_inputs)
    errors = feedforward_errors(candidates, third, ctx3, uses, layers, names, traced)
    if errors:
        raise checks.ConfigError(errors[min(errors)])
    return [
        Feedforward(r) if isinstance(r, int) and not isinstance(r, bool) else r for r in candidates
    ]


__all__ = ["infer"]
