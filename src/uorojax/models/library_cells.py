"""Next-symbol models on the GRU cells of ``flax.nnx`` and Equinox, with no structure
written: their structure is inferred (:func:`~uorojax.infer_structure`) through
:func:`~uorojax.from_nnx` and :func:`~uorojax.from_equinox`.

Each reads an integer symbol, one-hot encodes it, steps the library's own GRU cell (its
fused gate kernels, ``(m, 3n)`` for nnx and ``(3n, m)`` for Equinox, as the library lays
them out) and reads out ``vocab_size`` logits with the library's dense layer. The config
names them ``nnx_gru`` and ``eqx_gru`` (:data:`~uorojax.models.registry.MODELS`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from uorojax.models.adapters import from_equinox, from_nnx
from uorojax.models.model import Model


def nnx_gru(hidden_size: int, vocab_size: int) -> Model:
    """``flax.nnx.GRUCell`` over one-hot symbols with an ``nnx.Linear`` readout.

    Args:
      hidden_size: the cell's units ``n``.
      vocab_size: the symbols, read as ``[0, vocab_size)`` and predicted as logits.

    Returns:
      A :class:`~uorojax.Model` with its inferred structure and ``example_x`` (a symbol).

    Example::

      model = nnx_gru(32, 10)
      params, h0 = model.init(jax.random.key(0), model.example_x)
      est = uorojax.snap1(model.apply, uorojax.softmax_cross_entropy,
                          example_x=model.example_x)
    """
    from flax import nnx

    class GRUModel(nnx.Module):
        def __init__(self, *, rngs: nnx.Rngs):
            self.cell = nnx.GRUCell(vocab_size, hidden_size, rngs=rngs)
            self.readout = nnx.Linear(hidden_size, vocab_size, rngs=rngs)

        def __call__(self, h, x):
            h, _ = self.cell(h, jax.nn.one_hot(x, vocab_size))
            return h, self.readout(h)

    x = jnp.zeros((), jnp.int32)
    return from_nnx(GRUModel, jnp.zeros(hidden_size), example_x=x)


def eqx_gru(hidden_size: int, vocab_size: int) -> Model:
    """``equinox.nn.GRUCell`` over one-hot symbols with an ``eqx.nn.Linear`` readout
    (needs ``equinox``).

    Args:
      hidden_size: the cell's units ``n``.
      vocab_size: the symbols, read as ``[0, vocab_size)`` and predicted as logits.

    Returns:
      A :class:`~uorojax.Model` with its inferred structure and ``example_x`` (a symbol).

    Example::

      model = eqx_gru(32, 10)
      params, h0 = model.init(jax.random.key(0), model.example_x)
    """
    import equinox as eqx

    class GRUModel(eqx.Module):
        cell: eqx.nn.GRUCell
        readout: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.cell = eqx.nn.GRUCell(vocab_size, hidden_size, key=k1)
            self.readout = eqx.nn.Linear(hidden_size, vocab_size, key=k2)

        def __call__(self, h, x):
            h = self.cell(jax.nn.one_hot(x, vocab_size), h)
            return h, self.readout(h)

    x = jnp.zeros((), jnp.int32)
    return from_equinox(functools.partial(GRUModel), jnp.zeros(hidden_size), example_x=x)


__all__ = ["eqx_gru", "nnx_gru"]
