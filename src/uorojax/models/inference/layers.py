r"""Layers: the strongly connected components of the state's one-step dependence graph.

New state leaf k depends on old state leaf k2 (an edge ``k2 → k``) when their relation is
not empty. A *layer* is a strongly connected component of that graph; layers are numbered
in topological order (ties broken by the smallest leaf index), so a stack of cells gives
one layer per cell, bottom first, an LSTM's ``(c, h)`` is one layer and an LRU's
``(h_re, h_im)`` is one. A leaf that does not depend on itself is a layer of its own.

Every leaf of a layer must be a real vector of the layer's size ``n`` (its units).

Example::

    layers_of([{0}, {0, 1}])   # ((0,), (1,)): leaf 1 reads leaf 0 and itself
"""

from __future__ import annotations

from uorojax import checks


def strongly_connected(deps: list[set[int]]) -> list[list[int]]:
    """Tarjan's components of the graph with edges ``k2 → k`` for ``k2 in deps[k]``."""
    succ = [[] for _ in deps]
    for k, ds in enumerate(deps):
        for k2 in ds:
            succ[k2].append(k)
    index, low, on, stack, comps = {}, {}, set(), [], []

    def visit(v):  # iterative, so deep graphs do not hit the recursion limit
        work = [(v, iter(succ[v]))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    comps.append(sorted(comp))
            elif nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(succ[nxt])))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])

    for v in range(len(deps)):
        if v not in index:
            visit(v)
    return comps


def layers_of(deps: list[set[int]]) -> tuple[tuple[int, ...], ...]:
    """The layers (tuples of state leaf indices) in topological order.

    Args:
      deps: for every new state leaf k, the old state leaves it depends on.

    Returns:
      The components, each sorted, a component before every component that reads it.
    """
    comps = strongly_connected(deps)
    comp_of = {k: c for c, comp in enumerate(comps) for k in comp}
    preds = [set() for _ in comps]
    for k, ds in enumerate(deps):
        for k2 in ds:
            if comp_of[k2] != comp_of[k]:
                preds[comp_of[k]].add(comp_of[k2])
    order, done = [], set()
    while len(order) < len(comps):
        ready = [c for c in range(len(comps)) if c not in done and preds[c] <= done]
        c = min(ready, key=lambda c: comps[c][0])
        order.append(c)
        done.add(c)
    return tuple(tuple(comps[c]) for c in order)


def check_layers(layers, shapes, dtypes, names) -> tuple[int, ...]:
    """Each layer's leaves are real vectors of one size; returns the sizes.

    Raises:
      ConfigError: naming the leaves that are not.
    """
    import numpy as np

    bad = [
        names[k]
        for k, (s, d) in enumerate(zip(shapes, dtypes))
        if len(s) != 1 or not np.issubdtype(d, np.floating)
    ]
    if bad:
        raise checks.ConfigError(
            f"infer: every state leaf must be a real vector (one axis of units); "
            f"{', '.join(bad)} is not. Flatten a matrix state into a vector, or hold a "
            "complex state as its real and imaginary parts"
        )
    sizes = []
    for layer, leaves in enumerate(layers):
        ns = {shapes[k][0] for k in leaves}
        if len(ns) > 1:
            detail = ", ".join(f"{names[k]} {shapes[k][0]}" for k in leaves)
            raise checks.ConfigError(
                f"infer: the state leaves of layer {layer} depend on each other within a "
                f"step, so they form one layer, and must have the same number of units; "
                f"got {detail}"
            )
        sizes.append(ns.pop())
    return tuple(sizes)


__all__ = ["check_layers", "layers_of", "strongly_connected"]
