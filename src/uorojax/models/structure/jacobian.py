"""The unit-diagonal blocks of a model's state Jacobian, from its structure: the
recurrent kernels diagonalised (SnAp-1) or taken out (e-prop, RFLO, ES-D-RTRL)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.structure.types import (
    Structure,
    get_path,
    set_path,
    state_layers,
)

PyTree = Any


def diagonalised_params(
    structure: Structure, params: PyTree, state: PyTree, *, keep_diagonal: bool = True
) -> PyTree:
    """Params whose one-step state Jacobian at ``state`` is the unit-diagonal blocks of
    the true one, with the same values.

    Each recurrent kernel ``K`` becomes ``diag(K)`` and its off-diagonal product with
    the state, held constant, moves into the paired bias: the pre-activation keeps its
    value and its derivative in the state keeps only ``∂z_i/∂s_i = K_ii``. With
    ``keep_diagonal=False`` the kernel becomes zero and its whole product moves into the
    bias: the state Jacobian is then that of each unit's internal dynamics alone (a
    leak, an LSTM's forget gate), with the recurrent kernels taken out.

    Only the state is held constant in the moved product, so the derivatives in the
    params are those of the true step: a VJP through these params gives the exact
    parameter gradient together with the state cotangent of the reduced Jacobian.

    Example::

      local = diagonalised_params(model.structure, params, h, keep_diagonal=False)
      model.apply(local, h, x)  # the same values as model.apply(params, h, x)

    Raises:
      ConfigError: for an inferred structure of a model with recurrent kernels (it lists
        none: its ``program.apply(..., recurrent="diagonal" | "none")`` diagonalises
        them, with no bias needed).
    """
    program = structure.program
    if program is not None and not structure.recurrent_kernels:
        if any(u.kind == "recurrent" for u in program.dense_uses):
            raise checks.ConfigError(
                "diagonalised_params: this structure was inferred and lists no recurrent "
                "kernels; its program diagonalises them: structure.program.apply(params, "
                'state, x, recurrent="diagonal") (or "none" for keep_diagonal=False)'
            )
    for rk in structure.recurrent_kernels:
        kernel = get_path(params, rk.kernel)
        s = jax.lax.stop_gradient(get_path(state, rk.state))
        full = s @ kernel if rk.layout == "in_out" else kernel @ s
        if keep_diagonal:
            diagonal = jnp.diagonal(kernel)
            moved, kept = full - s * diagonal, jnp.diag(diagonal)
        else:  # a constant zero kernel: XLA shares the step's forward between its uses
            moved, kept = full, jnp.zeros_like(kernel)
        params = set_path(params, rk.kernel, kept)
        params = set_path(params, rk.bias, get_path(params, rk.bias) + moved)
    return params


def local_apply(apply_fn, structure: Structure, *, keep_diagonal: bool):
    """The step ``(params, state, x) -> (new_state, output)`` with the same values and exact
    params derivatives, whose state Jacobian is the model's own (``keep_diagonal=True``)
    or each unit's internal dynamics, the recurrent kernels taken out (``False``:
    e-prop's, RFLO's and ES-D-RTRL's :math:`\\tilde A_t`).

    Through the inferred ``structure.program`` (``recurrent="none"``: no bias needed, no
    params copied) where the structure has one, else through
    :func:`diagonalised_params` of the hand-written ``recurrent_kernels``.

    Example::

      step = local_apply(model.apply, structure, keep_diagonal=False)
      new_state, out = step(params, h, x)  # the values of model.apply(params, h, x)
    """
    if keep_diagonal:
        return apply_fn
    if structure.program is not None:
        program = structure.program
        return lambda p, s, x: program.apply(p, s, x, recurrent="none")
    return lambda p, s, x: apply_fn(diagonalised_params(structure, p, s, keep_diagonal=False), s, x)


def unit_jacobian(
    apply_fn, structure: Structure, params, state, x, *, keep_diagonal: bool = True
) -> list[list]:
    """``blocks[k][k2][i] = ∂s_k[i] / ∂s_k2[i]`` for state leaves k, k2 of one layer
    (None across layers): the unit-diagonal blocks of ``A_t``
    (:func:`unit_jacobian_columns` arranged by block)."""
    layers = state_layers(structure, state)
    columns = unit_jacobian_columns(
        apply_fn, structure, params, state, x, keep_diagonal=keep_diagonal
    )
    q = len(layers)
    return [
        [columns[k2][k] if layers[k] == layers[k2] else None for k2 in range(q)] for k in range(q)
    ]


def unit_jacobian_columns(
    apply_fn, structure: Structure, params, state, x, *, keep_diagonal: bool = True
) -> list[jax.Array]:
    """``columns[k2][k, i] = ∂s_k[i] / ∂s_k2[i]`` for every state leaf k2, and every state
    leaf k of the same layer (rows of another layer hold no block of ``A_t``).

    Within a layer the diagonalised model's state Jacobian (:func:`diagonalised_params`,
    or the inferred ``structure.program`` in ``"diagonal"`` mode; with
    ``keep_diagonal=False``, the model without its recurrent kernels) is unit-diagonal, so a cotangent of ones on state leaf k pulls back to exactly its
    diagonal on each state leaf k2: one VJP per state leaf k, all of them batched. The
    rows of one column come out as one array, stacked over k.
    """
    if structure.program is not None:
        mode = "diagonal" if keep_diagonal else "none"
        step = lambda s: structure.program.apply(params, s, x, recurrent=mode)[0]  # noqa: E731
    else:
        diag_params = diagonalised_params(structure, params, state, keep_diagonal=keep_diagonal)
        step = lambda s: apply_fn(diag_params, s, x)[0]  # noqa: E731
    _, pullback = jax.vjp(step, state)
    return jax.tree.leaves(jax.vmap(lambda ones: pullback(ones)[0])(ones_on_each_leaf(state)))


def ones_on_each_leaf(tree: PyTree) -> PyTree:
    """For a tree of q leaves, the q trees with ones on one leaf and zeros elsewhere,
    stacked along a new leading axis: leaf j's row k is ones when ``j == k``."""
    leaves, treedef = jax.tree.flatten(tree)
    q = len(leaves)
    return jax.tree.unflatten(
        treedef,
        [
            jnp.stack([jnp.full_like(a, float(j == k)) for k in range(q)])
            for j, a in enumerate(leaves)
        ],
    )
