"""Adapters: a model over one flat parameter vector, and ``flax.nnx`` and Equinox
modules as ``apply_fn(params, state, x)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

PyTree = Any


def ravel_params(apply_fn: Callable, params: PyTree) -> tuple[Callable, jax.Array, Callable]:
    """The same model over one flat parameter vector instead of a tree.

    Every estimator and optimizer then works on one buffer: the tangent update, the
    norms, the finiteness test and the optimizer step are one kernel each instead of one
    per parameter leaf (a flax LSTM has 14 leaves). The model reads its leaves as slices
    of the vector; parameter cotangents are concatenated into it. See
    docs/performance.md for when that pays (shared tangents, small steps, GPUs) and when
    it does not (per-stream tangents on a CPU, where the concatenation of B cotangents
    costs more than the kernels it saves). SnAp-1 and KF-RTRL read the params' tree and
    need the tree form.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      params: the parameter tree.

    Returns:
      ``(flat_apply_fn, flat_params, unravel)``: ``unravel(flat_params)`` gives the tree
      back (for checkpoints, metrics and the final model).

    Example::

      apply_flat, theta, unravel = uorojax.ravel_params(model.apply, params)
      est = uorojax.uoro(*uorojax.as_one_system(apply_flat, loss_fn))
    """
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)

    def flat_apply(flat_params, state, x):
        return apply_fn(unravel(flat_params), state, x)

    return flat_apply, flat, unravel


def from_nnx(module: Any, initial_state: PyTree) -> tuple[PyTree, PyTree, Callable]:
    """Adapts a ``flax.nnx`` module whose ``__call__(state, x)`` returns ``(state, output)``.

    The module is split into its static graph, its ``nnx.Param`` leaves (the params that
    estimators differentiate) and any other variables (held fixed), then merged back on
    every step, so the returned ``apply_fn`` is pure.

    Args:
      module: an nnx module, for example an ``nnx.GRUCell`` or a user module that wraps
        a cell and a readout.
      initial_state: the module's initial recurrent state (``cell.initialize_carry``).

    Returns:
      ``(params, state0, apply_fn)``.

    Example::

      cell = nnx.GRUCell(3, 8, rngs=nnx.Rngs(0))
      params, h0, apply_fn = uorojax.from_nnx(cell, cell.initialize_carry((3,), nnx.Rngs(1)))
    """
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply_fn(params, state, x):
        return nnx.merge(graphdef, params, rest)(state, x)

    return params, initial_state, apply_fn


def from_equinox(module: Any, initial_state: PyTree) -> tuple[PyTree, PyTree, Callable]:
    """Adapts an Equinox module whose ``__call__(state, x)`` returns ``(state, output)``.

    The module is partitioned into its floating-point arrays (the params that
    estimators differentiate) and everything else (held fixed), then combined back on
    every step, so the returned ``apply_fn`` is pure. Needs ``equinox`` installed.

    Args:
      module: an ``equinox.Module``.
      initial_state: the module's initial recurrent state.

    Returns:
      ``(params, state0, apply_fn)``; ``params`` is a module-shaped pytree.

    Example::

      params, h0, apply_fn = uorojax.from_equinox(MyRNN(key), jnp.zeros(8))
    """
    import equinox as eqx

    params, static = eqx.partition(module, eqx.is_inexact_array)

    def apply_fn(params, state, x):
        return eqx.combine(params, static)(state, x)

    return params, initial_state, apply_fn
