r"""Numeric checks of a structure at one random point, with a few VJPs and JVPs.

A one-step Jacobian ``B = ∂s'/∂θ`` restricted to a layer of ``n`` units is *unit-diagonal
along axis a* when entry ``p`` of the leaf moves only unit ``u(p) = p[a] mod n``. Two
pullbacks decide it without forming ``B``: with a random cotangent ``c`` on the layer's
state leaves and a random gain ``r`` per unit,

.. math::
    g = c^\top B, \qquad g_r = (r \odot c)^\top B, \qquad
    g_r(p) = r_{u(p)}\, g(p) \ \ \forall p \iff B \text{ is unit-diagonal along } a

(up to a set of ``c, r`` of measure zero: an off-unit entry ``B_{ip}`` adds
``(r_i - r_{u(p)}) c_i B_{ip}`` to the difference). The same test on ``∂s'/∂s`` checks
that a layer's state Jacobian with its recurrent kernels diagonalised is unit-diagonal,
and a pullback that must vanish checks that a leaf moves no lower layer. The point is
random (the state and the float inputs drawn around the given ones, the params
perturbed; every draw on the host, with numpy, so nothing random is compiled), so a zero state or a zero bias hides nothing: at ``h = 0`` a recurrent
kernel's gradient is zero whatever its declared axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from uorojax.models.structure.types import Feedforward, Role, Units, along

PyTree = Any


class Point(NamedTuple):
    """The random point a numeric check runs at."""

    params: PyTree
    state: PyTree
    x: Any


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def draw_noise(tree: PyTree, rng: np.random.Generator, scale: float) -> PyTree:
    """``scale · N(0, 1)`` shaped like every float leaf of ``tree`` (zero on the others),
    drawn on the host (no random kernels to compile)."""
    return jax.tree.map(
        lambda a: (
            (scale * rng.standard_normal(np.shape(a))).astype(jnp.result_type(a))
            if _is_float(a)
            else np.zeros(np.shape(a), jnp.result_type(a))
        ),
        tree,
    )


def point_noise(given: tuple, rng: np.random.Generator) -> tuple:
    """The noise :func:`random_point` adds: ``0.05·N`` on the params, ``0.5·N`` on the
    state and ``N`` on the float inputs (integer inputs, tokens, kept)."""
    return tuple(draw_noise(t, rng, scale) for t, scale in zip(given, (0.05, 0.5, 1.0)))


@jax.jit
def random_point(given: tuple, noise: tuple) -> Point:
    """``given + noise`` on every float leaf (compiled once per tree): the point the
    checks run at."""
    return Point(*(jax.tree.map(lambda a, n: a + n if _is_float(a) else a, t, z)
                   for t, z in zip(given, noise)))  # fmt: skip


def tolerance(state: PyTree, rtol: float | None) -> float:
    """``rtol``, or 1e-9 for a float64 state and 1e-4 otherwise."""
    if rtol is not None:
        return float(rtol)
    dtypes = [jnp.result_type(leaf) for leaf in jax.tree.leaves(state)]
    return 1e-9 if any(d == jnp.float64 for d in dtypes) else 1e-4


def unit_gains(state: PyTree, layers: list[int], rng: np.random.Generator) -> dict:
    """A random gain in ``[1, 2]`` per unit of every layer: ``{layer: (n,)}``."""
    leaves = jax.tree.leaves(state)
    return {
        layer: rng.uniform(1.0, 2.0, np.shape(leaves[layers.index(layer)])[0])
        for layer in sorted(set(layers))
    }


def _stack(state: PyTree, rows: list[list]) -> PyTree:
    leaves, treedef = jax.tree.flatten(state)
    return jax.tree.unflatten(
        treedef,
        [
            np.stack([row[k] for row in rows]).astype(jnp.result_type(a))
            for k, a in enumerate(leaves)
        ],
    )


def layer_cotangents(state: PyTree, layers: list[int], gains: dict, rng) -> PyTree:
    """For every layer L (sorted): a random cotangent ``c_L`` on its state leaves (zero
    elsewhere) and ``r_L ⊙ c_L``, stacked as ``[c_0, r_0 c_0, c_1, r_1 c_1, ...]``."""
    leaves = jax.tree.leaves(state)
    rows = []
    for layer in sorted(set(layers)):
        plain = [rng.standard_normal(np.shape(a)) if layers[k] == layer else np.zeros(np.shape(a))
                 for k, a in enumerate(leaves)]  # fmt: skip
        rows += [
            plain,
            [c * gains[layer] if layers[k] == layer else c for k, c in enumerate(plain)],
        ]
    return _stack(state, rows)


def leaf_cotangents(state: PyTree, layers: list[int], gains: dict, rng) -> PyTree:
    """For every state leaf k: a random cotangent on leaf k alone and ``r ⊙`` it (``r``
    the gains of k's layer), stacked as ``[c_0, r c_0, c_1, r c_1, ...]``."""
    leaves = jax.tree.leaves(state)
    rows = []
    for k, a in enumerate(leaves):
        c = rng.standard_normal(np.shape(a))
        for scale in (1.0, gains[layers[k]]):
            rows.append(
                [c * scale if k2 == k else np.zeros(np.shape(b)) for k2, b in enumerate(leaves)]
            )
    return _stack(state, rows)


def pullbacks(fn: Callable, primal: PyTree, cotangents: PyTree) -> list[jax.Array]:
    """``cᵀ ∂fn/∂primal`` for each stacked cotangent of ``fn``'s output, one array per
    leaf of ``primal`` (leading axis: the cotangents)."""
    _, pull = jax.vjp(fn, primal)
    return jax.tree.leaves(jax.vmap(lambda c: pull(c)[0])(cotangents))


def unit_gain(gain: jax.Array, shape: tuple, axis: int, groups: int) -> np.ndarray:
    """``r_{u(p)}`` for every entry ``p`` of a leaf whose ``axis`` has ``groups · n``
    block-major entries, shaped like the leaf."""
    return np.asarray(along(jnp.tile(gain, groups), len(shape), axis))


def unit_diagonal(g: np.ndarray, g_r: np.ndarray, gain: np.ndarray, tol: float) -> bool:
    """Whether ``g_r = r_{u(p)} g`` everywhere (the test of the module docstring)."""
    return bool(np.all(np.abs(g_r - gain * g) <= tol))


def measured_role(
    moved: dict, shape: tuple, sizes: dict, gains: dict, tol: float, axis_of: Callable
) -> Role:
    """The role the pullbacks show for one params leaf.

    Args:
      moved: ``{layer: (g, g_r)}`` for every layer (sorted keys).
      shape: the leaf's shape; sizes, gains: units and gains per layer.
      tol: the absolute tolerance.
      axis_of: ``(layer) -> (axis, groups) | None``, the axis to test first (the
        declared one), tried before the others.

    Returns:
      None if it moves no layer; ``Units(L, axis, groups)`` for the lowest layer L it
      moves if its entries move one unit each along an axis; ``Feedforward(L)``
      otherwise.
    """
    for layer in sorted(moved):
        g, g_r = moved[layer]
        if not (np.abs(g) > tol).any() and not (np.abs(g_r) > tol).any():
            continue
        n = sizes[layer]
        candidates = [axis_of(layer)] if axis_of(layer) is not None else []
        candidates += [(a, s // n) for a, s in reversed(list(enumerate(shape))) if s % n == 0]
        for axis, groups in candidates:
            if shape[axis] != groups * n:
                continue
            if unit_diagonal(g, g_r, unit_gain(gains[layer], shape, axis, groups), tol):
                return Units(layer, axis, groups)
        return Feedforward(layer)
    return None


def agrees(declared: Role, measured: Role) -> bool:
    """Whether a declared role holds for the measured one: the same layer, and the same
    axis and groups (``Units(layer, None)`` only says the layer)."""
    if declared is None or measured is None:
        return declared is None and measured is None
    lowest = measured.feeds if isinstance(measured, Feedforward) else measured.layer
    if isinstance(declared, Feedforward):
        return isinstance(measured, Feedforward) and declared.feeds == lowest
    if declared.axis is None:
        return declared.layer == lowest
    return isinstance(measured, Units) and tuple(declared) == tuple(measured)


__all__ = [
    "Point",
    "agrees",
    "draw_noise",
    "point_noise",
    "unit_gains",
    "layer_cotangents",
    "leaf_cotangents",
    "measured_role",
    "pullbacks",
    "random_point",
    "tolerance",
    "unit_diagonal",
    "unit_gain",
]
