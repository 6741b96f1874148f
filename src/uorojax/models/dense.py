"""Dense recurrent layers written in plain JAX: a tanh RNN and Murray's leaky RNN."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.model import Model
from uorojax.models.structure.types import RecurrentKernel, Structure, Units


def tanh_rnn(
    hidden_size: int,
    input_size: int,
    output_size: int,
    *,
    vocab_size: int | None = None,
    dtype: Any = jnp.float32,
) -> Model:
    r"""A vanilla RNN: :math:`h_t = \tanh(W h_{t-1} + U x_t + b)`, :math:`o_t = V h_t + c`.

    Params are ``{"W", "U", "b", "V", "c"}``, the state is ``h`` of shape
    ``(hidden_size,)``. Weights are scaled by ``1/sqrt(fan_in)``. With ``vocab_size``,
    inputs are integer tokens, one-hot encoded (``input_size`` must then equal it).

    Example::

      model = uorojax.tanh_rnn(8, 3, 2)
      params, h0 = model.init(jax.random.key(0), jnp.zeros(3))
      h1, out = model.apply(params, h0, jnp.ones(3))
    """

    def apply(params, h, x):
        h = jnp.tanh(params["W"] @ h + params["U"] @ x + params["b"])
        return h, params["V"] @ h + params["c"]

    return _dense_rnn(hidden_size, input_size, output_size, dtype, apply, vocab_size)


def leaky_rnn(
    hidden_size: int,
    input_size: int,
    output_size: int,
    *,
    tau: float,
    vocab_size: int | None = None,
    dtype: Any = jnp.float32,
) -> Model:
    r"""Murray's leaky RNN (Murray 2019, "Local online learning in recurrent networks with
    random feedback", eLife).

    .. math::
        u_t = W h_{t-1} + U x_t + b, \qquad
        h_t = (1 - 1/\tau)\, h_{t-1} + (1/\tau) \tanh(u_t), \qquad
        o_t = V h_t + c

    (Murray's readout ``C`` is ``V`` here.) Params, state and structure are those of
    :func:`tanh_rnn`, which is the case ``τ = 1``. RFLO (:func:`~uorojax.rflo`) is
    e-prop on this model.

    Args:
      hidden_size, input_size, output_size: the widths.
      tau: the time constant ``τ >= 1`` in steps.
      vocab_size: if set, inputs are integer tokens, one-hot encoded.
      dtype: of the params and state.

    Returns:
      A :class:`Model` with its :class:`~uorojax.structure.Structure` (the recurrent
      kernel ``W``, ``layer_inputs``).

    Example::

      model = uorojax.leaky_rnn(16, 3, 2, tau=5.0)
      params, h0 = model.init(jax.random.key(0))
    """
    tau = checks.non_negative_float("tau", tau)
    if tau < 1:
        raise checks.ConfigError(f"tau must be >= 1 (a time constant in steps), got {tau}")
    leak = 1.0 - 1.0 / tau

    def apply(params, h, x):
        u = params["W"] @ h + params["U"] @ x + params["b"]
        h = leak * h + jnp.tanh(u) / tau
        return h, params["V"] @ h + params["c"]

    return _dense_rnn(hidden_size, input_size, output_size, dtype, apply, vocab_size)


def _dense_rnn(hidden_size, input_size, output_size, dtype, step, vocab_size) -> Model:
    """The params ``{"W", "U", "b", "V", "c"}``, zero state and structure shared by
    :func:`tanh_rnn` and :func:`leaky_rnn` (one dense recurrent layer, ``W h + U x + b``),
    with the given step on vector inputs (one-hot tokens with ``vocab_size``)."""
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    input_size = checks.positive_int("input_size", input_size)
    output_size = checks.positive_int("output_size", output_size)
    if vocab_size is not None and vocab_size != input_size:
        raise checks.ConfigError(
            f"with vocab_size ({vocab_size}) the input is one-hot: input_size must equal it, "
            f"got {input_size}"
        )

    def encode(x):
        return x if vocab_size is None else jax.nn.one_hot(x, vocab_size, dtype=dtype)

    def apply(params, h, x):
        return step(params, h, encode(x))

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

    def layer_inputs(params, h, x):
        inputs = {"W": h, "U": encode(x), "b": jnp.ones((), h.dtype), "V": None, "c": None}
        return [inputs[name] for name in sorted(params)]

    structure = Structure(
        param_units=lambda path, leaf: (
            Units(0, 0) if path[:1] in (("W",), ("U",), ("b",)) else None
        ),
        state_units=lambda path, leaf: 0,
        recurrent_kernels=(RecurrentKernel(("W",), ("b",), (), "out_in"),),
        layer_inputs=layer_inputs,
    )
    return Model(init, apply, structure)
