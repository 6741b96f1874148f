r"""A VJP and the norm of its result, without reading the result back.

UORO needs ``θ' = νᵀ ∂F/∂θ`` and its norm ``‖θ'‖`` at every step. For one stream a dense
kernel's entry of ``θ'`` is an outer product, ``a ⊗ δ`` (the layer's input and the
cotangent of its pre-activation), whose norm is ``‖a‖ ‖δ‖``: computed from the factors,
the norm does not read ``θ'`` (docs/performance.md, "Norms without reading θ'", says
what that saves).

:func:`pullback_and_norm` traces the pullback to a jaxpr and evaluates it equation by
equation, as ``jax.core.eval_jaxpr`` does (same primitives, same values), while keeping
for each value, where one follows exactly from its inputs, either its two factors or an
expression of its squared norm:

* an outer product (``dot_general`` with no contracting and no batch dimensions) has
  factors ``a`` and ``b``, and ``‖a ⊗ b‖² = ‖a‖² ‖b‖²``;
* a transpose, slice or split of a factored value is factored (the slice falls on one
  factor: this is how a fused gate kernel's cotangent is cut into the gates' kernels);
* a reshape, copy, negation or float conversion keeps the norm; a product with, or a
  quotient by, a scalar ``c`` scales it by ``c²``; a concatenation sums its parts';
* a ``jax.jit`` call is evaluated inline, so the rules see through it.

Any other value (a sum of two outer products, for a weight used twice; a reduction over
a batch) has its squared norm computed from its entries, as before. The rules are
identities, so the norm is exact up to floating-point rounding; the tests check it
against ``tree_norm`` on every model the library builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal
from jax.extend.core.primitives import jit_p

from uorojax.tree import cotangent_sum_of_squares, sum_of_squares

PyTree = Any


class Factors(NamedTuple):
    """A value equal, up to sign, to ``c · transpose(lhs ⊗ rhs, perm)`` with
    ``c² = squared_scale``: its axis ``i`` is axis ``perm[i]`` of ``lhs ⊗ rhs``."""

    lhs: jax.Array
    rhs: jax.Array
    perm: tuple[int, ...]
    squared_scale: Any = 1.0


class Norm(NamedTuple):
    """A value's squared norm, as an expression evaluated only if it is asked for."""

    squared: Callable[[], jax.Array]


Record = Factors | Norm | None

_SAME_VALUE_NORM = frozenset({"copy", "copy_p", "neg", "convert_element_type"})

_RESHAPES = frozenset({"reshape", "squeeze", "expand_dims"})


def pullback_and_norm(
    fn: Callable, primal: PyTree, cotangent: PyTree, *, batched: bool = False
) -> tuple[PyTree, jax.Array]:
    r"""``vjp(fn, primal)(cotangent)`` and its Euclidean norm over the whole pytree.

    Equal to ``(g, tree_norm(g))`` with ``g = jax.vjp(fn, primal)[1](cotangent)[0]``, up
    to rounding; outer-product leaves (dense kernels, one stream) get their norm from
    their two factors, so nothing but the caller's own use reads them (see the module
    docstring). Works under ``jax.jit`` and ``jax.vmap``.

    Args:
      fn: a function of ``primal`` alone (close over anything else).
      primal: the point of the VJP (a pytree of float arrays).
      cotangent: shaped like ``fn(primal)``.
      batched: the caller runs this under ``jax.vmap``; only changes how the leaves
        without factors are summed (:func:`~uorojax.tree.cotangent_sum_of_squares`).

    Returns:
      ``(g, ‖g‖)``, ``g`` shaped like ``primal``.

    Example::

      theta_prime, norm = pullback_and_norm(lambda p: apply_fn(p, s, x)[0], params, nu)
    """
    cotangent_of_primal, squared = pullback_and_squared_norms(
        fn, primal, cotangent, batched=batched
    )
    return cotangent_of_primal, jnp.sqrt(sum(jax.tree.leaves(squared)))


def pullback_and_squared_norms(
    fn: Callable, primal: PyTree, cotangent: PyTree, *, batched: bool = False
) -> tuple[PyTree, PyTree]:
    """:func:`pullback_and_norm` with the squared norm of each leaf instead of the
    total: ``(g, squared)``, ``squared`` shaped like ``primal`` with a scalar a leaf."""

    def pullback(primal, cotangent):
        return jax.vjp(fn, primal)[1](cotangent)[0]

    closed, out_shape = jax.make_jaxpr(pullback, return_shape=True)(primal, cotangent)
    flat_in = jax.tree.leaves((primal, cotangent))
    values, records = evaluate(closed.jaxpr, closed.consts, flat_in, [None] * len(flat_in))
    squared = [
        squared_norm(record, value) if record is not None
        else cotangent_sum_of_squares(value, batched)
        for value, record in zip(values, records)
    ]  # fmt: skip
    treedef = jax.tree.structure(out_shape)
    return jax.tree.unflatten(treedef, values), jax.tree.unflatten(treedef, squared)


