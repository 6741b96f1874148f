r"""The inferred structure of a model and the evaluator the estimators call.

A :class:`Program` holds the traced step, its layers, every params leaf's role and every
dense use, and re-evaluates the step equation by equation, as ``jax.core.eval_jaxpr``
does (same primitives, same values), with its recurrent uses changed:

* ``recurrent="full"``: the model itself.
* ``recurrent="diagonal"``: each recurrent use ``K @ v`` of layer L is
  ``K @ v_f + diag(K) ⊙ (v − v_f)``, where ``v_f`` is ``v`` evaluated a second time with
  the old state stop-gradiented (params live). Its value is unchanged; its params
  derivatives are exact (``∂(v − v_f)/∂θ = 0`` and ``v − v_f = 0``); its state Jacobian
  within each layer is the unit-diagonal blocks of the true one. No bias is needed and
  no params are copied or reshuffled.
* ``recurrent="none"``: ``K @ v_f``: the recurrent kernels taken out of the state
  Jacobian (e-prop, RFLO, ES-D-RTRL), params derivatives exact.

In the last two modes entries of ``v`` that do not read layer L's old state (the lower
layer's output in ``[x, h] @ K``) keep their dependence on the state.

``probes`` adds a zero array ``ζ`` to each dense use's output: a VJP or JVP in ``ζ``
gives ``∂L/∂z`` and ``∂s/∂z`` of every pre-activation ``z`` per unit, exactly, even at
``h = 0`` without a bias. Probes enter both evaluations, like params.

Everything is traceable under ``jax.jit``, ``jax.vmap``, ``lax.scan``, ``jax.jvp`` and
``jax.vjp``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from uorojax import checks
from uorojax.models.inference.analysis import call_body
from uorojax.models.structure.types import describe_role

MODES = ("full", "diagonal", "none")


class _Run(NamedTuple):
    mode: str
    probes: Any
    frozen: dict | None  # use index -> v_f
    record: dict | None  # use index -> vector, filled while evaluating


def _bind(eqn, invals):
    with eqn.ctx.manager:
        ans = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return ans if eqn.primitive.multiple_results else [ans]


class Program:
    """A model step with its inferred recurrent structure (built by
    :func:`~uorojax.models.inference.infer`).

    Attributes:
      roles: one role per params leaf in flatten order: :class:`Units`,
        :class:`Feedforward` or None.
      layers: the state leaf indices of every layer, bottom first.
      sizes: every layer's number of units.
      state_layers: the layer of every state leaf.
      dense_uses: every :class:`DenseUse`, in jaxpr order.
      param_paths, state_paths: the leaves' paths (``jax.tree_util.keystr``).
    """

    def __init__(self, traced, roles, layers, sizes, dense_uses, pairings):
        self.traced = traced
        self.roles = tuple(roles)
        self.layers = tuple(layers)
        self.sizes = tuple(sizes)
        self.state_layers = tuple(
            next(layer for layer, ks in enumerate(layers) if k in ks)
            for k in range(traced.count("state"))
        )
        self.dense_uses = tuple(dense_uses)
        self.param_paths, self.state_paths = traced.paths[0], traced.paths[1]
        self._pairings = dict(pairings)
        self._marked = {u.path: u.index for u in self.dense_uses}
        self._inline = {u.path[:i] for u in self.dense_uses for i in range(1, len(u.path))}

    # ------------------------------------------------------------------ public

    def apply(self, params, state, x, *, recurrent: str = "full", probes=None):
        """One step, ``(new_state, output)``, with the same values as ``apply_fn``.

        Args:
          params, state, x: as for ``apply_fn``.
          recurrent: ``"full"``, ``"diagonal"`` or ``"none"`` (module docstring).
          probes: None, or one array per dense use shaped like its output (zeros),
            added to it.

        Returns:
          ``(new_state, output)``.

        Example::

          new_state, out = program.apply(params, h, x, recurrent="diagonal")
        """
        checks.one_of("recurrent", recurrent, MODES)
        probes = self._check_probes(probes)
        p, s, xs = self._flatten(params, state, x)
        if recurrent == "full":
            outs = self._eval(p + s + xs, _Run("full", probes, None, None))
        else:
            frozen: dict = {}
            held = [jax.lax.stop_gradient(leaf) for leaf in s]
            self._eval(p + held + xs, _Run("full", probes, None, frozen))
            outs = self._eval(p + s + xs, _Run(recurrent, probes, frozen, None))
        return self._unflatten(outs)

    def dense_inputs(self, params, state, x) -> list:
        """Each dense use's vector (the input it multiplies), in ``dense_uses`` order.

        Example::

          a = program.dense_inputs(params, h, x)[use.index]
        """
        p, s, xs = self._flatten(params, state, x)
        record: dict = {}
        self._eval(p + s + xs, _Run("full", None, None, record))
        return [record[u.index] for u in self.dense_uses]

    def probe_zeros(self) -> list:
        """Zero probes, one per dense use, shaped and typed like its output (for
        ``apply(..., probes=...)``)."""
        return [jnp.zeros(u.out_shape, u.out_dtype) for u in self.dense_uses]

    def check_trees(self, params, state, x) -> None:
        """A :class:`~uorojax.ConfigError` unless ``params``, ``state`` and ``x`` have
        the trees the program was inferred for."""
        self._flatten(params, state, x)

    # ------------------------------------------------------------------ internals

    def _check_probes(self, probes):
        if probes is None:
            return None
        probes = list(probes)
        if len(probes) != len(self.dense_uses):
            raise checks.ConfigError(
                f"probes: expected one array per dense use ({len(self.dense_uses)}), got "
                f"{len(probes)}"
            )
        for u, z in zip(self.dense_uses, probes):
            if tuple(jnp.shape(z)) != u.out_shape:
                raise checks.ConfigError(
                    f"probes[{u.index}]: expected shape {u.out_shape}, got {jnp.shape(z)}"
                )
        return probes

    def _flatten(self, params, state, x):
        out = []
        for name, tree, treedef in zip(
            ("params", "state", "x"), (params, state, x), self.traced.in_defs
        ):
            leaves, got = jax.tree.flatten(tree)
            if got != treedef:
                raise checks.ConfigError(
                    f"Program.apply: {name} has tree {got}, the program was inferred for {treedef}"
                )
            out.append(list(leaves))
        return out

    def _unflatten(self, outs):
        ns_def, out_def = self.traced.out_defs
        q = ns_def.num_leaves
        return jax.tree.unflatten(ns_def, outs[:q]), jax.tree.unflatten(out_def, outs[q:])

    def _eval(self, args, run: _Run):
        return self._evaluate(self.traced.jaxpr, self.traced.consts, args, run, ())

    def _evaluate(self, jaxpr, consts, args, run, path):
        env: dict = {}

        def read(v):
            return v.val if isinstance(v, Literal) else env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for i, eqn in enumerate(jaxpr.eqns):
            here = path + (i,)
            invals = [read(v) for v in eqn.invars]
            if here in self._marked:
                outs = [self._dot(eqn, invals, self._marked[here], run)]
            elif here in self._inline:
                inner, inner_consts = call_body(eqn)
                outs = self._evaluate(inner, inner_consts, invals, run, here)
            else:
                outs = _bind(eqn, invals)
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def _dot(self, eqn, invals, index, run: _Run):
        use = self.dense_uses[index]
        k = use.kernel_operand
        kernel, vector = invals[k], invals[1 - k]
        if run.record is not None:
            run.record[index] = vector
        if use.kind == "recurrent" and run.frozen is not None and run.mode != "full":
            pair = self._pairings[index]
            held = run.frozen[index]
            mixed = held if pair.row_mask.all() else jnp.where(pair.row_mask, held, vector)
            args = list(invals)
            args[1 - k] = mixed
            out = _bind(eqn, args)[0]
            if run.mode == "diagonal":
                out = out + self._diagonal(use, pair, kernel, vector - held).astype(out.dtype)
        else:
            out = _bind(eqn, invals)[0]
        if run.probes is not None:
            out = out + run.probes[index]
        return out

    @staticmethod
    def _diagonal(use, pair, kernel, delta):
        """``diag(K) ⊙ δ``: each output entry times the vector entries of its unit."""
        flat_k = jnp.reshape(kernel, (-1,))
        flat_d = jnp.reshape(jnp.transpose(delta, use.vector_axes), (-1,))
        total = None
        for j in range(pair.rows.shape[1]):
            term = flat_k[pair.kernel[:, j]] * flat_d[pair.rows[:, j]]
            if not pair.valid[:, j].all():
                term = jnp.where(pair.valid[:, j], term, 0)
            total = term if total is None else total + term
        return jnp.reshape(total, use.out_shape)

    def __repr__(self) -> str:
        lines = [f"Program({len(self.layers)} layer{'s' if len(self.layers) != 1 else ''}:"]
        for layer, (leaves, n) in enumerate(zip(self.layers, self.sizes)):
            names = ", ".join(f"state{self.state_paths[k]}" for k in leaves)
            lines.append(f"  layer {layer}: {n} units, {names}")
        lines.append("  params:")
        for name, role in zip(self.param_paths, self.roles):
            lines.append(f"    {name}: {role!r}  ({describe_role(role)})")
        kinds = [u.kind for u in self.dense_uses]
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("recurrent", "input", "output"))
        lines.append(f"  dense uses: {counts})")
        return "\n".join(lines)


__all__ = ["MODES", "Program"]
