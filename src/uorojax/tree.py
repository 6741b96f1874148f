"""Pytree arithmetic shared by the estimators: inner products, norms, noise, finiteness."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """Euclidean inner product of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def sum_of_squares(a: jax.Array) -> jax.Array:
    """The sum of the squares of an array's entries."""
    return jnp.sum(jnp.square(a))


def tree_norm(a: PyTree) -> jax.Array:
    """Euclidean norm of a whole pytree."""
    return jnp.sqrt(sum(sum_of_squares(x) for x in jax.tree.leaves(a)))


def tree_finite(tree: PyTree) -> jax.Array:
    """True when every entry is finite: one test of the sum of per-leaf sums (an inf or
    NaN anywhere makes it non-finite; so, conservatively, does overflow)."""
    sums = [jnp.sum(a) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.isfinite(sum(sums)) if sums else jnp.asarray(True)


def zeros_like(tree: PyTree) -> PyTree:
    """Zeros with the structure, shapes and dtypes of ``tree``."""
    return jax.tree.map(jnp.zeros_like, tree)


def stack_zeros(tree: PyTree, size: int) -> PyTree:
    """Zeros shaped like ``tree`` with a leading axis of ``size``."""
    return jax.tree.map(lambda a: jnp.zeros((size, *jnp.shape(a)), jnp.result_type(a)), tree)


def repeat_streams(tree: PyTree, num_streams: int) -> PyTree:
    """``tree`` repeated along a new leading stream axis of ``num_streams``."""
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (num_streams, *jnp.shape(a))), tree)


def rademacher_like(key: jax.Array, tree: PyTree, num_samples: int) -> PyTree:
    """Independent +-1 entries shaped like ``tree`` with a leading ``num_samples`` axis.

    One draw of random bits serves the whole tree: every bit of ``jax.random.bits`` is
    an independent fair coin, so ``ceil(n / 32)`` words give ``n`` signs. That is 32
    times fewer counter-mode (threefry) evaluations than one uniform per sign, and one
    RNG call per step instead of one per leaf.
    """
    leaves, treedef = jax.tree.flatten(tree)
    sizes = [math.prod(jnp.shape(leaf)) for leaf in leaves]
    total = sum(sizes)
    words = jax.random.bits(key, (num_samples, -(-total // 32)), jnp.uint32)
    shifts = jnp.arange(32, dtype=jnp.uint32)
    bits = ((words[:, :, None] >> shifts) & 1).reshape(num_samples, -1)[:, :total]
    signs = 1 - 2 * bits.astype(jnp.int32)
    noise, start = [], 0
    for leaf, size in zip(leaves, sizes):
        piece = signs[:, start : start + size].reshape(num_samples, *jnp.shape(leaf))
        noise.append(piece.astype(jnp.result_type(leaf)))
        start += size
    return jax.tree.unflatten(treedef, noise)


def batched_cotangent_norm(theta_prime: PyTree) -> jax.Array:
    """``tree_norm`` of a params cotangent computed under ``jax.vmap``, laid out for XLA
    (see :func:`cotangent_sum_of_squares`)."""
    return jnp.sqrt(sum(cotangent_sum_of_squares(a, True) for a in jax.tree.leaves(theta_prime)))


def cotangent_sum_of_squares(leaf: jax.Array, batched: bool) -> jax.Array:
    """The sum of squares of one params-cotangent leaf, laid out for XLA.

    Under vmap (``batched``), a dense kernel's cotangent is a batched outer product that
    JAX's transpose of ``dot_general`` writes as (out, in) and then transposes to the
    kernel's (in, out). Summing squares over the last two axes swapped (a sum does not
    depend on the order) lets XLA cancel the two transposes and reduce the outer product
    in the layout it was computed in; otherwise XLA's CPU backend first copies the
    squares into the kernel's layout (see docs/performance.md). Outside vmap there is no
    such transpose, and the plain sum is the one to use.
    """
    if batched and leaf.ndim >= 2:
        leaf = jnp.swapaxes(leaf, -1, -2)
    return sum_of_squares(leaf)


def swap_leading_axes(tree: PyTree) -> PyTree:
    """Swaps axes 0 and 1 of every leaf (time-major <-> stream-major)."""
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def first(tree: PyTree) -> PyTree:
    """Index 0 of the leading axis of every leaf."""
    return jax.tree.map(lambda a: a[0], tree)
