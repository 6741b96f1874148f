r"""Paths into pytrees: one convention for dicts, lists, tuples, NamedTuples, ``flax.nnx``
states and Equinox modules.

A *plain path* is the tuple of keys JAX's key path names, each as a plain value: a dict
key, a sequence index, an attribute name (a NamedTuple field, an Equinox field, the
``value`` of an ``nnx.Variable``). It is what :func:`plain_path` gives for a leaf of
``jax.tree_util.tree_leaves_with_path`` and what ``param_units`` and ``state_units``
receive, and :func:`get_path` and :func:`set_path` read and replace the node at it, on
any pytree, by flattening one level at a time (``jax.tree_util``), never by indexing::

    params = {"cell": {"W": W}}                  # path ("cell", "W")
    nnx_params                                   # path ("dense_h", "kernel", "value")
    eqx_params (an eqx.nn.GRUCell, partitioned)  # path ("weight_hh",)
    state = (c, h)                               # path (1,) for h
    state = LSTMState(c=c, h=h)                  # path ("h",): a NamedTuple field by name
"""

from __future__ import annotations

from typing import Any

import jax

PyTree = Any
Path = tuple


def plain_path(path) -> Path:
    """A JAX key path as a tuple of plain dict keys, indices and attribute names.

    Example::

      [plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path({"a": [x, y]})]
      # [("a", 0), ("a", 1)]
    """
    keys = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                keys.append(getattr(entry, attr))
                break
    return tuple(keys)


def children(tree: PyTree) -> tuple[list, Any]:
    """The children of one pytree node as ``[(plain key, child)]`` and the treedef that
    puts them back (``treedef.unflatten([child, ...])``); ``([], None)`` for a leaf."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda n: n is not tree)
    if len(flat) == 1 and flat[0][0] == () and flat[0][1] is tree:
        return [], None
    return [(plain_path(p)[0], child) for p, child in flat], treedef


def _child_index(kids: list, key, path: Path, depth: int, tree) -> int:
    for i, (k, _) in enumerate(kids):
        if k == key:
            return i
    where = "".join(f"[{k!r}]" for k in path[:depth]) or "the root"
    if not kids:
        raise KeyError(
            f"path {path!r}: {where} is a leaf ({type(tree).__name__}), it has no key {key!r}"
        )
    raise KeyError(
        f"path {path!r}: {where} has no key {key!r}; its keys are {[k for k, _ in kids]}"
    )


def get_path(tree: PyTree, path: Path) -> PyTree:
    """The node of ``tree`` at the plain ``path`` (a leaf or a subtree).

    Raises:
      KeyError: naming the first key of ``path`` the tree does not have, and the keys
        it has there.

    Example::

      get_path(nnx_params, ("dense_h", "kernel", "value"))  # the kernel array
    """
    for depth, key in enumerate(path):
        kids, _ = children(tree)
        tree = kids[_child_index(kids, key, path, depth, tree)][1]
    return tree


def set_path(tree: PyTree, path: Path, value: Any) -> PyTree:
    """A copy of ``tree`` with ``value`` at the plain ``path`` (the nodes along the path
    rebuilt by their own treedefs, everything else shared).

    Example::

      params = set_path(params, ("cell", "W"), jnp.diag(jnp.diagonal(W)))
    """
    return _set(tree, tuple(path), value, 0)


def _set(tree, path, value, depth):
    if depth == len(path):
        return value
    kids, treedef = children(tree)
    i = _child_index(kids, path[depth], path, depth, tree)
    new = [child for _, child in kids]
    new[i] = _set(new[i], path, value, depth + 1)
    return treedef.unflatten(new)


def leaf_names(tree: PyTree, root: str = "(the root)") -> list[str]:
    """Every leaf's key path as ``jax.tree_util.keystr`` writes it, in flatten order
    (``root`` for a tree that is one leaf)."""
    return [jax.tree_util.keystr(p) or root for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def path_name(path: Path) -> str:
    """A plain path written as ``keystr`` writes a dict path: ``['cell']['W']``."""
    return "".join(f"[{k!r}]" for k in path) or "(the root)"


__all__ = ["children", "get_path", "leaf_names", "path_name", "plain_path", "set_path"]
