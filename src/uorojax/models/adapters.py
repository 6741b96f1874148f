"""Adapters: a model over one flat parameter vector, and ``flax.nnx`` and Equinox
modules as a :class:`~uorojax.Model` that carries its inferred structure.

``from_nnx`` and ``from_equinox`` take a built module or a function that builds one from
a seed (``make(rngs=nnx.Rngs(key))``, ``make(key=key)``: a ``functools.partial`` of the
module's class is one), the module's initial state, and, to infer the structure, an
example input. The module is called ``module(state, x)`` and returns ``(state, output)``
(``call="state_x"``), or is called ``module(x, state)`` (``call="x_state"``, the order of
``equinox.nn`` cells); a module that returns only the new state (``eqx.nn.GRUCell``) has
it as its output too, recognised by its tree (the state's), never by the module's type or
its leaves' names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax

from uorojax import checks
from uorojax.models.model import Model

PyTree = Any
CALLS = ("state_x", "x_state")


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


def from_nnx(
    module: Any,
    initial_state: PyTree,
    *,
    example_x: Any = None,
    call: str = "state_x",
) -> Model:
    """Adapts a ``flax.nnx`` module as a :class:`~uorojax.Model` with its structure.

    The module is split into its static graph, its ``nnx.Param`` leaves (the params that
    estimators differentiate) and any other variables (held fixed), then merged back on
    every step, so ``model.apply`` is pure.

    Args:
      module: an nnx module, or a function that builds one from ``rngs`` (an
        ``nnx.Rngs``; a ``functools.partial`` of the module's class is one).
      initial_state: the module's initial recurrent state.
      example_x: an input of one step; with it, ``model.structure`` is inferred
        (:func:`~uorojax.infer_structure`; None where inference refuses the model, which
        ``uorojax.infer_structure`` then explains).
      call: ``"state_x"`` for ``module(state, x)``, ``"x_state"`` for ``module(x,
        state)``; the module returns ``(state, output)`` or the new state alone (then
        also the output).

    Returns:
      A :class:`~uorojax.Model`: ``init(key, x) -> (params, state0)`` builds the module
      from ``key`` when ``module`` is a function, and gives the built module's params
      (whatever the key) when it is a module; ``apply``; ``structure``; ``example_x``.

    Example::

      model = uorojax.from_nnx(functools.partial(nnx.GRUCell, 3, 8), jnp.zeros(8),
                               example_x=jnp.zeros(3))
      params, h0 = model.init(jax.random.key(0), jnp.zeros(3))
    """
    from flax import nnx

    def split(built):
        return nnx.split(built, nnx.Param, ...)

    built = module if isinstance(module, nnx.Module) else None
    make = _factory("from_nnx", module, built, "rngs", lambda key: nnx.Rngs(key))
    graphdef, params0, rest = split(built if built is not None else make(jax.random.key(0)))
    step = _step(call, "from_nnx")

    def apply_fn(params, state, x):
        return step(nnx.merge(graphdef, params, rest), state, x)

    def init(key, example=None):
        del example
        return (params0 if built is not None else split(make(key))[1]), initial_state

    return _model(init, apply_fn, params0, initial_state, example_x)


def from_equinox(
    module: Any,
    initial_state: PyTree,
    *,
    example_x: Any = None,
    call: str = "state_x",
) -> Model:
    """Adapts an Equinox module as a :class:`~uorojax.Model` with its structure.

    The module is partitioned into its floating-point arrays (the params that
    estimators differentiate) and everything else (held fixed), then combined back on
    every step, so ``model.apply`` is pure. Needs ``equinox`` installed.

    Args:
      module: an ``equinox.Module``, or a function that builds one from ``key`` (a
        ``functools.partial`` of the module's class is one).
      initial_state: the module's initial recurrent state.
      example_x: an input of one step; with it, ``model.structure`` is inferred (None
        where inference refuses the model).
      call: ``"state_x"`` for ``module(state, x)``, ``"x_state"`` for ``module(x,
        state)`` (``eqx.nn.GRUCell``, ``eqx.nn.LSTMCell``); the module returns
        ``(state, output)`` or the new state alone (then also the output).

    Returns:
      A :class:`~uorojax.Model` (see :func:`from_nnx`); its params are module-shaped.

    Example::

      model = uorojax.from_equinox(functools.partial(eqx.nn.GRUCell, 3, 8), jnp.zeros(8),
                                   example_x=jnp.zeros(3), call="x_state")
      params, h0 = model.init(jax.random.key(0), jnp.zeros(3))
    """
    import equinox as eqx

    def split(built):
        return eqx.partition(built, eqx.is_inexact_array)

    built = module if isinstance(module, eqx.Module) else None
    make = _factory("from_equinox", module, built, "key", lambda key: key)
    params0, static = split(built if built is not None else make(jax.random.key(0)))
    step = _step(call, "from_equinox")

    def apply_fn(params, state, x):
        return step(eqx.combine(params, static), state, x)

    def init(key, example=None):
        del example
        return (params0 if built is not None else split(make(key))[0]), initial_state

    return _model(init, apply_fn, params0, initial_state, example_x)


def _factory(who: str, module, built, name: str, seed: Callable) -> Callable:
    """``key -> module`` for a module-building function (None for a built module); the
    seed is passed as the keyword ``name`` when the function takes it, else first."""
    if built is not None:
        return None
    if not callable(module):
        raise checks.ConfigError(
            f"{who}: module must be a module or a function that builds one from {name}, got "
            f"{type(module).__name__}"
        )
    try:
        parameters = inspect.signature(module).parameters.values()
    except (TypeError, ValueError):
        parameters = ()
    by_name = any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)
    if by_name:
        return lambda key: module(**{name: seed(key)})
    return lambda key: module(seed(key))


def _step(call: str, who: str) -> Callable:
    """``(module, state, x) -> (new_state, output)`` for the call convention."""
    checks.one_of(f"{who}: call", call, CALLS)

    def step(module, state, x):
        result = module(state, x) if call == "state_x" else module(x, state)
        tree = jax.tree.structure(state)
        if isinstance(result, tuple) and len(result) == 2:
            if jax.tree.structure(result[0]) == tree:
                return result
        if jax.tree.structure(result) == tree:
            return result, result
        raise checks.ConfigError(
            f"{who}: the module returned {jax.tree.structure(result)}, neither (state, "
            f"output) nor a new state like the initial one ({tree}); call={call!r} calls "
            f"it {'module(state, x)' if call == 'state_x' else 'module(x, state)'}"
        )

    return step


def _model(init, apply_fn, params, state, example_x) -> Model:
    """The model, its structure inferred from ``example_x`` where inference succeeds."""
    from uorojax.models.structure import infer_structure

    structure = None
    if example_x is not None:
        try:
            structure = infer_structure(apply_fn, params, state, example_x)
        except checks.ConfigError:
            structure = None
    return Model(init, apply_fn, structure, example_x)
