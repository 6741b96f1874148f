"""Deep LRU networks (Orvieto et al. 2023; Zucchet et al. 2023): encoder, blocks of
norm → LRU → GELU → GLU or MLP → skip, and a readout, with their structure."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.lru import LRUCell, check_ring, lru_param_units
from uorojax.models.model import Model
from uorojax.models.structure.types import Feedforward, Structure

MLPS = ("glu", "mlp")
NORMS = ("layer", "none")


class LRUBlock(nn.Module):
    """One layer of a deep LRU stack: ``x + MLP(GELU(LRU(norm(x))))``.

    The block of Zucchet et al. (2023) (``online_lru/layers.py``, pre-norm, ``full_glu``)
    and Orvieto et al. (2023): layer norm, the LRU, GELU, then a GLU
    ``W_v y ⊙ σ(W_g y)`` (``mlp="glu"``) or one dense map (``mlp="mlp"``), added to the
    block's input. Dropout is left out.
    """

    d_model: int
    d_state: int
    r_min: float
    r_max: float
    max_phase: float
    mlp: str = "glu"
    norm: str = "layer"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x):
        z = (
            nn.LayerNorm(param_dtype=self.param_dtype, name="norm")(x)
            if self.norm == "layer"
            else x
        )
        lru = LRUCell(self.d_state, self.r_min, self.r_max, self.max_phase,
                      param_dtype=self.param_dtype, name="lru")  # fmt: skip
        carry, y = lru(carry, z)
        y = nn.gelu(y)

        def dense(name):
            return nn.Dense(self.d_model, param_dtype=self.param_dtype, name=name)(y)

        if self.mlp == "glu":
            y = dense("value") * nn.sigmoid(dense("gate"))
        else:
            y = dense("dense")
        return carry, x + y


class LRUStack(nn.Module):
    """Encoder → ``num_layers`` :class:`LRUBlock` → readout (see :func:`lru_stack`)."""

    num_layers: int
    d_model: int
    d_state: int
    num_outputs: int
    vocab_size: int | None = None
    r_min: float = 0.0
    r_max: float = 1.0
    max_phase: float = 2 * math.pi
    mlp: str = "glu"
    norm: str = "layer"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x):
        if self.vocab_size is not None:
            x = jax.nn.one_hot(x, self.vocab_size, dtype=self.param_dtype)
        x = nn.Dense(self.d_model, param_dtype=self.param_dtype, name="encoder")(x)
        new_carry = []
        for layer in range(self.num_layers):
            block = LRUBlock(self.d_model, self.d_state, self.r_min, self.r_max, self.max_phase,
                             self.mlp, self.norm, self.param_dtype, name=f"layers_{layer}")  # fmt: skip
            c, x = block(carry[layer], x)
            new_carry.append(c)
        readout = nn.Dense(self.num_outputs, param_dtype=self.param_dtype, name="readout")
        return tuple(new_carry), readout(x)


def lru_stack_structure(num_layers: int) -> Structure:
    """The :class:`Structure` of an :class:`LRUStack` of ``num_layers`` layers.

    State leaf ``(l, 0)``/``(l, 1)`` (``h_re``, ``h_im``) is layer l. Layer l's ``nu``,
    ``theta``, ``B_re``, ``B_im`` are ``Units(l, 0)``; the encoder is ``Feedforward(0)``;
    layer l's norm is ``Feedforward(l)``; its ``C``, ``D`` and GLU/MLP weights are
    ``Feedforward(l + 1)`` (None on the top layer, which feeds only the readout); the
    readout moves no state.
    """

    def param_units(path, leaf):
        del leaf
        part = path[1]
        if part == "encoder":
            return Feedforward(0)
        if part == "readout":
            return None
        layer = int(part[len("layers_") :])
        feeds = layer + 1 if layer + 1 < num_layers else None
        if path[2] == "norm":
            return Feedforward(layer)
        if path[2] == "lru":
            return lru_param_units(path[3], layer, feeds)
        return None if feeds is None else Feedforward(feeds)  # the GLU or MLP

    return Structure(param_units=param_units, state_units=lambda path, leaf: path[0])


def lru_stack(
    num_layers: int,
    d_model: int,
    d_state: int,
    num_outputs: int,
    *,
    vocab_size: int | None = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    mlp: str = "glu",
    norm: str = "layer",
    dtype: Any = jnp.float32,
) -> Model:
    r"""A deep LRU network (Orvieto et al. 2023; Zucchet et al. 2023) as a :class:`Model`.

    ``x_0 = W_e x_t + b_e`` (one-hot tokens when ``vocab_size`` is set, else vectors);
    for each layer l, ``x_{l+1} = x_l + M_l(GELU(LRU_l(norm_l(x_l))))`` with ``M_l`` a
    GLU ``W_v y ⊙ σ(W_g y)`` or a dense map; output ``W_o x_L + b_o``. This follows
    Zucchet et al.'s code (``online_lru``: a dense encoder, pre-norm ``LayerNorm``,
    ``full_glu``, ``r_min = 0``, ``r_max = 1``, ``max_phase`` ≈ 2π, the LRU inits of
    :class:`LRUCell`), without dropout; γ is tied to ν (module docstring).

    The state is one ``(h_re, h_im)`` pair of ``(d_state,)`` vectors per layer. The
    structure (:func:`lru_stack_structure`) declares each layer's ``nu``, ``theta``,
    ``B_re``, ``B_im`` on its own units, and the encoder, norms, ``C``, ``D`` and GLU/MLP
    weights :class:`~uorojax.structure.Feedforward`. :func:`~uorojax.snap1` on this
    model then computes exact per-layer RTRL for each layer's recurrent parameters (ν,
    θ, B; γ is a function of ν), spatial backpropagation within the step for every
    parameter, and no temporal trace for the feedforward parameters: the online rule of
    Zucchet et al. (2023). It is not exact RTRL: a layer's parameters also move the
    layers above through their states' histories, which is dropped.

    Args:
      num_layers: number of LRU blocks.
      d_model: width of the residual stream (each LRU's input and output).
      d_state: complex units per LRU.
      num_outputs: width of the readout.
      vocab_size: if set, inputs are integer tokens, one-hot encoded.
      r_min, r_max, max_phase: the LRU's initial eigenvalue ring and phase range.
      mlp: ``"glu"`` or ``"mlp"``.
      norm: ``"layer"`` (pre-norm) or ``"none"``.
      dtype: dtype of the parameters and the state.

    Returns:
      A :class:`~uorojax.Model`; ``init(key, example_x)`` returns ``(params, state0)``
      with zero states.

    Example::

      model = uorojax.lru_stack(2, 16, 8, 10, vocab_size=10)
      params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
      est = uorojax.snap1(model.apply, uorojax.softmax_cross_entropy,
                          structure=model.structure)
    """
    num_layers = checks.positive_int("num_layers", num_layers)
    d_model = checks.positive_int("d_model", d_model)
    d_state = checks.positive_int("d_state", d_state)
    num_outputs = checks.positive_int("num_outputs", num_outputs)
    if vocab_size is not None:
        vocab_size = checks.positive_int("vocab_size", vocab_size)
    check_ring(r_min, r_max, max_phase)
    checks.one_of("mlp", mlp, MLPS)
    checks.one_of("norm", norm, NORMS)
    module = LRUStack(num_layers, d_model, d_state, num_outputs, vocab_size, r_min, r_max,
                      max_phase, mlp, norm, dtype)  # fmt: skip

    def init(key, example_x):
        zeros = jnp.zeros((d_state,), dtype)
        state0 = tuple((zeros, zeros) for _ in range(num_layers))
        return module.init(key, state0, example_x), state0

    return Model(init, module.apply, lru_stack_structure(num_layers))
