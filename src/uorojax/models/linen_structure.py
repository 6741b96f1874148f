"""The hand-written :class:`~uorojax.structure.Structure` of the supported linen cells
and of their stacks (:class:`~uorojax.models.linen.RecurrentStack`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from uorojax.models.cells import ElementwiseMGUCell
from uorojax.models.lru import LRUCell, lru_param_units
from uorojax.models.structure.types import DenseInput, RecurrentKernel, Structure, Units, plain_path


def _cell_kernels(cell: nn.RNNCellBase, layer: int) -> tuple[RecurrentKernel, ...] | None:
    """The recurrent kernels of one supported linen cell (None for another cell)."""
    base = ("params", f"cells_{layer}")

    def kernel(name, bias, state=()):
        return RecurrentKernel(
            (*base, name, "kernel"), (*base, bias, "bias"), (layer, *state), "in_out"
        )

    if isinstance(cell, (nn.LSTMCell, nn.OptimizedLSTMCell)):  # carry (c, h): h is [1]
        return tuple(kernel(f"h{g}", f"h{g}", (1,)) for g in "ifgo")
    if isinstance(cell, nn.GRUCell):
        return (kernel("hr", "ir"), kernel("hz", "iz"), kernel("hn", "hn"))
    if isinstance(cell, nn.SimpleCell):
        return (kernel("h", "i"),)
    if isinstance(cell, nn.MGUCell):
        return (kernel("hf", "if"), kernel("hn", "hn" if cell.reset_gate else "in"))
    if isinstance(cell, (ElementwiseMGUCell, LRUCell)):
        return ()
    return None


def _cell_preactivations(cell: nn.RNNCellBase) -> dict[str, str] | None:
    """For each dense module of one supported linen cell, the pre-activation it adds
    into (None for another cell, or one whose recurrence is not a dense kernel)."""
    if isinstance(cell, (nn.LSTMCell, nn.OptimizedLSTMCell)):
        return {f"{side}{gate}": gate for side in "ih" for gate in "ifgo"}
    if isinstance(cell, nn.GRUCell):  # n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        return {"ir": "r", "hr": "r", "iz": "z", "hz": "z", "in": "in", "hn": "hn"}
    if isinstance(cell, nn.SimpleCell):
        return {"i": "z", "h": "z"}
    if isinstance(cell, nn.MGUCell):
        return {"if": "f", "hf": "f", "in": "n", "hn": "hn" if cell.reset_gate else "n"}
    return None


def _stack_structure(cells, vocab_size, embed_dim) -> Structure | None:
    """The recurrent units of a :class:`RecurrentStack` (None if a cell is unknown)."""
    kernels = [_cell_kernels(cell, layer) for layer, cell in enumerate(cells)]
    if any(k is None for k in kernels):
        return None

    def param_units(path, leaf):
        if len(path) > 1 and str(path[1]).startswith("cells_"):
            layer = int(path[1][len("cells_") :])
            if isinstance(cells[layer], LRUCell):  # C, D feed the layer above, if any
                return lru_param_units(
                    path[2], layer, layer + 1 if layer + 1 < len(cells) else None
                )
            return Units(layer, jnp.ndim(leaf) - 1)
        if len(path) > 1 and path[1] == "embed":
            return Units(0, None)  # the embedding row of a token reaches every unit
        return None

    def encode(x):
        return jax.nn.one_hot(x, vocab_size) if vocab_size is not None else x

    leaf_inputs = None
    preactivations = _cell_preactivations(cells[0])
    if len(cells) == 1 and preactivations is not None and embed_dim is None:

        def leaf_inputs(params, state, x):  # dense module "i…" reads x, "h…" reads h
            h = jax.tree.leaves(state[0])[-1]  # an LSTM's carry is (c, h)
            vectors = {"h": h, "i": encode(x).astype(h.dtype)}
            out = []
            for path, _ in jax.tree_util.tree_leaves_with_path(params):
                keys = plain_path(path)
                if keys[1] != "cells_0":
                    out.append(None)
                    continue
                vector = jnp.ones((), h.dtype) if keys[-1] == "bias" else vectors[keys[2][0]]
                out.append(DenseInput(preactivations[keys[2]], vector))
            return out

    layer_inputs = None
    if leaf_inputs is not None and isinstance(cells[0], nn.SimpleCell):

        def layer_inputs(params, state, x):  # h = σ(x W_i + b_i + h W_h): one pre-activation
            return [None if d is None else d.vector for d in leaf_inputs(params, state, x)]

    return Structure(
        param_units=param_units,
        state_units=lambda path, leaf: path[0],
        recurrent_kernels=tuple(k for layer in kernels for k in layer),
        layer_inputs=layer_inputs,
        leaf_inputs=leaf_inputs,
    )
