r"""The check of ``layer_inputs`` and ``leaf_inputs`` at a random point, leaf by leaf.

For a params leaf ``j`` of layer L that multiplies the vector ``a`` into a pre-activation
``z`` of L's units, ``B_j = D_z ⊗ a`` on L, so the pullback of a random cotangent ``c`` on
L's state is

.. math::
    g_j = c^\top B_j = \gamma \otimes a, \qquad
    \gamma_u = \textstyle\sum_k c_k[u]\, (\partial s_k / \partial z)[u].

Given the declared vector ``a_j``, ``γ_j = g_j · a_j / ‖a_j‖²`` (contracting the input
axis; ``g_j`` itself for a bias, whose vector is 1), and

* ``g_j = γ_j ⊗ a_j``: the leaf multiplies ``a_j`` (up to a scale): a wrong vector is
  blamed on its own leaf, whatever the other leaves of its pre-activation give;
* leaves named one pre-activation have one ``γ`` (the same ``∂s/∂z``, and vectors of the
  same scale): a leaf named into another pre-activation, or given a scaled vector, is
  blamed by name. ``layer_inputs`` is one pre-activation, ``"layer"``, for all its leaves.

Both from the one pullback the role check uses: no Jacobian, no JVP.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from uorojax import checks
from uorojax.models.structure.dense import check_dense_inputs, check_layer_inputs, dense_inputs
from uorojax.models.structure.numeric import Point
from uorojax.models.structure.types import Structure, leaf_units

WHO = "verify_structure"


def input_field(structure: Structure) -> str | None:
    """``"leaf_inputs"``, ``"layer_inputs"`` or None: which field describes the inputs."""
    if structure.leaf_inputs is not None:
        return "leaf_inputs"
    return "layer_inputs" if structure.layer_inputs is not None else None


def input_measurements(structure: Structure, point: Point, static: dict) -> dict:
    """What :func:`check_inputs` reads, traceable: ``vectors``, every leaf's declared
    vector (None for the others). The pre-activation names go into
    ``static["preactivations"]``.

    Raises:
      ConfigError: for vectors of the wrong shapes or leaves, or a leaf of fused gate
        blocks (shapes only).
    """
    field = input_field(structure)
    params, state, x = point
    units = leaf_units(structure, params)
    for (path, _), u in zip(jax.tree_util.tree_leaves_with_path(params), units):
        if u is not None and u.groups != 1:
            raise checks.ConfigError(
                f"{WHO}: params leaf {jax.tree_util.keystr(path)} holds {u.groups} fused "
                f"gate blocks; {field} describes one pre-activation per leaf (split the "
                "leaf, or use the inferred structure's program.dense_inputs)"
            )
    if field == "layer_inputs":
        check_layer_inputs(structure, params, structure.layer_inputs(params, state, x), WHO)
    dense = dense_inputs(structure, params, state, x)
    check_dense_inputs(structure, params, dense, WHO)
    static["preactivations"] = [None if d is None else d.preactivation for d in dense]
    return {"vectors": [None if d is None else jnp.asarray(d.vector) for d in dense]}


def check_inputs(m: dict, field, units, preactivations, layers, names, tol) -> None:
    """``layer_inputs``/``leaf_inputs`` agree with the model (module docstring), from
    the measurements of :func:`~uorojax.models.structure.verify.measure` (``units``: the
    leaves' :class:`Units` or None). Raises ConfigError naming the leaf."""
    if field is None:
        return
    order = sorted(set(layers))
    gammas = {}
    for j, a in enumerate(m["vectors"]):
        if a is None:
            continue
        g = m["params"][j][2 * order.index(units[j].layer)]
        gamma, fitted = _fit(g, np.asarray(a), units[j].axis)
        atol = tol * max(float(np.abs(g).max()), 1e-30)
        if not np.allclose(g, fitted, rtol=0, atol=atol):
            raise checks.ConfigError(
                f"{WHO}: params leaf {names[j]} multiplies another vector than {field} "
                f"gives it: its B_t is not D ⊗ a for that vector a (|difference| up to "
                f"{np.abs(g - fitted).max():.3g})"
            )
        if np.any(a):
            gammas[j] = gamma
    _check_groups(preactivations, gammas, names, field, tol)


def _fit(g: np.ndarray, a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``γ = g · a / ‖a‖²`` over the input axis and ``γ ⊗ a`` in the leaf's layout."""
    if g.ndim == 1:  # a bias: its vector is a scalar
        return g * a / max(float(a * a), 1e-300), g
    units_major = np.moveaxis(g, axis, 0)
    norm_sq = max(float(np.sum(a * a)), 1e-300)
    gamma = units_major @ a / norm_sq
    return gamma, np.moveaxis(np.outer(gamma, a), 0, axis)


def _check_groups(preactivations, per_leaf: dict, names, field: str, tol: float) -> None:
    """Leaves named one pre-activation feed one: their ``γ`` agree."""
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(preactivations):
        if name is not None and j in per_leaf:
            groups.setdefault(name, []).append(j)
    for name, members in groups.items():
        clusters: list[list[int]] = []
        for j in members:
            for cluster in clusters:
                ref = per_leaf[cluster[0]]
                atol = tol * max(float(np.abs(ref).max()), 1e-30)
                if np.allclose(per_leaf[j], ref, rtol=0, atol=atol):
                    cluster.append(j)
                    break
            else:
                clusters.append([j])
        if len(clusters) == 1:
            continue
        sizes = sorted((len(c) for c in clusters), reverse=True)
        if sizes[0] == sizes[1]:  # a tie: no majority to blame the others against
            raise checks.ConfigError(
                f"{WHO}: {field} names pre-activation {name!r} for params leaves "
                + " and ".join(", ".join(names[j] for j in c) for c in clusters)
                + ", which feed different pre-activations (∂s/∂z differs): name them apart"
            )
        main = max(clusters, key=len)
        others = ", ".join(names[j] for c in clusters if c is not main for j in c)
        raise checks.ConfigError(
            f"{WHO}: {field} names pre-activation {name!r} for params leaves "
            f"{', '.join(names[j] for j in main)} and {others}, but {others} disagree: they "
            f"feed another pre-activation, or {field} gives them a scaled vector (∂s/∂z times "
            "the vector's scale differs)"
        )


__all__ = ["check_inputs", "input_field", "input_measurements"]
