r"""Verify a structure against the model before any gradient: :func:`verify_structure`.

A hand-written :class:`Structure` is compared with the one inferred from the model's
jaxpr (:func:`uorojax.models.inference.infer`) where inference succeeds: the layers and
every params leaf's role exactly (:func:`~uorojax.models.inference.compare_roles`), and
every recurrent kernel against the recurrent dense uses (the leaf, the state it reads,
its layout). Where inference refuses the model, the roles and the layers are measured
at a random point with a few pullbacks (:mod:`~uorojax.models.structure.numeric`). In
both cases, at the same random point: each recurrent kernel's bias (diagonalising it
alone keeps the step's values), the diagonalised state Jacobian (unit-diagonal within
each layer), and each leaf of ``layer_inputs``/``leaf_inputs`` (its ``B`` is ``D ⊗ a``
with its own vector, and leaves named one pre-activation feed one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from uorojax import checks
from uorojax.models.structure.compare import compare_kernels, compare_layers, compare_leaf_roles
from uorojax.models.structure.jacobian import diagonalised_params
from uorojax.models.structure.leaves import check_leaves, read_structure
from uorojax.models.structure.numeric import (
    agrees,
    layer_cotangents,
    leaf_cotangents,
    measured_role,
    point_noise,
    pullbacks,
    random_point,
    tolerance,
    unit_diagonal,
    unit_gains,
)
from uorojax.models.structure.paths import leaf_names, path_name, plain_path
from uorojax.models.structure.types import Feedforward, Structure, Units, describe_role
from uorojax.models.structure.verify_inputs import (
    check_inputs,
    input_field,
    input_measurements,
)

PyTree = Any
WHO = "verify_structure"


def verify_structure(
    apply_fn: Callable,
    structure: Structure,
    params: PyTree,
    state: PyTree,
    x: Any,
    *,
    rtol: float | None = None,
    seed: int = 0,
) -> Structure:
    """Checks a structure against the model, before any gradient.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)`` for one step.
      structure: a hand-written or inferred :class:`Structure`.
      params, state, x: the model's params, a state and an input (any values: the
        checks run at a random point around them), or their ``jax.ShapeDtypeStruct``s,
        or tracers (an estimator's ``init_state`` under ``jax.jit``): then zeros.
      rtol: the relative tolerance of the numeric checks (1e-9 for a float64 state,
        1e-4 otherwise).
      seed: the seed of the random point and cotangents (numpy's generator).

    Returns:
      The structure, with the inferred ``program`` attached where inference succeeded.

    Raises:
      ConfigError: naming the first leaf, state leaf or recurrent kernel that disagrees
        with the model, and what it actually does.

    Example::

      structure = uorojax.structure.verify_structure(model.apply, my_structure, params, h0, x)
    """
    if not isinstance(structure, Structure):
        raise checks.ConfigError(
            f"{WHO}: structure must be a uorojax.structure.Structure, got "
            f"{type(structure).__name__}"
        )
    params, state, x = (concrete(tree) for tree in (params, state, x))
    with checks.concrete_evaluation():  # concrete even inside a traced init_state
        return _verify(apply_fn, structure, params, state, x, rtol, seed)


def concrete(tree: PyTree) -> PyTree:
    """``tree`` with every ``jax.ShapeDtypeStruct`` or tracer leaf replaced by zeros of
    its shape and dtype (the checks only need shapes: they run at a random point)."""

    def leaf(a):
        if isinstance(a, (jax.ShapeDtypeStruct, jax.core.Tracer)):
            return np.zeros(a.shape, a.dtype)
        return a

    return jax.tree.map(leaf, tree)


def _verify(apply_fn, structure, params, state, x, rtol, seed) -> Structure:
    rng = np.random.default_rng(seed)
    tol = tolerance(state, rtol)
    if structure.program is not None:
        _check_inferred(apply_fn, structure.program, params, state, x, rng, tol)
        return structure
    declared, layers = read_structure(structure, params, state, WHO)
    shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(params)]
    declared = [_normalised(d, shape) for d, shape in zip(declared, shapes)]
    sizes = check_leaves(structure, params, state, WHO, declared, layers)
    _refuse_every_unit(declared, leaf_names(params))
    names, state_names = leaf_names(params), leaf_names(state, "(the state)")
    program, refusal = _infer(apply_fn, params, state, x)
    if program is not None:
        compare_layers(program, layers, state_names)
        compare_leaf_roles(program, declared, names)
        compare_kernels(program, structure, params, state, names, state_names)
    given = (params, state, x)
    m = measure(apply_fn, structure, given, layers, rng, roles=program is None)
    if program is None:
        _measured_layers(m, layers, state_names, tol)
        _measured_roles(m, declared, shapes, layers, sizes, names, tol, refusal)
    _check_kernel_values(apply_fn, structure, given, m, tol)
    if program is None:  # with inference, a missing kernel was named by _compare_kernels
        _check_unit_diagonal(m, structure, declared, layers, names, state_names, tol)
    field = input_field(structure)
    if field is not None:
        static: dict = {}
        vectors = input_measurements(structure, m["point"], static)["vectors"]
        units = [d if isinstance(d, Units) else None for d in declared]
        m["vectors"] = [None if v is None else np.asarray(v) for v in vectors]
        check_inputs(m, field, units, static["preactivations"], layers, names, tol)
    return structure._replace(program=program)


def measure(apply_fn, structure, given, layers, rng, *, roles: bool) -> dict:
    """Everything the numeric checks read, at a random point around ``given = (params,
    state, x)`` (:func:`random_point`). The model's forward pass and its pullbacks are
    compiled once per model (:func:`outputs`, :func:`params_pullbacks`,
    :func:`state_pullbacks`, with ``apply_fn`` static): checking several structures of
    one model compiles nothing again.

    Returns:
      A dict of numpy arrays: ``want`` (the step's outputs, flat), ``diagonalised``
      (the same with every recurrent kernel diagonalised), ``gains`` and ``noise`` (the
      point's) and the ``point`` itself; with ``roles`` also ``diag`` and ``state``
      (state pullbacks of the diagonalised and of the true model,
      :func:`leaf_cotangents`); with ``roles`` or inputs to check, ``params`` (params
      pullbacks of :func:`layer_cotangents`).
    """
    inputs = input_field(structure) is not None
    fn = _static(apply_fn)
    noise = point_noise(given, rng)
    point = random_point(given, noise)
    params, state, x = point
    gains = unit_gains(state, layers, rng)
    local = diagonalised_params(structure, params, state)
    out = {
        "want": outputs(fn, params, state, x),
        "diagonalised": outputs(fn, local, state, x),
        "gains": gains,
        "noise": noise,
    }
    if roles:
        cots = leaf_cotangents(state, layers, gains, rng)
        out["diag"] = state_pullbacks(fn, local, state, x, cots)
        out["state"] = state_pullbacks(fn, params, state, x, cots)
    if roles or inputs:
        cots = layer_cotangents(state, layers, gains, rng)
        out["params"] = params_pullbacks(fn, params, state, x, cots)
    return {**jax.tree.map(np.asarray, out), "point": point}


class _Identity:
    """A function as a static argument that compares by identity (when it is not
    hashable itself)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def _static(fn):
    try:
        hash(fn)
        return fn
    except TypeError:
        return _Identity(fn)


@functools.partial(jax.jit, static_argnums=0)
def outputs(apply_fn, params, state, x) -> jax.Array:
    """The step's new state and output, flat."""
    return ravel_pytree(apply_fn(params, state, x))[0]


@functools.partial(jax.jit, static_argnums=0)
def params_pullbacks(apply_fn, params, state, x, cotangents) -> list:
    """``cᵀ ∂s'/∂θ`` for each stacked state cotangent (:func:`pullbacks`)."""
    return pullbacks(lambda p: apply_fn(p, state, x)[0], params, cotangents)


@functools.partial(jax.jit, static_argnums=0)
def state_pullbacks(apply_fn, params, state, x, cotangents) -> list:
    """``cᵀ ∂s'/∂s`` for each stacked state cotangent (:func:`pullbacks`)."""
    return pullbacks(lambda s: apply_fn(params, s, x)[0], state, cotangents)


def _outputs_with_each_kernel(apply_fn, structure, given, noise) -> list[np.ndarray]:
    """The step's outputs, flat, with each recurrent kernel diagonalised alone."""
    params, state, x = random_point(given, noise)
    fn = _static(apply_fn)
    return [
        np.asarray(outputs(fn, _alone(structure, rk, params, state), state, x))
        for rk in structure.recurrent_kernels
    ]


def _alone(structure, rk, params, state):
    return diagonalised_params(structure._replace(recurrent_kernels=(rk,)), params, state)


def _refuse_every_unit(declared, names) -> None:
    for name, d in zip(names, declared):
        if isinstance(d, Units) and d.axis is None:
            _fail(
                f"params leaf {name} is declared {d!r}, 'moves every unit of layer {d.layer}', "
                "which no estimator takes and no check can confirm: a leaf that reaches layer "
                f"{d.layer} through the input of its dense maps (a learned embedding, an "
                f"encoder) is Feedforward({d.layer})"
            )


def _infer(apply_fn, params, state, x):
    """The inferred program and None, or None and why inference refused the model."""
    from uorojax.models.inference import infer

    try:
        return infer(apply_fn, params, state, x), None
    except Exception as err:  # any refusal: the numeric checks take over
        return None, f"{type(err).__name__}: {err}"


def _fail(message: str):
    raise checks.ConfigError(f"{WHO}: {message}")


def _check_inferred(apply_fn, program, params, state, x, rng, tol: float) -> None:
    """An inferred structure fits these trees, and its program is this model's step."""
    program.check_trees(params, state, x)

    def both(given, noise):
        point = random_point(given, noise)
        return ravel_pytree(apply_fn(*point))[0], ravel_pytree(program.apply(*point))[0]

    given = (params, state, x)
    want, got = map(np.asarray, jax.jit(both)(given, point_noise(given, rng)))
    if not np.allclose(got, want, rtol=0, atol=tol * max(float(np.abs(want).max()), 1.0)):
        _fail(
            "the structure was inferred from another model: its program's step differs from "
            "apply_fn's at a random point"
        )


# --------------------------------------------------------------------- numerically


def _measured_layers(m: dict, layers, state_names, tol) -> None:
    """No new state leaf reads an old one of a higher layer (where inference refused)."""
    pulls = m["state"]
    scale = max(max(float(np.abs(p).max()) for p in pulls), 1e-30)
    for k, lk in enumerate(layers):
        for k2, lk2 in enumerate(layers):
            if lk2 > lk and (np.abs(pulls[k2][2 * k]) > tol * scale).any():
                _fail(
                    f"state leaf {state_names[k]} is declared layer {lk}, but its new value "
                    f"reads old state leaf {state_names[k2]} of layer {lk2}, above it "
                    "(layers are numbered bottom first; a layer's new state reads only its "
                    "own and lower layers' state)"
                )


def _measured_roles(m: dict, declared, shapes, layers, sizes, names, tol, refusal) -> None:
    """Each leaf's role, measured by pullbacks at the random point (where inference
    refused), agrees with the declared one."""
    pulls, gains = m["params"], m["gains"]
    order = sorted(set(layers))
    scale = max(max((float(np.abs(p).max()) for p in pulls if p.size), default=0.0), 1e-30)
    for j, d in enumerate(declared):
        moved = {layer: (pulls[j][2 * i], pulls[j][2 * i + 1]) for i, layer in enumerate(order)}

        def axis_of(layer, d=d):
            if isinstance(d, Units) and d.axis is not None and d.layer == layer:
                return d.axis, d.groups
            return None

        measured = measured_role(moved, shapes[j], sizes, gains, tol * scale, axis_of)
        if not agrees(d, measured):
            _fail(
                f"params leaf {names[j]}: declared {d!r} ({describe_role(d)}), but at a "
                f"random state and input it {_measured_words(measured)}: {measured!r} "
                f"(measured numerically, as inference refused the model: {refusal})"
            )


def _normalised(role, shape):
    """A Units role with a negative axis written as the non-negative one."""
    if isinstance(role, Units) and role.axis is not None and role.axis < 0:
        return role._replace(axis=role.axis % len(shape))
    return role


def _measured_words(role) -> str:
    if isinstance(role, Feedforward):
        return f"moves several units of layer {role.feeds} per entry, and no lower layer"
    return describe_role(role)


# --------------------------------------------------------------------- both ways


def _check_kernel_values(apply_fn, structure, given, m: dict, tol: float) -> None:
    """Diagonalising the recurrent kernels keeps the step's values: each bias is in its
    kernel's pre-activation, and each kernel reads the state leaf and has the layout
    declared. On a change, each kernel alone names the one that moves it."""
    want = m["want"]
    atol = tol * max(float(np.abs(want).max()), 1.0)
    if np.allclose(m["diagonalised"], want, rtol=0, atol=atol):
        return
    alone = _outputs_with_each_kernel(apply_fn, structure, given, m["noise"])
    for rk, got in zip(structure.recurrent_kernels, alone):
        if not np.allclose(got, want, rtol=0, atol=atol):
            _fail(
                f"recurrent kernel {path_name(rk.kernel)} (bias {path_name(rk.bias)}, state "
                f"{path_name(rk.state)}, layout {rk.layout!r}): moving its off-diagonal "
                "product into the bias changes the step's values: the bias is not added to "
                "the pre-activation the kernel feeds, or the kernel reads another state "
                "leaf, or its layout is the other one"
            )
    _fail(
        "the recurrent kernels diagonalised together change the step's values, though each "
        "alone keeps them: two of them share a kernel or a bias"
    )


def _check_unit_diagonal(m: dict, structure, declared, layers, names, state_names, tol):
    """With every recurrent kernel diagonalised, each layer's state Jacobian is
    unit-diagonal (no recurrent kernel is missing); the error lists the square leaves of
    the layer that ``recurrent_kernels`` does not name."""
    pulls, gains = m["diag"], m["gains"]
    scale = max(max(float(np.abs(p).max()) for p in pulls), 1e-30)
    for k, lk in enumerate(layers):
        for k2, lk2 in enumerate(layers):
            g, g_r = pulls[k2][2 * k], pulls[k2][2 * k + 1]
            if lk2 == lk and not unit_diagonal(g, g_r, gains[lk], tol * scale):
                paths = [plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(
                    m["point"].params)]  # fmt: skip
                listed = {tuple(rk.kernel) for rk in structure.recurrent_kernels}
                n = g.shape[0]
                unlisted = [
                    name
                    for name, path, d, p in zip(names, paths, declared, m["params"])
                    if isinstance(d, Units) and d.layer == lk and p.shape[1:] == (n, n)
                    and path not in listed
                ]  # fmt: skip
                _fail(
                    f"with recurrent_kernels diagonalised, new state leaf {state_names[k]} "
                    f"still reads other units of old state leaf {state_names[k2]} (layer "
                    f"{lk}): a dense map of {state_names[k2]} into layer {lk} is missing "
                    "from recurrent_kernels"
                    + (
                        f" (the square leaves of the layer it does not list: {', '.join(unlisted)})"
                        if unlisted
                        else ""
                    )  # fmt: skip
                )


__all__ = ["verify_structure"]
