"""Recurrent models in the ``apply_fn(params, state, x) -> (new_state, output)`` form.

A :class:`Model` pairs ``init(key, example_x) -> (params, state0)`` with ``apply``. The
general case is any pure function; this module adds a plain tanh RNN, adapters for
``flax.linen`` cells (single or stacked, with one-hot or embedded token input and a dense
readout) and for ``flax.nnx`` modules, and the step losses the tasks use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from uorojax import checks

PyTree = Any

LINEN_CELLS = {
    "lstm": nn.LSTMCell,
    "optimized_lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
    "simple": nn.SimpleCell,
    "mgu": nn.MGUCell,
}


class Model(NamedTuple):
    """A recurrent model as two pure functions.

    Attributes:
      init: ``(key, example_x) -> (params, state0)``.
      apply: ``(params, state, x) -> (new_state, output)`` for one time step.
    """

    init: Callable[[jax.Array, Any], tuple[PyTree, PyTree]]
    apply: Callable[[PyTree, PyTree, Any], tuple[PyTree, Any]]


# ----------------------------------------------------------------------------- losses


def softmax_cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Cross-entropy in nats of integer ``label`` under ``logits`` (one step)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, label)


def squared_error(output: jax.Array, target: jax.Array) -> jax.Array:
    """``0.5 * ||output - target||²`` summed over the output."""
    return 0.5 * jnp.sum(jnp.square(output - target))


# ----------------------------------------------------------------------------- tanh RNN


def tanh_rnn(
    hidden_size: int, input_size: int, output_size: int, *, dtype: Any = jnp.float32
) -> Model:
    r"""A vanilla RNN: :math:`h_t = \tanh(W h_{t-1} + U x_t + b)`, :math:`o_t = V h_t + c`.

    Params are ``{"W", "U", "b", "V", "c"}``, the state is ``h`` of shape
    ``(hidden_size,)``. Weights are scaled by ``1/sqrt(fan_in)``.

    Example::

      model = uorojax.tanh_rnn(8, 3, 2)
      params, h0 = model.init(jax.random.key(0), jnp.zeros(3))
      h1, out = model.apply(params, h0, jnp.ones(3))
    """
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    input_size = checks.positive_int("input_size", input_size)
    output_size = checks.positive_int("output_size", output_size)

    def init(key, example_x=None):
        del example_x
        k = jax.random.split(key, 4)

        def normal(key, shape, fan_in):
            return jax.random.normal(key, shape, dtype) / jnp.sqrt(jnp.asarray(fan_in, dtype))

        params = {
            "W": normal(k[0], (hidden_size, hidden_size), hidden_size),
            "U": normal(k[1], (hidden_size, input_size), input_size),
            "b": jnp.zeros((hidden_size,), dtype),
            "V": normal(k[2], (output_size, hidden_size), hidden_size),
            "c": jnp.zeros((output_size,), dtype),
        }
        return params, jnp.zeros((hidden_size,), dtype)

    def apply(params, h, x):
        h = jnp.tanh(params["W"] @ h + params["U"] @ x + params["b"])
        return h, params["V"] @ h + params["c"]

    return Model(init, apply)


# ----------------------------------------------------------------------------- flax linen


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


def from_linen_cells(
    cells: nn.RNNCellBase | Sequence[nn.RNNCellBase],
    num_outputs: int,
    *,
    vocab_size: int | None = None,
    embed_dim: int | None = None,
) -> Model:
    """Builds a :class:`Model` from one or several ``flax.linen`` RNN cells.

    The state is a tuple with one carry per layer (for LSTM cells each carry is the
    ``(c, h)`` pair). Inputs are float vectors, or integer tokens when ``vocab_size`` is
    given (one-hot, or a learned embedding of width ``embed_dim``).

    Args:
      cells: an unbound linen cell such as ``nn.GRUCell(features=64)``, or a sequence of
        them for a stack (LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell, MGUCell).
      num_outputs: width of the dense readout (the vocabulary size for next-token
        prediction).
      vocab_size: number of input tokens, if inputs are integer tokens.
      embed_dim: embedding width; one-hot encoding when None.

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
    module = RecurrentStack(cells, num_outputs, vocab_size, embed_dim)

    def input_width(example_x) -> int:
        if embed_dim is not None:
            return embed_dim
        if vocab_size is not None:
            return vocab_size
        return jnp.shape(example_x)[-1]

    def init(key, example_x):
        carry_key, param_key = jax.random.split(key)
        width, carries = input_width(example_x), []
        for cell in cells:
            carries.append(cell.initialize_carry(carry_key, (width,)))
            width = cell.features
        state0 = tuple(carries)
        params = module.init(param_key, state0, example_x)
        return params, state0

    return Model(init, module.apply)


def linen_model(
    cell: str,
    hidden_size: int,
    num_outputs: int,
    *,
    num_layers: int = 1,
    vocab_size: int | None = None,
    embed_dim: int | None = None,
) -> Model:
    """A stack of ``num_layers`` linen cells named by ``cell`` (see ``LINEN_CELLS``).

    Convenience over :func:`from_linen_cells` for configs: ``linen_model("gru", 64, 10,
    vocab_size=10)``.
    """
    checks.one_of("cell", cell, tuple(LINEN_CELLS))
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    num_layers = checks.positive_int("num_layers", num_layers)
    cells = [LINEN_CELLS[cell](features=hidden_size) for _ in range(num_layers)]
    return from_linen_cells(cells, num_outputs, vocab_size=vocab_size, embed_dim=embed_dim)


# ----------------------------------------------------------------------------- flax nnx


def from_nnx(module: Any, initial_state: PyTree) -> tuple[PyTree, PyTree, Callable]:
    """Adapts a ``flax.nnx`` module whose ``__call__(state, x)`` returns ``(state, output)``.

    The module is split into its static graph, its ``nnx.Param`` leaves (the params that
    estimators differentiate) and any other variables (held fixed), then merged back on
    every step, so the returned ``apply_fn`` is pure.

    Args:
      module: an nnx module, for example an ``nnx.GRUCell`` or a user module that wraps
        a cell and a readout.
      initial_state: the module's initial recurrent state (``cell.initialize_carry``).

    Returns:
      ``(params, state0, apply_fn)``.

    Example::

      cell = nnx.GRUCell(3, 8, rngs=nnx.Rngs(0))
      params, h0, apply_fn = uorojax.from_nnx(cell, cell.initialize_carry((3,), nnx.Rngs(1)))
    """
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply_fn(params, state, x):
        return nnx.merge(graphdef, params, rest)(state, x)

    return params, initial_state, apply_fn
