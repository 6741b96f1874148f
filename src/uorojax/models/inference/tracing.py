r"""A model step as a jaxpr on flat leaves, and its relation analysis.

:func:`trace` reads only the shapes, dtypes and tree structure of ``params``, ``state``
and ``x`` (arrays or ``jax.ShapeDtypeStruct``), never their values, module types or leaf
names. :func:`analyse` runs the relation analysis with every params leaf, old-state leaf
and input leaf as a source: ``Analysis.relation(("state", k), ("params", j))`` is the set
of pairs ``(i, p)`` such that new state leaf k's entry ``i`` depends on params leaf j's
entry ``p`` in one step.

Example::

    a = analyse(model.apply, params, state0, x)
    pattern = a.pattern(("state", 0), ("params", 2))   # bool, shape (n, *leaf.shape)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from uorojax import checks
from uorojax.models.inference.affine import Term, canonical, var
from uorojax.models.inference.analysis import Context, Info, run
from uorojax.models.inference.patterns import materialise

KINDS = ("params", "state", "x")


class Traced(NamedTuple):
    """A model step traced on flat leaves (``jaxpr`` takes params, state, then x leaves,
    and returns the new state's leaves, then the output's)."""

    jaxpr: Any
    consts: list
    in_defs: tuple  # params, state, x treedefs
    out_defs: tuple  # new state, output treedefs
    leaves: tuple  # per kind: tuple of ShapeDtypeStruct
    paths: tuple  # per kind: tuple of keystr paths

    def count(self, kind: str) -> int:
        return len(self.leaves[KINDS.index(kind)])

    def source(self, kind: str, index: int) -> int:
        """The source id of leaf ``index`` of ``kind`` (params, then state, then x)."""
        base = sum(self.count(k) for k in KINDS[: KINDS.index(kind)])
        return base + index

    def src_shapes(self) -> list[tuple]:
        return [tuple(leaf.shape) for leaves in self.leaves for leaf in leaves]

    def name(self, kind: str, index: int) -> str:
        return f"{kind} leaf {self.paths[KINDS.index(kind)][index]}"


def _abstract(leaf) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(
        np.shape(leaf), leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    )


def trace(apply_fn: Callable, params, state, x) -> Traced:
    """``apply_fn(params, state, x) -> (new_state, output)`` as a jaxpr on flat leaves.

    Raises:
      ConfigError: if the new state's tree or shapes differ from the state's.
    """
    trees = (params, state, x)
    flat = [jax.tree_util.tree_flatten_with_path(t) for t in trees]
    in_defs = tuple(f[1] for f in flat)
    leaves = tuple(tuple(_abstract(leaf) for _, leaf in f[0]) for f in flat)
    paths = tuple(tuple(jax.tree_util.keystr(path) for path, _ in f[0]) for f in flat)
    counts = [len(ls) for ls in leaves]
    box: dict = {}

    def flat_fn(*args):
        parts, start = [], 0
        for treedef, n in zip(in_defs, counts):
            parts.append(jax.tree.unflatten(treedef, args[start : start + n]))
            start += n
        new_state, output = apply_fn(*parts)
        ns, ns_def = jax.tree.flatten(new_state)
        out, out_def = jax.tree.flatten(output)
        box["defs"] = (ns_def, out_def)
        return [*ns, *out]

    closed = jax.make_jaxpr(flat_fn)(*[leaf for ls in leaves for leaf in ls])
    ns_def = box["defs"][0]
    ns_avals = [v.aval for v in closed.jaxpr.outvars[: ns_def.num_leaves]]
    if ns_def != in_defs[1] or any(
        tuple(a.shape) != tuple(s.shape) for a, s in zip(ns_avals, leaves[1])
    ):
        got = [tuple(a.shape) for a in ns_avals]
        want = [tuple(s.shape) for s in leaves[1]]
        raise checks.ConfigError(
            f"infer: apply_fn must return a new state with the state's tree and shapes; "
            f"got {ns_def} with leaves {got}, expected {in_defs[1]} with {want}"
        )
    return Traced(closed.jaxpr, list(closed.consts), in_defs, box["defs"], leaves, paths)


def identity(shape: tuple) -> frozenset:
    """A source's relation to itself: entry ``i`` depends on entry ``i``."""
    sizes = [s for s in shape if s > 1]
    nv, out, v = len(sizes), [], 0
    for s in shape:
        if s > 1:
            out.append(var(nv, v))
            v += 1
        else:
            out.append(((0,) * nv, 0))
    if 0 in shape:
        return frozenset()
    return frozenset([canonical(Term(tuple(sizes), tuple(out), tuple(out)), tuple(shape))])


def source_infos(traced: Traced, kinds=KINDS, only=None) -> list[Info]:
    """The inputs' :class:`Info`: each float leaf of the given kinds (and, if ``only`` is
    given, with a source id in it) is its own source; params leaves are pure."""
    infos = []
    for kind, leaves in zip(KINDS, traced.leaves):
        for j, leaf in enumerate(leaves):
            sid = traced.source(kind, j)
            is_float = np.issubdtype(leaf.dtype, np.inexact)
            chosen = kind in kinds and is_float and (only is None or sid in only)
            rels = {sid: identity(tuple(leaf.shape))} if chosen else {}
            infos.append(Info(rels, kind == "params" and is_float))
    return infos


class Analysis(NamedTuple):
    """The one-step relations of a traced model (see the module docstring)."""

    traced: Traced
    outs: list  # Info of every output leaf (new state, then output)
    uses: dict  # path -> Seen

    def relation(self, out, src) -> frozenset:
        """The relation of ``out = ("state" | "output", k)`` to ``src = (kind, j)``."""
        kind, k = out
        index = k if kind == "state" else self.traced.count("state") + k
        return self.outs[index].rels.get(self.traced.source(*src), frozenset())

    def pattern(self, out, src) -> np.ndarray:
        """:meth:`relation` drawn as a boolean array ``out_shape + src_shape``."""
        kind, k = out
        index = k if kind == "state" else self.traced.count("state") + k
        out_shape = tuple(self.traced.jaxpr.outvars[index].aval.shape)
        src_shape = tuple(self.traced.leaves[KINDS.index(src[0])][src[1]].shape)
        return materialise(self.relation(out, src), out_shape, src_shape)


def analyse(apply_fn: Callable, params, state, x, *, hook=None) -> Analysis:
    """The one-step relation of every output leaf to every params, state and input leaf.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      params, state, x: pytrees of arrays or ``jax.ShapeDtypeStruct``.
      hook: optional dense-use hook (see :class:`~uorojax.models.inference.analysis.Context`).

    Returns:
      An :class:`Analysis`.

    Example::

      a = analyse(model.apply, params, h0, x)
      a.pattern(("state", 0), ("state", 0))   # the structure of ∂h_t/∂h_{t-1}
    """
    traced = trace(apply_fn, params, state, x)
    return analyse_traced(traced, hook=hook)[0]


def analyse_traced(traced: Traced, kinds=KINDS, only=None, hook=None, keep_scopes=False):
    """:func:`analyse` on a traced model, with the sources restricted to ``kinds`` (and
    the source ids ``only``); returns the :class:`Analysis` and its context."""
    ctx = Context(traced.src_shapes(), hook=hook, keep_scopes=keep_scopes)
    outs = run(traced.jaxpr, traced.consts, source_infos(traced, kinds, only), ctx)
    return Analysis(traced, outs, ctx.uses), ctx


__all__ = ["Analysis", "Traced", "analyse", "trace"]
