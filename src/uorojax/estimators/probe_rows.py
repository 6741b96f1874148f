r"""ES-D-RTRL's per-row signals on an inferred structure, read through the program's probes.

On a structure with an inferred :class:`~uorojax.models.inference.Program` (every
structure whose model inference reads), ES-D-RTRL (:mod:`~uorojax.estimators.es_d_rtrl`)
needs no ``leaf_inputs``: each params leaf of a layer is

* a *kernel*: a 2-d leaf in exactly one dense use ``K @ a`` of a vector ``a`` (the leaf
  may be a block of the use's params value, as a params-side concatenation builds, and
  hold ``groups`` fused gate blocks along its unit axis). Its input trace follows the
  rows of ``a`` it multiplies (:meth:`~uorojax.models.inference.Program.dense_inputs`);
  its unit traces follow :math:`\partial s_k/\partial z` of its block of the use's
  output ``z``, one row per gate block, and its learning signal
  :math:`\partial L_t/\partial z`: both from the cotangents of a zero probe added to
  ``z`` (``program.apply(..., probes=...)``), exact with or without a bias and at any
  input (``h_0 = 0`` included);
* a *vector* of per-unit parameters (a bias, an element-wise weight): a 1-d leaf in no
  dense use, copied per stream, whose cotangents give :math:`\partial L_t/\partial b`
  and :math:`\partial s_k/\partial b` per entry (its input is the scalar 1).

Any other leaf with units is refused by name. :func:`probe_plan` reads this from the
program once; :func:`probe_rows` forms one step's rows, in the layout of
:func:`~uorojax.estimators.factored_traces.trace_layout`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.factored_traces import TraceLayout, stacked_copies, trace_layout
from uorojax.models.structure.paths import leaf_names
from uorojax.models.structure.types import Structure, leaf_units, state_layers


class KernelUse(NamedTuple):
    """Where a kernel leaf sits in its dense use.

    Attributes:
      use: the dense use's index (in ``program.dense_uses`` and the probes).
      inputs: the ``(start, stop)`` rows of the use's vector the leaf multiplies.
      start: the first output entry of the leaf's block in the use's output.
    """

    use: int
    inputs: tuple
    start: int


class ProbePlan(NamedTuple):
    """What an ES-D-RTRL step reads of an inferred structure (see the module docstring).

    Attributes:
      units: :func:`~uorojax.structure.leaf_units` of every params leaf.
      layout: the carry's :class:`~uorojax.estimators.factored_traces.TraceLayout`.
      kernels: ``{leaf index: KernelUse}`` for the kernel leaves.
      copy_groups: the vector leaves, copied per stream, grouped by shape and dtype.
      layers: the layer of every state leaf.
    """

    units: list
    layout: TraceLayout
    kernels: dict
    copy_groups: list
    layers: list


def probe_plan(structure: Structure, params, state, who: str = "es_d_rtrl") -> ProbePlan:
    """The :class:`ProbePlan` of a structure with a program.

    Raises:
      ConfigError: naming a leaf with units that is neither a kernel of one dense use
        nor a per-unit vector.
    """
    program = structure.program
    leaves = jax.tree.leaves(params)
    units = leaf_units(structure, params)
    names = leaf_names(params)
    uses_of: dict = {}
    for use in program.dense_uses:
        for j, block in use.leaves:
            uses_of.setdefault(j, []).append((use, block))
    kernels, vectors = {}, []
    for j, (leaf, u) in enumerate(zip(leaves, units)):
        if u is None:
            continue
        found = uses_of.get(j, [])
        if leaf.ndim == 1 and not found:
            vectors.append(j)
            continue
        if leaf.ndim == 2 and len(found) == 1:
            use, block = found[0]
            plain = len(use.kernel_shape) == 2 and len(use.vector_shape) == 1
            if plain and not use.vector_batch:
                out, inp = block[use.unit_axes[0]], block[use.input_axes[0]]
                if (
                    out[1] - out[0] == leaf.shape[u.axis]
                    and inp[1] - inp[0] == leaf.shape[1 - u.axis]
                ):
                    kernels[j] = KernelUse(use.index, inp, out[0])
                    continue
        raise checks.ConfigError(
            f"{who}: params leaf {names[j]} of layer {u.layer} is neither the kernel of one "
            "dense map K @ a of a vector a (it is in "
            f"{len(found)} dense uses, shape {list(leaf.shape)}) nor a vector of per-unit "
            "parameters (a bias); its trace has no input/unit factorisation. Use snap1 or "
            "eprop, or uoro or rtrl"
        )
    return ProbePlan(
        units,
        trace_layout(leaves, units),
        kernels,
        stacked_copies(leaves, vectors),
        state_layers(structure, state),
    )


def leaf_vectors(structure: Structure, the_plan: ProbePlan, params, state, x) -> list:
    """Every params leaf's input, one stream: the rows of its dense use's vector for a
    kernel, a scalar 1 for a vector leaf, None for the others."""
    copied = {j for g in the_plan.copy_groups for j in g}
    read = structure.program.dense_inputs(params, state, x)
    out = []
    for j, leaf in enumerate(jax.tree.leaves(params)):
        if j in the_plan.kernels:
            k = the_plan.kernels[j]
            out.append(read[k.use][k.inputs[0] : k.inputs[1]])
        else:
            out.append(jnp.ones((), jnp.result_type(leaf)) if j in copied else None)
    return out


def probe_vectors(structure: Structure, the_plan: ProbePlan, params, states, xs) -> list:
    """:func:`leaf_vectors` of B streams (a leading stream axis)."""
    return jax.vmap(lambda s, x: leaf_vectors(structure, the_plan, params, s, x))(states, xs)


def probe_rows(the_plan: ProbePlan, d_copies: list, d_probes: list, sizes: dict) -> dict:
    """Per layer, ``(1 + q, B, P, n)``: row 0 ``∂L_t/∂z`` and row ``1 + k`` ``D^f_t`` of
    state leaf k, for every row ``(leaf, block)`` of the layer's unit traces, from the
    cotangents of the copies (vector leaves) and of the probes (kernels)."""
    copy_at = {
        j: (g, r) for g, group in enumerate(the_plan.copy_groups) for r, j in enumerate(group)
    }
    rows_of = {}
    for layer, rows in the_plan.layout.rows.items():
        n = sizes[layer]
        parts = []
        for j, b in rows:
            if j in the_plan.kernels:
                k = the_plan.kernels[j]
                start = k.start + b * n
                parts.append(d_probes[k.use][..., start : start + n])
            else:
                g, r = copy_at[j]
                parts.append(d_copies[g][:, :, r, b * n : (b + 1) * n])
        rows_of[layer] = jnp.stack(parts, axis=-2)
    return rows_of


__all__ = ["KernelUse", "ProbePlan", "leaf_vectors", "probe_plan", "probe_rows", "probe_vectors"]
