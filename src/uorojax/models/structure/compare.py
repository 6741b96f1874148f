"""A hand-written structure against the inferred program: the layers, every params
leaf's role (:func:`~uorojax.models.inference.compare_roles`) and every recurrent kernel
against the recurrent dense uses. Each check raises a ConfigError naming the state leaf,
the params leaf or the kernel that disagrees, and what it actually is."""

from __future__ import annotations

import jax

from uorojax import checks
from uorojax.models.structure.paths import plain_path

WHO = "verify_structure"


def _fail(message: str):
    raise checks.ConfigError(f"{WHO}: {message}")


def compare_layers(program, layers: list[int], state_names: list[str]) -> None:
    """Every state leaf's declared layer is its inferred one (the inferred numbering:
    bottom first, ties by the first state leaf)."""
    for k, (declared, inferred) in enumerate(zip(layers, program.state_layers)):
        if declared == inferred:
            continue
        peers = [state_names[k2] for k2 in program.layers[inferred] if k2 != k]
        with_ = f", one layer with state leaf {', '.join(peers)}" if peers else ""
        _fail(
            f"state leaf {state_names[k]} is declared layer {declared}, but it is layer "
            f"{inferred}{with_} (layers are the groups of state leaves whose new values "
            "read each other's old values, numbered bottom first: a layer before every "
            "layer that reads it)"
        )


def compare_leaf_roles(program, declared, names: list[str]) -> None:
    """Every params leaf's declared role is its inferred one; the error names the first
    that differs and what it actually moves."""
    from uorojax.models.inference import compare_roles

    lines = compare_roles(declared, program.roles, names)
    if lines:
        more = f" (and {len(lines) - 1} more leaves)" if len(lines) > 1 else ""
        _fail(f"{lines[0]}{more}")


def compare_kernels(program, structure, params, state, names, state_names) -> None:
    """Every recurrent dense use's kernel leaves are listed, and every listed kernel is
    a recurrent use's, reads its state leaf and has its layout."""
    index = {p: j for j, p in enumerate(_plain_paths(params))}
    state_index = {p: k for k, p in enumerate(_plain_paths(state))}
    recurrent = [u for u in program.dense_uses if u.kind == "recurrent"]
    listed = {index[rk.kernel] for rk in structure.recurrent_kernels}
    for use in recurrent:
        for j, _ in use.leaves:
            if j not in listed:
                _fail(
                    f"params leaf {names[j]} is a recurrent kernel of layer {use.layer} (its "
                    f"product reads state leaf {_reads(use, state_names)}), and "
                    "recurrent_kernels does not list it"
                )
    for rk in structure.recurrent_kernels:
        j = index[rk.kernel]
        uses = [u for u in recurrent if any(i == j for i, _ in u.leaves)]
        if not uses:
            _fail(
                f"recurrent_kernels lists params leaf {names[j]}, but it is "
                f"{_what_use(program, j)}, not a map of its layer's own state"
            )
        k = state_index[tuple(rk.state)]
        reads = {i for (kind, i), _ in uses[0].rows if kind == "state"}
        if k not in reads:
            _fail(
                f"recurrent kernel {names[j]} is declared to read state leaf "
                f"{state_names[k]}, but it reads {_reads(uses[0], state_names)}"
            )
        axis = program.roles[j].axis
        expected = 1 if rk.layout == "in_out" else 0
        if axis != expected:
            actual = "in_out (z = s @ K)" if axis == 1 else "out_in (z = K @ s)"
            _fail(
                f"recurrent kernel {names[j]} is declared layout {rk.layout!r}, but its "
                f"units run along axis {axis}: layout {actual}"
            )


def _plain_paths(tree) -> list[tuple]:
    return [plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _reads(use, state_names) -> str:
    return ", ".join(state_names[i] for (kind, i), _ in use.rows if kind == "state")


def _what_use(program, j: int) -> str:
    for use in program.dense_uses:
        if any(i == j for i, _ in use.leaves):
            if use.kind == "input":
                return f"an input map of layer {use.layer} (its vector reads no state of it)"
            return "an output map (it moves no state)"
    return "not the kernel of a dense map K @ v"


__all__ = ["compare_kernels", "compare_layers", "compare_leaf_roles"]
