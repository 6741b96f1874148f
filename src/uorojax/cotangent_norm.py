r"""A VJP and the norm of its result, without reading the result back.

UORO needs ``θ' = νᵀ ∂F/∂θ`` and its norm ``‖θ'‖`` at every step. For one stream a dense
kernel's entry of ``θ'`` is an outer product, ``a ⊗ δ`` (the layer's input and the
cotangent of its pre-activation), whose norm is ``‖a‖ ‖δ‖``. Computed from ``θ'``
itself, the norm makes XLA write every stream's outer products to memory and read them
back (two of the per-stream step's passes over ``B·|Θ|`` floats); computed from the
factors, it leaves ``θ'`` with one use, the tangent update, into which XLA fuses it.

:func:`pullback_and_norm` traces the pullback to a jaxpr and evaluates it equation by
equation, as ``jax.core.eval_jaxpr`` does (same primitives, same values), while keeping
for each value a cheap expression of its squared norm where one follows exactly from
its inputs:

* an outer product (``dot_general`` with no contracting and no batch dimensions):
  ``‖a ⊗ b‖² = ‖a‖² ‖b‖²``;
* a transpose, reshape, squeeze, expand_dims, copy, negation or float conversion:
  unchanged;
* a product with, or a quotient by, a scalar ``c``: times ``c²`` (divided by ``c²``);
* a concatenation: the sum of its parts';
* a ``jax.jit`` call: its body is evaluated inline, so the rules see through it.

Any other value (a sum of two outer products, for a weight used twice; a reduction over
a batch) has its squared norm computed from its entries, as before. The rules are
identities, so the norm is exact up to floating-point rounding; the tests check it
against ``tree_norm`` on every model the library builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Literal
from jax.extend.core.primitives import jit_p

from uorojax.tree import cotangent_sum_of_squares

PyTree = Any
SquaredNorm = Callable[[], jax.Array]  # evaluated only where a norm is asked for

_SAME_NORM = frozenset({"transpose", "reshape", "squeeze", "expand_dims", "copy", "copy_p", "neg"})


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

    def pullback(primal, cotangent):
        return jax.vjp(fn, primal)[1](cotangent)[0]

    closed, out_shape = jax.make_jaxpr(pullback, return_shape=True)(primal, cotangent)
    flat_in = jax.tree.leaves((primal, cotangent))
    values, squared = evaluate(closed.jaxpr, closed.consts, flat_in, [None] * len(flat_in))
    total = sum(
        sq() if sq is not None else cotangent_sum_of_squares(v, batched)
        for v, sq in zip(values, squared)
    )
    return jax.tree.unflatten(jax.tree.structure(out_shape), values), jnp.sqrt(total)


def sum_of_squares(value: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(value))


def evaluate(jaxpr, consts, args, args_squared) -> tuple[list, list[SquaredNorm | None]]:
    """Evaluates ``jaxpr`` like ``jax.core.eval_jaxpr``; returns its outputs and, for
    each, a squared-norm expression or None (see the module docstring)."""
    env: dict = {}
    norms: dict = {}

    def read(var):
        return var.val if isinstance(var, Literal) else env[var]

    def read_norm(var):
        return None if isinstance(var, Literal) else norms.get(var)

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = value
    for var, value, sq in zip(jaxpr.invars, args, args_squared):
        env[var], norms[var] = value, sq
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        in_norms = [read_norm(v) for v in eqn.invars]
        if eqn.primitive is jit_p:  # inline the call, so the rules see through it
            inner = eqn.params["jaxpr"]
            outs, out_norms = evaluate(inner.jaxpr, inner.consts, invals, in_norms)
        else:
            with eqn.ctx.manager:
                ans = eqn.primitive.bind(*invals, **bind_params(eqn))
            outs = ans if eqn.primitive.multiple_results else [ans]
            out_norms = [None] * len(outs)
            if not eqn.primitive.multiple_results:
                out_norms = [rule(eqn, invals, in_norms, outs[0])]
        for var, value, sq in zip(eqn.outvars, outs, out_norms):
            env[var] = value
            if sq is not None:
                norms[var] = sq
    return [read(v) for v in jaxpr.outvars], [read_norm(v) for v in jaxpr.outvars]


def bind_params(eqn) -> dict:
    """An equation's params as ``bind`` takes them (``get_bind_params`` returned
    ``(subfuns, params)`` in JAX before 0.7; the primitives met here have no subfuns)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    return params[1] if isinstance(params, tuple) else params


def rule(eqn, invals, in_norms, out) -> SquaredNorm | None:
    """The squared norm of one equation's output from its inputs', where exact."""
    name = eqn.primitive.name
    dtype = jnp.result_type(out)
    if not jnp.issubdtype(dtype, jnp.inexact):
        return None

    def norm_of(i):
        sq = in_norms[i]
        return (
            (lambda: sq().astype(dtype))
            if sq is not None
            else (lambda: sum_of_squares(invals[i]).astype(dtype))
        )

    if name == "dot_general":
        (contract, batch) = eqn.params["dimension_numbers"]
        if any(len(dims) for dims in (*contract, *batch)):
            return None
        lhs, rhs = norm_of(0), norm_of(1)
        return lambda: lhs() * rhs()
    if name == "concatenate":
        if all(sq is None for sq in in_norms):
            return None
        parts = [norm_of(i) for i in range(len(invals))]
        return lambda: sum(part() for part in parts)
    if name in _SAME_NORM or name == "convert_element_type":
        return norm_of(0) if in_norms[0] is not None else None
    if name in ("mul", "div") and len(invals) == 2:
        tracked = [i for i in range(2) if in_norms[i] is not None]
        if not tracked:
            return None
        i = tracked[0]
        other = invals[1 - i]
        if jnp.ndim(other) != 0 or (name == "div" and i == 1):
            return None
        inner = norm_of(i)
        scale = jnp.square(jnp.asarray(other).astype(dtype))
        return (lambda: inner() * scale) if name == "mul" else (lambda: inner() / scale)
    return None


__all__ = ["pullback_and_norm"]
