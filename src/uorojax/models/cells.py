"""Recurrent cells of uorojax's own, written as ``flax.linen`` cells."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def symmetric_uniform(bound: float) -> nn.initializers.Initializer:
    """An initializer drawing uniformly on ``[-bound, bound]``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class ElementwiseMGUCell(nn.RNNCellBase):
    r"""A minimal gated unit whose recurrence is element-wise.

    .. math::
        f = \sigma(W_f x + u_f \odot h + b_f), \quad
        n = \tanh(W_n x + u_n \odot h + b_n), \quad
        h' = f \odot h + (1 - f) \odot n.

    The input maps ``W`` are dense, the recurrent weights ``u`` are vectors: unit i of
    ``h'`` depends on unit i of ``h`` alone, so ``∂h'/∂h`` is diagonal and SnAp-1 on
    this cell is exact RTRL at ``O(|Θ|)`` memory. Units mix across layers when stacked.
    Used like the flax cells (``linen_model("elementwise_mgu", ...)``).

    Attributes:
      features: number of units.
      gate_fn, activation_fn: σ and tanh by default.
      kernel_init: init of the input maps ``W``.
      recurrent_init: init of ``u`` (uniform on [-1, 1] by default).
      bias_init, forget_bias_init: init of ``b_n`` (zeros) and ``b_f`` (ones: the gate
        starts at σ(1) ≈ 0.73, keeping most of the state).
    """

    features: int
    gate_fn: Callable[..., Any] = nn.sigmoid
    activation_fn: Callable[..., Any] = nn.tanh
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    recurrent_init: nn.initializers.Initializer = symmetric_uniform(1.0)
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    forget_bias_init: nn.initializers.Initializer = nn.initializers.ones_init()
    carry_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, inputs):
        h = carry

        def recurrent(name):
            return self.param(name, self.recurrent_init, (self.features,), self.param_dtype)

        def dense(name, bias_init):
            return nn.Dense(
                self.features,
                kernel_init=self.kernel_init,
                bias_init=bias_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(inputs)

        f = self.gate_fn(dense("if", self.forget_bias_init) + recurrent("uf") * h)
        n = self.activation_fn(dense("in", self.bias_init) + recurrent("un") * h)
        new_h = f * h + (1.0 - f) * n
        return new_h, new_h

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        return self.carry_init(rng, (*input_shape[:-1], self.features), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1
