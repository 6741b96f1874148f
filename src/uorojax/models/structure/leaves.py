"""Checks of a structure against the params and state it is used with, shapes only: its
lookups (:func:`read_structure`), the leaves' shapes and paths (:func:`check_leaves`),
and what the estimators of today take (:func:`check_single_stream`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.structure.paths import get_path, path_name
from uorojax.models.structure.types import (
    Feedforward,
    Role,
    Structure,
    Units,
    declared_units,
    state_layers,
)

PyTree = Any


def read_structure(
    structure: Structure, params: PyTree, state: PyTree, who: str
) -> tuple[list[Role], list[int]]:
    """Every params leaf's declared role and every state leaf's layer (flatten order).

    Raises:
      ConfigError: where a lookup fails on these trees, or gives something else than a
        role or a layer.
    """
    try:
        declared = declared_units(structure, params)
        layers = state_layers(structure, state)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise checks.ConfigError(
            f"{who}: the structure does not match the params or state tree ({err})"
        ) from err
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    for name, d in zip(names, declared):
        if d is not None and not isinstance(d, (Units, Feedforward)):
            raise checks.ConfigError(
                f"{who}: param_units gives params leaf {name} a {type(d).__name__} ({d!r}); "
                "a role is uorojax.structure.Units, uorojax.structure.Feedforward or None"
            )
    return declared, layers


def check_leaves(
    structure: Structure,
    params: PyTree,
    state: PyTree,
    who: str,
    declared: list[Role],
    layers: list[int],
) -> dict[int, int]:
    """The leaves fit their roles: state leaves are real vectors, a layer's leaves have
    one size, a role names a layer that has state, a unit axis exists and has
    ``groups · n`` entries, and every recurrent kernel names a square ``(n, n)`` params
    leaf, an ``(n,)`` bias and a state vector of ``n`` units. Shapes only.

    Returns:
      ``{layer: number of units}``.

    Raises:
      ConfigError: naming the leaf.
    """
    checks.check_real("state", state, who)
    sizes: dict[int, int] = {}
    for (path, leaf), layer in zip(jax.tree_util.tree_leaves_with_path(state), layers):
        name = jax.tree_util.keystr(path)
        if jnp.ndim(leaf) != 1:
            raise checks.ConfigError(
                f"{who} treats one stream: state leaf {name} has shape "
                f"{list(jnp.shape(leaf))}, not a vector of units. For a batch, use "
                f"uorojax.per_stream({who}(...)) (a shared system would need an entry per "
                "stream for every parameter anyway)."
            )
        n = sizes.setdefault(layer, jnp.shape(leaf)[0])
        if jnp.shape(leaf)[0] != n:
            raise checks.ConfigError(
                f"{who}: state leaf {name} has {jnp.shape(leaf)[0]} units, but another state "
                f"leaf of layer {layer} has {n}; a layer's state leaves are vectors over the "
                "same units"
            )
    for (path, leaf), d in zip(jax.tree_util.tree_leaves_with_path(params), declared):
        _check_role(jax.tree_util.keystr(path), jnp.shape(leaf), d, sizes, who)
    for rk in structure.recurrent_kernels:
        _check_kernel_leaves(rk, params, state, sizes, layers, who)
    return sizes


def _check_role(name: str, shape: tuple, role: Role, sizes: dict, who: str) -> None:
    if role is None:
        return
    layer = role.feeds if isinstance(role, Feedforward) else role.layer
    if layer not in sizes:
        what = "feed" if isinstance(role, Feedforward) else "move"
        raise checks.ConfigError(
            f"{who}: params leaf {name} is declared to {what} layer {layer}, which has no "
            f"state (the state's layers are {sorted(sizes)})"
        )
    if isinstance(role, Feedforward) or role.axis is None:
        return
    if not isinstance(role.groups, int) or role.groups < 1:
        raise checks.ConfigError(
            f"{who}: params leaf {name} is declared with groups={role.groups!r}; groups is "
            "a positive int"
        )
    if not -len(shape) <= role.axis < len(shape):
        raise checks.ConfigError(
            f"{who}: params leaf {name} has shape {list(shape)}, no axis {role.axis}"
        )
    expected = role.groups * sizes[layer]
    if shape[role.axis] != expected:
        blocks = f"{role.groups} groups of " if role.groups > 1 else ""
        raise checks.ConfigError(
            f"{who}: params leaf {name} has {shape[role.axis]} entries on its unit axis "
            f"{role.axis}, but {blocks}layer {layer}'s {sizes[layer]} units make {expected}"
        )


def _check_kernel_leaves(rk, params, state, sizes, layers, who) -> None:
    found = {}
    for tree, field, what in ((params, "kernel", "params"), (params, "bias", "params"),
                              (state, "state", "state")):  # fmt: skip
        path = getattr(rk, field)
        try:
            found[field] = get_path(tree, path)
        except KeyError as err:
            raise checks.ConfigError(
                f"{who}: recurrent kernel {path_name(rk.kernel)} names {what} path {path}, "
                f"which these {what} do not have ({err.args[0]})"
            ) from err
    if rk.layout not in ("in_out", "out_in"):
        raise checks.ConfigError(
            f"{who}: recurrent kernel {path_name(rk.kernel)} has layout {rk.layout!r}; "
            "expected 'in_out' (z = s @ K) or 'out_in' (z = K @ s)"
        )
    s = found["state"]
    if jnp.ndim(s) != 1 or len(jax.tree.leaves(s)) != 1:
        raise checks.ConfigError(
            f"{who}: recurrent kernel {path_name(rk.kernel)} reads state path {rk.state}, "
            "which is not one state vector"
        )
    n = jnp.shape(s)[0]
    if jnp.shape(found["kernel"]) != (n, n):
        raise checks.ConfigError(
            f"{who}: recurrent kernel {path_name(rk.kernel)} has shape "
            f"{list(jnp.shape(found['kernel']))}, not the [{n}, {n}] of the state vector "
            f"{path_name(rk.state)} it reads (a fused kernel of several gates needs the "
            "inferred structure, uorojax.infer_structure)"
        )
    if jnp.shape(found["bias"]) != (n,):
        raise checks.ConfigError(
            f"{who}: recurrent kernel {path_name(rk.kernel)} names bias "
            f"{path_name(rk.bias)} of shape {list(jnp.shape(found['bias']))}, not [{n}]"
        )


def check_single_stream(
    structure: Structure,
    params: PyTree,
    state: PyTree,
    who: str,
    *,
    feedforward: bool = False,
    fused: bool = False,
) -> None:
    """What an estimator takes: :func:`check_leaves`, at least one leaf with
    :class:`Units`, :class:`Feedforward` leaves only where the caller takes them
    (``feedforward=True``: SnAp-1 does, KF-RTRL does not), no parameter that moves every
    unit (``Units(layer, None)``) and fused gate blocks (``groups > 1``) only where the
    caller takes them (``fused=True``). Raises ConfigError naming the leaf."""
    checks.check_real("state", state, who)
    declared, layers = read_structure(structure, params, state, who)
    if not any(isinstance(d, Units) for d in declared):
        raise checks.ConfigError(
            f"{who}: the structure maps none of these params to a recurrent layer: it "
            "describes another params tree (a flat vector from uorojax.ravel_params has no "
            "structure; build the estimator on the model's own params)"
        )
    check_leaves(structure, params, state, who, declared, layers)
    for (path, _), d in zip(jax.tree_util.tree_leaves_with_path(params), declared):
        name = jax.tree_util.keystr(path)
        if isinstance(d, Feedforward) and not feedforward:
            raise checks.ConfigError(
                f"{who}: params leaf {name} is declared Feedforward({d.feeds}) (no influence "
                f"carried from step to step); {who} has no rule for such a parameter. "
                "SnAp-1 takes it (its direct gradient at each step)."
            )
        if isinstance(d, Units) and d.axis is None:
            raise checks.ConfigError(
                f"{who}: params leaf {name} moves every unit of layer {d.layer} in one step "
                "(a learned input embedding, for example); its influence has no sparse "
                "form. Use one-hot input (embed_dim=None) or another estimator."
            )
        if isinstance(d, Units) and d.groups != 1 and not fused:
            raise checks.ConfigError(
                f"{who}: params leaf {name} holds {d.groups} fused gate blocks of layer "
                f"{d.layer}'s units (Units groups={d.groups}); {who} handles a single "
                "dense layer h = σ(W a) with one pre-activation per unit (a tanh RNN), not "
                "gates. Use snap1, eprop or es_d_rtrl, or uoro or rtrl."
            )


__all__ = ["check_leaves", "check_single_stream", "read_structure"]
