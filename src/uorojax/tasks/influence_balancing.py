"""Influence balancing (Tallec & Ollivier 2017): a linear system whose parameter has a
positive short-term and a negative long-term influence on the loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from uorojax import checks
from uorojax.models.model import Model


class InfluenceBalancing(NamedTuple):
    """The influence-balancing problem: a model, its loss, start point and stream.

    Attributes:
      model: linear system ``s_t = A s_{t-1} + θ σ``, output ``s_t[0]``.
      loss_fn: ``0.5 (s_t[0] - 1)²``.
      params: ``{"theta": θ0}``.
      state0: ``s_0`` (all ones).
      stream: a stream of dummy inputs and the constant target 1.
      fixed_point: the θ at which the loss gradient vanishes in the limit.
    """

    model: Model
    loss_fn: Callable
    params: Any
    state0: Any
    stream: Any
    fixed_point: float


class ConstantStream:
    """A stream of zero inputs (shape ``(1,)``) and constant targets."""

    def __init__(self, target: float, num_streams: int | None = None, dtype=np.float32):
        self.target, self.num_streams, self.dtype = target, num_streams, dtype

    def next_chunk(self, length):
        """``length`` zero inputs of shape ``(1,)`` and constant targets."""
        shape = (length,) if self.num_streams is None else (length, self.num_streams)
        return np.zeros((*shape, 1), self.dtype), np.full(shape, self.target, self.dtype)

    def example(self):
        """One step's input and target."""
        x, y = self.next_chunk(1)
        return x[0], y[0]

    def get_state(self):
        return {}

    def set_state(self, state):
        del state


def _system(n: int, num_positive: int) -> tuple[np.ndarray, np.ndarray]:
    """``A = 0.5 I + 0.5 (superdiagonal)`` and ``σ`` (``num_positive`` +1s, then -1s)."""
    n = checks.positive_int("n", n)
    if not 0 <= num_positive <= n:
        raise checks.ConfigError(f"num_positive must be in [0, n], got {num_positive}")
    a = 0.5 * np.eye(n) + 0.5 * np.eye(n, k=1)
    return a, np.concatenate([np.ones(num_positive), -np.ones(n - num_positive)])


def influence_model(
    n: int = 23, num_positive: int = 10, theta0: float = 0.5, *, dtype=jnp.float32
) -> Model:
    """The linear system ``s_t = A s_{t-1} + θ σ`` with output ``s_t[0]``: ``init`` gives
    ``{"theta": θ0}`` and ``s_0`` (all ones), whatever its key and example input.

    Example::

      model = uorojax.tasks.influence_model()
      params, s0 = model.init(jax.random.key(0), jnp.zeros(1))
    """
    a, sigma = _system(n, num_positive)
    a_j, sigma_j = jnp.asarray(a, dtype), jnp.asarray(sigma, dtype)

    def apply(params, s, x):
        del x
        s = a_j @ s + params["theta"] * sigma_j
        return s, s[0]

    def init(key, example_x=None):
        del key, example_x
        return {"theta": jnp.asarray(theta0, dtype)}, jnp.ones(len(sigma), dtype)

    return Model(init, apply)


def influence_loss(output, y):
    """``0.5 (s_t[0] - y)²``."""
    return 0.5 * jnp.square(output - y)


def influence_stream(
    n: int = 23,
    num_positive: int = 10,
    theta0: float = 0.5,
    *,
    seed: int = 0,
    num_streams: int | None = None,
    first_stream: int = 0,
    dtype=np.float32,
) -> ConstantStream:
    """The stream of an influence-balancing run: zero inputs and the target 1, whatever
    the seed, the block of streams and the problem (whose arguments are checked)."""
    del seed, first_stream, theta0
    _system(n, num_positive)
    return ConstantStream(1.0, num_streams, np.dtype(dtype))


def influence_balancing(
    n: int = 23, num_positive: int = 10, theta0: float = 0.5, *, dtype=jnp.float32, num_streams=None
) -> InfluenceBalancing:
    """Influence balancing (Tallec & Ollivier 2017): θ helps short-term, hurts long-term.

    ``A = 0.5 I + 0.5 (superdiagonal)``, ``σ`` has ``num_positive`` entries +1 then -1,
    θ is a scalar. Unrolled, ``s_t[0] → Σ_k (A^k σ)[0] θ``: the first unit sees θ's
    positive direct effect at once and the negative effect of the later units with a
    delay, so truncated BPTT follows the wrong sign. The target is 1 and the fixed point
    is ``θ* = 1 / Σ_j [(I - A)^{-1} σ]_0`` (-1/6 for the defaults). The pieces are
    :func:`influence_model`, :func:`influence_loss` and :func:`influence_stream`, which
    the task's entry in :data:`uorojax.tasks.registry.TASKS` names.

    Example::

      problem = uorojax.tasks.influence_balancing()
      problem.fixed_point  # -0.1666...
    """
    a, sigma = _system(n, num_positive)
    model = influence_model(n, num_positive, theta0, dtype=dtype)
    params, state0 = model.init(None)
    return InfluenceBalancing(
        model=model,
        loss_fn=influence_loss,
        params=params,
        state0=state0,
        stream=influence_stream(num_streams=num_streams, dtype=dtype),
        fixed_point=float(1.0 / np.linalg.solve(np.eye(len(sigma)) - a, sigma)[0]),
    )
