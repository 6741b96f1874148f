"""The optimizer on one flat parameter vector: a step's optimizer, guard and metrics in
a handful of kernels, whatever the number of parameter leaves.

An optax transformation applied leaf by leaf costs a few kernels per leaf each step
(Adam's moments and update, the guard's finiteness tests, the gradient's norm); applied
to the params raveled into one vector (``jax.flatten_util.ravel_pytree``) it costs a few
kernels in all. For an elementwise transformation (SGD, Adam, RMSProp, schedules,
``clip``, ``clip_by_global_norm`` ...) both give the same updates. A transformation that
depends on the tree (``optax.masked`` or ``optax.multi_transform`` with a mask or
labels tree, LAMB's per-leaf trust ratio, Adafactor's factored moments of matrices) does
not: :func:`flattens` tells them apart by a probe, and those keep the per-leaf path.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from uorojax import checks

PyTree = Any


def ravel(tree: PyTree) -> jax.Array:
    """The inexact leaves of ``tree`` as one flat vector (``ravel_pytree``'s order)."""
    return ravel_pytree(tree)[0]


def unravel_like(flat: jax.Array, like: PyTree) -> PyTree:
    """``flat`` split back into the structure, shapes and dtypes of ``like``."""
    return ravel_pytree(like)[1](flat)


def check_flatten(flatten: Any) -> Any:
    """``flatten`` if it is ``"auto"``, True or False; ConfigError otherwise."""
    if flatten is True or flatten is False or (isinstance(flatten, str) and flatten == "auto"):
        return flatten
    raise checks.ConfigError(f"flatten must be 'auto', True or False, got {flatten!r}")


def flattens(
    optimizer: optax.GradientTransformation, params: PyTree, flatten: Any = "auto"
) -> bool:
    """Whether the optimizer runs on the raveled params (see the module docstring).

    ``flatten=True`` or ``False`` decides; ``"auto"`` flattens when every params leaf
    has one floating dtype and a probe, two updates on values drawn for the params'
    shapes, gives the same updates flat as leaf by leaf (to a few float32 ulps): true
    of elementwise transformations, false of those that depend on the tree. The probe
    needs only shapes and dtypes (it runs concretely inside a trace) and runs once per
    optimizer and params layout.

    Args:
      optimizer: an optax transformation.
      params: the params, or anything with their shapes and dtypes.
      flatten: ``"auto"``, True or False.

    Returns:
      True to run the optimizer on one flat vector.

    Example::

      flattens(optax.adam(1e-3), params)            # True
      flattens(optax.lamb(1e-3), params)            # False: per-leaf trust ratios
    """
    if isinstance(check_flatten(flatten), str):
        leaves = jax.tree.leaves(params)
        layout = (
            jax.tree.structure(params),
            tuple((tuple(jnp.shape(a)), jnp.result_type(a).name) for a in leaves),
        )
        try:
            hash(optimizer)
        except TypeError:  # not cacheable: probe every time
            return _probe.__wrapped__(optimizer, layout)
        return _probe(optimizer, layout)
    return bool(flatten)


@functools.lru_cache(maxsize=64)
def _probe(optimizer, layout) -> bool:
    treedef, shapes = layout
    dtypes = {dtype for _, dtype in shapes}
    if len(dtypes) != 1 or not jnp.issubdtype(jnp.dtype(next(iter(dtypes))), jnp.floating):
        return False
    with checks.concrete_evaluation():
        rng = np.random.default_rng(0)

        def draw():  # leaf i drawn at scale i + 1: per-leaf norms differ from the global one
            return treedef.unflatten(
                [
                    jnp.asarray((i + 1) * rng.standard_normal(shape), dtype)
                    for i, (shape, dtype) in enumerate(shapes)
                ]
            )

        params, grads = draw(), [draw(), draw()]
        tol = float(jnp.sqrt(jnp.finfo(jnp.dtype(shapes[0][1])).eps))
        try:
            state, flat_state = optimizer.init(params), optimizer.init(ravel(params))
            for g in grads:
                updates, state = optimizer.update(g, state, params)
                flat, flat_state = optimizer.update(ravel(g), flat_state, ravel(params))
            expected = np.asarray(ravel(updates), np.float64)
            got = np.asarray(flat, np.float64)
        except Exception:  # noqa: BLE001 - a transformation that needs the tree
            return False
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float64).tiny)
    return got.shape == expected.shape and bool(np.all(np.abs(got - expected) <= tol * scale))


def init(optimizer: optax.GradientTransformation, params: PyTree, flat: bool) -> PyTree:
    """The optimizer's state for ``params``, raveled when ``flat``.

    Example::

      opt_state = init(tx, params, flattens(tx, params))
    """
    return optimizer.init(ravel(params) if flat else params)


def flat_update(
    optimizer: optax.GradientTransformationExtraArgs,
    grads: PyTree,
    opt_state: PyTree,
    params: PyTree,
    **extra_args: Any,
) -> tuple[jax.Array, jax.Array, jax.Array, PyTree]:
    """One optimizer update on the raveled gradient and params.

    Args:
      optimizer: an optax transformation whose state came from :func:`init` with
        ``flat=True``.
      grads, params: trees of the params' structure.
      opt_state: the optimizer's flat state.
      **extra_args: passed to ``optimizer.update`` (``ready`` for ``when_ready``).

    Returns:
      ``(grads, params, updates, opt_state)``, the first three flat vectors.

    Example::

      g, p, u, opt_state = flat_update(tx, grads, opt_state, params)
      params = unravel_like(optax.apply_updates(p, u), params)
    """
    g, p = ravel(grads), ravel(params)
    updates, opt_state = optimizer.update(g, opt_state, p, **extra_args)
    return g, p, updates, opt_state


def poisoned(values: jax.Array, grads: jax.Array) -> jax.Array:
    """``values + 0 · grads``: ``values``, made NaN wherever ``grads`` is not finite
    (``0 · inf`` and ``0 · NaN`` are NaN), so that one finiteness test of the new params
    tests the gradient too, in one reduction. (A test of the raveled gradient alone is
    split back into one reduction per leaf by XLA's simplifier.)

    Example::

      finite = uorojax.tree.tree_finite(poisoned(new_params, grads))
    """
    return values + jnp.zeros((), grads.dtype) * grads
