"""Models from ``flax.linen`` RNN cells: single or stacked, with one-hot or embedded
token input and a dense readout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.cells import ElementwiseMGUCell
from uorojax.models.linen_structure import _stack_structure, cell_layout
from uorojax.models.lru import LRUCell
from uorojax.models.model import Model

PyTree = Any


LINEN_CELLS = {
    "lstm": nn.LSTMCell,
    "optimized_lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
    "simple": nn.SimpleCell,
    "mgu": nn.MGUCell,
    "elementwise_mgu": ElementwiseMGUCell,
    "lru": LRUCell,
}


class RecurrentStack(nn.Module):
    """Stacked linen RNN cells between an input encoding and a dense readout.

    Attributes:
      cells: the cells, bottom first (``nn.LSTMCell(features=64)``, ...).
      num_outputs: width of the dense readout.
      vocab_size: if set, inputs are integer tokens in ``[0, vocab_size)``, one-hot
        encoded (or embedded when ``embed_dim`` is set).
      embed_dim: width of a learned embedding of the tokens.
    """

    cells: Sequence[nn.RNNCellBase]
    num_outputs: int
    vocab_size: int | None = None
    embed_dim: int | None = None

    def encode(self, x):
        if self.embed_dim is not None:
            return nn.Embed(self.vocab_size, self.embed_dim, name="embed")(x)
        if self.vocab_size is not None:
            return jax.nn.one_hot(x, self.vocab_size, dtype=self.cells[0].param_dtype)
        return x

    @nn.compact
    def __call__(self, carry, x):
        h = self.encode(x)
        new_carry = []
        for cell, c in zip(self.cells, carry):
            c, h = cell(c, h)
            new_carry.append(c)
        return tuple(new_carry), nn.Dense(self.num_outputs, name="readout")(h)


def torch7_init(params: PyTree, key: jax.Array, cells: Sequence[nn.RNNCellBase]) -> PyTree:
    """Re-initialises a :class:`RecurrentStack`'s params as the UORO authors' Torch7 code.

    Every dense kernel and its bias are drawn uniformly on ``±1/sqrt(fan_in)``, with
    ``fan_in`` the kernel's input width (Torch7's ``nn.Linear`` default); a learned
    embedding from N(0, 1); the forget-gate bias of LSTM cells is set to -0.3. Other
    leaves (an element-wise cell's recurrent vectors) keep their flax init.
    """
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params)
    keys = dict(zip(sorted(flat), jax.random.split(key, len(flat))))
    new = dict(flat)
    for path, leaf in flat.items():
        if path[-1] == "kernel":
            bound = 1.0 / jnp.sqrt(jnp.asarray(leaf.shape[0], leaf.dtype))
            new[path] = jax.random.uniform(keys[path], leaf.shape, leaf.dtype, -bound, bound)
            bias_path = (*path[:-1], "bias")
            if bias_path in flat:
                bias = flat[bias_path]
                new[bias_path] = jax.random.uniform(
                    keys[bias_path], bias.shape, bias.dtype, -bound, bound
                )
        elif path[-1] == "embedding":
            new[path] = jax.random.normal(keys[path], leaf.shape, leaf.dtype)
    for layer, cell in enumerate(cells):
        layout = cell_layout(cell)
        if layout is not None and layout.forget_gate is not None:
            path = ("params", f"cells_{layer}", layout.forget_gate, "bias")
            new[path] = jnp.full_like(flat[path], -0.3)
    return traverse_util.unflatten_dict(new)


INITS = ("flax", "torch7")


def from_linen_cells(
    cells: nn.RNNCellBase | Sequence[nn.RNNCellBase],
    num_outputs: int,
    *,
    vocab_size: int | None = None,
    embed_dim: int | None = None,
    init: str = "flax",
) -> Model:
    """Builds a :class:`Model` from one or several ``flax.linen`` RNN cells.

    The state is a tuple with one carry per layer (for LSTM cells each carry is the
    ``(c, h)`` pair). Inputs are float vectors, or integer tokens when ``vocab_size`` is
    given (one-hot, or a learned embedding of width ``embed_dim``). For the cells listed
    in ``LINEN_CELLS`` the model comes with its :class:`~uorojax.structure.Structure`.

    Args:
      cells: an unbound linen cell such as ``nn.GRUCell(features=64)``, or a sequence of
        them for a stack (LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell, MGUCell,
        ElementwiseMGUCell, LRUCell, or any other linen cell, without a structure).
      num_outputs: width of the dense readout (the vocabulary size for next-token
        prediction).
      vocab_size: number of input tokens, if inputs are integer tokens.
      embed_dim: embedding width; one-hot encoding when None.
      init: ``"flax"`` (the cells' own initialisers) or ``"torch7"`` (the UORO
        authors' convention, see :func:`torch7_init`).

    Returns:
      A :class:`Model`; ``init(key, example_x)`` returns ``(params, state0)`` with zero
      carries.

    Example::

      model = uorojax.from_linen_cells(nn.GRUCell(features=64), 10, vocab_size=10)
      params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    """
    if isinstance(cells, nn.Module):
        cells = [cells]
    cells = tuple(cells)
    if not cells:
        raise checks.ConfigError("from_linen_cells needs at least one cell")
    for cell in cells:
        if not isinstance(cell, nn.RNNCellBase):
            raise TypeError(f"expected a flax.linen RNN cell, got {type(cell).__name__}")
    if embed_dim is not None and vocab_size is None:
        raise checks.ConfigError("embed_dim needs vocab_size")
    checks.one_of("init", init, INITS)
    module = RecurrentStack(cells, num_outputs, vocab_size, embed_dim)

    def input_width(example_x) -> int:
        if embed_dim is not None:
            return embed_dim
        if vocab_size is not None:
            return vocab_size
        return jnp.shape(example_x)[-1]

    def init_fn(key, example_x):
        carry_key, param_key = jax.random.split(key)
        width, carries = input_width(example_x), []
        for cell in cells:
            carries.append(cell.initialize_carry(carry_key, (width,)))
            width = cell.features
        state0 = tuple(carries)
        params = module.init(param_key, state0, example_x)
        if init == "torch7":
            params = torch7_init(params, param_key, cells)
        return params, state0

    return Model(init_fn, module.apply, _stack_structure(cells, vocab_size, embed_dim))


def linen_model(
    cell: str,
    hidden_size: int,
    num_outputs: int,
    *,
    num_layers: int = 1,
    vocab_size: int | None = None,
    embed_dim: int | None = None,
    init: str = "flax",
) -> Model:
    """A stack of ``num_layers`` linen cells named by ``cell`` (see ``LINEN_CELLS``).

    Convenience over :func:`from_linen_cells` for configs: ``linen_model("gru", 64, 10,
    vocab_size=10)``. For ``"lru"`` (:class:`~uorojax.LRUCell`) ``hidden_size`` is the
    number of complex units ``d_state``, and each layer's output keeps the width of the
    input (one-hot: ``vocab_size``).
    """
    checks.one_of("cell", cell, tuple(LINEN_CELLS))
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    num_layers = checks.positive_int("num_layers", num_layers)
    cells = [LINEN_CELLS[cell](features=hidden_size) for _ in range(num_layers)]
    return from_linen_cells(
        cells, num_outputs, vocab_size=vocab_size, embed_dim=embed_dim, init=init
    )