def squared_norm(record: Record, value: jax.Array) -> jax.Array:
    """The squared norm of ``value``, from its record where it has one."""
    dtype = jnp.result_type(value)
    if isinstance(record, Factors):
        product = sum_of_squares(record.lhs) * sum_of_squares(record.rhs)
        return (record.squared_scale * product).astype(dtype)
    if isinstance(record, Norm):
        return record.squared().astype(dtype)
    return sum_of_squares(value).astype(dtype)


def evaluate(jaxpr, consts, args, arg_records) -> tuple[list, list[Record]]:
    """Evaluates ``jaxpr`` like ``jax.core.eval_jaxpr``; returns its outputs and their
    records (see the module docstring)."""
    env: dict = {}
    records: dict = {}

    def read(var):
        return var.val if isinstance(var, Literal) else env[var]

    def read_record(var):
        return None if isinstance(var, Literal) else records.get(var)

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = value
    for var, value, record in zip(jaxpr.invars, args, arg_records):
        env[var], records[var] = value, record
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        in_records = [read_record(v) for v in eqn.invars]
        if eqn.primitive is jit_p:  # inline the call, so the rules see through it
            inner = eqn.params["jaxpr"]
            outs, out_records = evaluate(inner.jaxpr, inner.consts, invals, in_records)
        else:
            with eqn.ctx.manager:
                ans = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = ans if eqn.primitive.multiple_results else [ans]
            out_records = rule(eqn, invals, in_records, outs)
        for var, value, record in zip(eqn.outvars, outs, out_records):
            env[var] = value
            if record is not None:
                records[var] = record
    return [read(v) for v in jaxpr.outvars], [read_record(v) for v in jaxpr.outvars]


def rule(eqn, invals, in_records, outs) -> list[Record]:
    """The records of one equation's outputs from its inputs', where exact."""
    name, params = eqn.primitive.name, eqn.params
    none = [None] * len(outs)
    if not all(jnp.issubdtype(jnp.result_type(out), jnp.inexact) for out in outs):
        return none
    if name == "dot_general":
        contract, batch = params["dimension_numbers"]
        if any(len(dims) for dims in (*contract, *batch)):
            return none
        lhs, rhs = invals
        return [Factors(lhs, rhs, tuple(range(jnp.ndim(lhs) + jnp.ndim(rhs))))]
    if name == "concatenate":
        if all(r is None for r in in_records):
            return none
        parts = list(zip(in_records, invals))
        return [Norm(lambda: sum(squared_norm(r, v) for r, v in parts))]
    if name in ("mul", "div"):
        return [scaled(name, invals, in_records, jnp.result_type(outs[0]))]
    record = in_records[0]
    if record is None:
        return none
    if name in _SAME_VALUE_NORM:
        return [record]
    if name in _RESHAPES:
        return [as_norm(record, invals[0])]
    if name == "transpose":
        if isinstance(record, Norm):
            return [record]
        return [record._replace(perm=tuple(record.perm[p] for p in params["permutation"]))]
    if name == "slice" and isinstance(record, Factors):
        if params["strides"] is not None and any(s != 1 for s in params["strides"]):
            return none
        bounds = zip(params["start_indices"], params["limit_indices"])
        return [sliced(record, invals[0], dict(enumerate(bounds)))]
    if name == "split" and isinstance(record, Factors):
        axis, start, pieces = params["axis"], 0, []
        for size in params["sizes"]:
            pieces.append(sliced(record, invals[0], {axis: (start, start + size)}))
            start += size
        return pieces
    return none


def scaled(name: str, invals, in_records, dtype) -> Record:
    """The record of ``value * c``, ``c * value`` or ``value / c`` for a scalar ``c``."""
    tracked = [i for i, r in enumerate(in_records) if r is not None]
    if len(tracked) != 1 or (name == "div" and tracked[0] != 0):
        return None
    record, other = in_records[tracked[0]], invals[1 - tracked[0]]
    if jnp.ndim(other) != 0:
        return None
    factor = jnp.square(jnp.asarray(other).astype(dtype))
    if name == "div":
        factor = 1 / factor
    if isinstance(record, Factors):
        return record._replace(squared_scale=record.squared_scale * factor)
    return Norm(lambda: record.squared() * factor)


def as_norm(record: Record, value: jax.Array) -> Norm:
    return Norm(lambda: squared_norm(record, value))


def sliced(record: Factors, value: jax.Array, bounds: dict) -> Factors:
    """The factors of ``value[bounds]`` (``{axis: (start, limit)}``): each sliced axis
    is an axis of one factor, which is sliced in its place."""
    lhs, rhs = record.lhs, record.rhs
    for axis, (start, limit) in bounds.items():
        if (start, limit) == (0, jnp.shape(value)[axis]):
            continue
        source = record.perm[axis]
        if source < jnp.ndim(lhs):
            lhs = jax.lax.slice_in_dim(lhs, start, limit, axis=source)
        else:
            rhs = jax.lax.slice_in_dim(rhs, start, limit, axis=source - jnp.ndim(lhs))
    return record._replace(lhs=lhs, rhs=rhs)


__all__ = ["pullback_and_norm", "pullback_and_squared_norms"]
