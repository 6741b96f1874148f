"""Input validation: clear errors that name the problem, raised before any compute.

Every check here runs at construction time or while JAX traces the first call, so
it costs nothing inside a compiled loop. Errors are subclasses of the standard
``ValueError`` / ``TypeError`` so existing ``except`` clauses keep working.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_evaluation() -> contextlib.AbstractContextManager:
    """A context in which JAX operations on concrete values run, even inside a trace.

    Inside ``jax.jit`` (an estimator's ``init_state`` traced with the train state), it is
    ``jax.ensure_compile_time_eval()``. Outside a trace it is nothing: values are concrete
    already, and compile-time evaluation would also run every constant operation of a
    model traced inside it op by op (flax's shape check of each initializer, one
    compilation each).
    """
    if isinstance(jnp.zeros(()), jax.core.Tracer):
        return jax.ensure_compile_time_eval()
    return contextlib.nullcontext()


class ModelError(ValueError):
    """A model function does not follow the ``(state, output)`` protocol."""


class ConfigError(ValueError):
    """A constructor argument or config field is out of range or unknown."""


class NonFiniteError(FloatingPointError):
    """A non-finite loss, gradient or tangent was met during training.

    Attributes:
      step: the global step index (0-based) of the first non-finite value.
      train_state: the last finite train state, from just before that step.
    """

    def __init__(self, message: str, step: int, train_state: Any = None):
        super().__init__(message)
        self.step = step
        self.train_state = train_state


def positive_int(name: str, value: Any) -> int:
    """Returns ``value`` as an int, or raises ConfigError unless it is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return int(value)


def non_negative_float(name: str, value: Any) -> float:
    """Returns ``value`` as a float, or raises ConfigError unless finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a non-negative float, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ConfigError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Raises ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    return value


def known_config_field(name: str, fields) -> None:
    """A config field's name must be one of ``fields``; the error suggests the nearest."""
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config field {name!r}{hint}")


def check_callable(name: str, fn: Any) -> Callable:
    """Raises TypeError unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    return fn


def check_params(params: Any) -> None:
    """Raises TypeError if a parameter leaf is not floating point (it cannot be
    differentiated), ConfigError if one is complex (:func:`check_real`)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"params leaf {jax.tree_util.keystr(path)} has dtype {dtype}; "
                "parameters must be floating point to be differentiated"
            )
    check_real("params", params)


def check_real(name: str, tree: Any, who: str = "") -> None:
    """Raises ConfigError if a leaf of ``tree`` is complex.

    The estimators' Jacobians, tangents, norms and random signs are real: a complex leaf
    would have its derivatives conjugated or its imaginary part dropped somewhere. A
    complex quantity is held as two real leaves, its real and imaginary parts, as
    :class:`~uorojax.LRUCell` holds its state and parameters.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            prefix = f"{who}: " if who else ""
            raise ConfigError(
                f"{prefix}{name}{_leaf(path)} is complex ({dtype}); the estimators work on "
                "real arrays: keep its real and imaginary parts as two real leaves (as "
                "uorojax.LRUCell does)"
            )


def check_init(params: Any, state0: Any, who: str = "") -> None:
    """What every estimator's ``init_state`` checks: float, real params and a real state
    (errors name ``who``)."""
    check_params(params)
    check_real("state", state0, who)


def check_state_has_entries(state0: Any) -> None:
    """Raises ConfigError if a leaf of the state has no entries: a batch of zero streams
    (a leading stream axis of size 0), or a model without units, has nothing to learn
    from, and a trainer run on it would silently do nothing."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(state0):
        if jnp.size(leaf) == 0:
            raise ConfigError(
                f"state{_leaf(path)} has shape {list(jnp.shape(leaf))}, no entries: zero "
                "streams (or a model without units) give no gradient; give the trainer at "
                "least one stream"
            )


def check_key(key: Any) -> None:
    """Raises TypeError unless ``key`` is a JAX PRNG key (typed, or a raw uint32[2])."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return
    if dtype == jnp.uint32 and getattr(key, "shape", None) == (2,):
        return
    raise TypeError(
        "key must be a JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
        f"got {type(key).__name__} with dtype {dtype} and shape {getattr(key, 'shape', None)}"
    )


def _leaf(path) -> str:
    """' leaf [...]' for a leaf inside a pytree; '' for a bare array."""
    key = jax.tree_util.keystr(path)
    return f" leaf {key}" if key else ""


def _describe(tree: Any) -> str:
    return str(jax.tree.map(lambda a: f"{jnp.result_type(a)}{list(jnp.shape(a))}", tree))


def call_model(apply_fn: Callable, params: Any, state: Any, x: Any) -> tuple[Any, Any]:
    """Calls ``apply_fn(params, state, x)`` and checks it returns ``(new_state, output)``.

    The new state must have the same tree structure, shapes and dtypes as ``state``.
    Raises ModelError naming what differs. Works on tracers: the checks are static.
    """
    try:
        result = apply_fn(params, state, x)
    except (TypeError, ValueError) as err:
        if isinstance(err, ModelError):
            raise
        raise ModelError(
            f"apply_fn(params, state, x) failed for x of {_describe(x)} and state of "
            f"{_describe(state)}: {err}"
        ) from err
    if not isinstance(result, (tuple, list)):
        raise ModelError(
            "apply_fn must return a pair (new_state, output), got a single value "
            f"{_describe(result)}"
        )
    if len(result) != 2:
        raise ModelError(
            "apply_fn must return a pair (new_state, output), got "
            f"{type(result).__name__} of length {len(result)}"
        )
    new_state, output = result
    check_same_structure("new_state returned by apply_fn", new_state, "state", state)
    return new_state, output


def check_same_structure(name: str, tree: Any, ref_name: str, ref: Any) -> None:
    """Raises ModelError unless ``tree`` matches ``ref`` in structure, shapes and dtypes."""
    tree_def, ref_def = jax.tree.structure(tree), jax.tree.structure(ref)
    if tree_def != ref_def:
        raise ModelError(f"{name} has structure {tree_def}, but {ref_name} has {ref_def}")
    for path, a, b in zip(
        jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(tree), jax.tree.leaves(ref)
    ):
        if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
            raise ModelError(
                f"{name}{_leaf(path[0])} is "
                f"{jnp.result_type(a)}{list(jnp.shape(a))}, but {ref_name} has "
                f"{jnp.result_type(b)}{list(jnp.shape(b))}: the state must keep its "
                "structure, shape and dtype from step to step"
            )


def call_loss(loss_fn: Callable, output: Any, y: Any) -> jax.Array:
    """Calls ``loss_fn(output, y)`` and checks the result is a real scalar."""
    try:
        loss = loss_fn(output, y)
    except (TypeError, ValueError) as err:
        raise ModelError(
            f"loss_fn(output, y) failed for output of {_describe(output)} and y of "
            f"{_describe(y)}: {err}"
        ) from err
    if jnp.shape(loss) != () or not jnp.issubdtype(jnp.result_type(loss), jnp.floating):
        raise ModelError(
            "loss_fn must return a real scalar, got "
            f"{jnp.result_type(loss)}{list(jnp.shape(loss))} (output is {_describe(output)}, "
            f"y is {_describe(y)})"
        )
    return loss


def check_leading_axis(name: str, tree: Any, size: int, what: str) -> None:
    """Raises ValueError unless every leaf of ``tree`` has leading axis ``size``."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != size:
            raise ValueError(
                f"{name}{_leaf(path)} has shape {list(shape)}; "
                f"expected a leading {what} axis of size {size}"
            )
