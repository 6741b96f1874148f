"""Next-symbol GRU models with no structure written: the GRU cells of ``flax.nnx`` and
Equinox, and a GRU stack in plain JAX. Their structure is inferred
(:func:`~uorojax.infer_structure`), for the library cells through
:func:`~uorojax.from_nnx` and :func:`~uorojax.from_equinox`.

Each reads an integer symbol, one-hot encodes it, steps its GRU (the library's own cell
with its fused gate kernels, ``(m, 3n)`` for nnx and ``(3n, m)`` for Equinox, as the
library lays them out; or one ``K @ h`` kernel per gate and layer in plain JAX) and reads
out ``vocab_size`` logits. The config names them ``nnx_gru``, ``eqx_gru`` and ``jax_gru``
(:data:`~uorojax.models.registry.MODELS`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.adapters import from_equinox, from_nnx
from uorojax.models.model import Model
from uorojax.models.structure import infer_structure


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


GATES = ("z", "r", "h")  # update, reset, candidate


def jax_gru(hidden_size: int, vocab_size: int, *, num_layers: int = 1) -> Model:
    r"""A stack of ``num_layers`` GRU layers written in plain JAX (dicts of arrays, one
    state vector a layer, no module library), over one-hot symbols, with a dense readout.

    Layer :math:`l` reads :math:`a` (the one-hot symbol, or layer :math:`l - 1`'s new
    state) and its old state :math:`h`, with the reset gate after the recurrent kernel
    (as flax and Equinox write it, so that SnAp-1 and e-prop apply):

    .. math::
        z = σ(W_z a + U_z h + b_z), \quad r = σ(W_r a + U_r h + b_r), \quad
        \hat h = \tanh(W_h a + r ⊙ (U_h h + c_h) + b_h), \quad
        h' = (1 - z) ⊙ \hat h + z ⊙ h.

    Args:
      hidden_size: the units ``n`` of each layer.
      vocab_size: the symbols, read as ``[0, vocab_size)`` and predicted as logits.
      num_layers: the layers (>= 1).

    Returns:
      A :class:`~uorojax.Model` with its inferred structure and ``example_x`` (a symbol).
      Params: ``{"layers": [{"Wz", "Uz", "bz", "Wr", ..., "ch"}, ...], "readout": {"V",
      "c"}}``, weights drawn as ``N(0, 1/fan_in)``; state: a tuple of zero vectors.

    Example::

      model = jax_gru(32, 10, num_layers=2)
      params, state = model.init(jax.random.key(0), model.example_x)
      est = uorojax.es_d_rtrl(model.apply, uorojax.softmax_cross_entropy,
                              example_x=model.example_x)
    """
    num_layers = checks.positive_int("num_layers", num_layers)

    def init(key, example_x=None):
        del example_x  # the widths are the arguments'
        params, width = {"layers": [], "readout": {}}, vocab_size
        for key_l in jax.random.split(key, num_layers):
            keys = iter(jax.random.split(key_l, 2 * len(GATES)))
            layer = {}
            for g in GATES:
                layer[f"W{g}"] = jax.random.normal(next(keys), (hidden_size, width)) / width**0.5
                layer[f"U{g}"] = jax.random.normal(next(keys), (hidden_size, hidden_size)) / (
                    hidden_size**0.5
                )
                layer[f"b{g}"] = jnp.zeros(hidden_size)
            layer["ch"] = jnp.zeros(hidden_size)
            params["layers"].append(layer)
            width = hidden_size
        readout_key = jax.random.fold_in(key, num_layers)
        params["readout"]["V"] = jax.random.normal(readout_key, (vocab_size, width)) / width**0.5
        params["readout"]["c"] = jnp.zeros(vocab_size)
        return params, tuple(jnp.zeros(hidden_size) for _ in range(num_layers))

    def apply(params, state, x):
        a, new_state = jax.nn.one_hot(x, vocab_size), []
        for p, h in zip(params["layers"], state):
            z = jax.nn.sigmoid(p["Wz"] @ a + p["Uz"] @ h + p["bz"])
            r = jax.nn.sigmoid(p["Wr"] @ a + p["Ur"] @ h + p["br"])
            candidate = jnp.tanh(p["Wh"] @ a + r * (p["Uh"] @ h + p["ch"]) + p["bh"])
            a = (1.0 - z) * candidate + z * h
            new_state.append(a)
        return tuple(new_state), params["readout"]["V"] @ a + params["readout"]["c"]

    x = jnp.zeros((), jnp.int32)
    params, state = jax.eval_shape(init, jax.random.key(0), x)  # shapes: all it reads
    return Model(init, apply, infer_structure(apply, params, state, x), x)


__all__ = ["eqx_gru", "jax_gru", "nnx_gru"]
