"""The hand-written :class:`~uorojax.structure.Structure` of the supported linen cells
and of their stacks (:class:`~uorojax.models.linen.RecurrentStack`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from uorojax.models.cells import ElementwiseMGUCell
from uorojax.models.lru import LRUCell, lru_param_units
from uorojax.models.structure.types import (
    DenseInput,
    Feedforward,
    RecurrentKernel,
    Structure,
    Units,
    plain_path,
)


class CellLayout(NamedTuple):
    """What the structure of a stack needs to know of one kind of linen cell.

    Attributes:
      kernels: ``(module, bias module, state index)`` of each recurrent dense kernel:
        the module ``module`` reads the hidden state (entry ``state index`` of the
        cell's carry, ``()`` for a plain vector) and adds into the pre-activation whose
        bias lives in ``bias module``.
      preactivations: for each dense module, the pre-activation it adds into (None: the
        recurrence is not a dense kernel).
      param_units: ``(name, layer, layer above or None) -> Units`` for a cell whose
        params do not all move their own layer's units (the LRU's C and D), else None.
      forget_gate: the module whose bias is the forget gate's (LSTM cells), else None.
    """

    kernels: tuple[tuple[str, str, tuple[int, ...]], ...]
    preactivations: dict[str, str] | None
    param_units: Callable[..., Units] | None = None
    forget_gate: str | None = None


def _lstm(cell) -> CellLayout:  # carry (c, h): h is [1]
    return CellLayout(
        tuple((f"h{g}", f"h{g}", (1,)) for g in "ifgo"),
        {f"{side}{gate}": gate for side in "ih" for gate in "ifgo"},
        forget_gate="hf",
    )


def _gru(cell) -> CellLayout:  # n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    return CellLayout(
        (("hr", "ir", ()), ("hz", "iz", ()), ("hn", "hn", ())),
        {"ir": "r", "hr": "r", "iz": "z", "hz": "z", "in": "in", "hn": "hn"},
    )


def _simple(cell) -> CellLayout:
    return CellLayout((("h", "i", ()),), {"i": "z", "h": "z"})


def _mgu(cell) -> CellLayout:
    n = "hn" if cell.reset_gate else "in"
    return CellLayout((("hf", "if", ()), ("hn", n, ())), {"if": "f", "hf": "f", "in": "n", "hn": n})


def _elementwise(cell) -> CellLayout:
    return CellLayout((), None)


def _lru(cell) -> CellLayout:
    return CellLayout((), None, param_units=lru_param_units)


CELL_LAYOUTS: dict[type, Callable[[nn.RNNCellBase], CellLayout]] = {
    nn.LSTMCell: _lstm,
    nn.OptimizedLSTMCell: _lstm,
    nn.GRUCell: _gru,
    nn.SimpleCell: _simple,
    nn.MGUCell: _mgu,
    ElementwiseMGUCell: _elementwise,
    LRUCell: _lru,
}
"""The linen cells whose structure uorojax knows, by class -> their :class:`CellLayout`.
A subclass is not among them (it may change the equations): it gets no structure."""


def cell_layout(cell: nn.RNNCellBase) -> CellLayout | None:
    """The layout of one linen cell (None for a cell of another class).

    Example::

      cell_layout(nn.GRUCell(features=8)).preactivations["hz"]  # 'z'
    """
    make = CELL_LAYOUTS.get(type(cell))
    return None if make is None else make(cell)


def _cell_kernels(layout: CellLayout, layer: int) -> tuple[RecurrentKernel, ...]:
    """The recurrent kernels of one layer of a stack."""
    base = ("params", f"cells_{layer}")
    return tuple(
        RecurrentKernel((*base, name, "kernel"), (*base, bias, "bias"), (layer, *state), "in_out")
        for name, bias, state in layout.kernels
    )


def _stack_structure(cells, vocab_size, embed_dim) -> Structure | None:
    """The recurrent units of a :class:`RecurrentStack` (None if a cell is unknown)."""
    layouts = [cell_layout(cell) for cell in cells]
    if any(layout is None for layout in layouts):
        return None
    kernels = [_cell_kernels(layout, layer) for layer, layout in enumerate(layouts)]

    def param_units(path, leaf):
        if len(path) > 1 and str(path[1]).startswith("cells_"):
            layer = int(path[1][len("cells_") :])
            own_units = layouts[layer].param_units
            if own_units is not None:  # the LRU's C, D feed the layer above, if any
                return own_units(path[2], layer, layer + 1 if layer + 1 < len(cells) else None)
            return Units(layer, jnp.ndim(leaf) - 1)
        if len(path) > 1 and path[1] == "embed":
            return Feedforward(0)  # reaches layer 0 through its cells' input maps
        return None

    def encode(x):
        return jax.nn.one_hot(x, vocab_size) if vocab_size is not None else x

    leaf_inputs = None
    preactivations = layouts[0].preactivations
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
    if leaf_inputs is not None and len(set(preactivations.values())) == 1:

        def layer_inputs(params, state, x):  # h = σ(x W_i + b_i + h W_h): one pre-activation
            return [None if d is None else d.vector for d in leaf_inputs(params, state, x)]

    return Structure(
        param_units=param_units,
        state_units=lambda path, leaf: path[0],
        recurrent_kernels=tuple(k for layer in kernels for k in layer),
        layer_inputs=layer_inputs,
        leaf_inputs=leaf_inputs,
    )
