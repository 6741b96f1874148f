r"""Linear recurrent units (LRU) and deep LRU stacks, in real arithmetic.

The LRU of Orvieto et al. (2023), "Resurrecting recurrent neural networks for long
sequences", is a complex diagonal linear recurrence with a linear readout:

.. math::
    h_t = \lambda \odot h_{t-1} + \gamma \odot (B x_t), \qquad
    y_t = \mathrm{Re}(C h_t) + D \odot x_t,

    \lambda = \exp(-e^{\nu} + i e^{\theta}), \qquad \gamma = \sqrt{1 - |\lambda|^2}.

uorojax holds every complex quantity as two real arrays (``h = h_re + i h_im``,
``B = B_re + i B_im``, ``C = C_re + i C_im``), so ``jax.jvp``/``jax.vjp`` stay exact
and every estimator sees real arrays. With :math:`r = e^{-e^\nu}`, :math:`\phi = e^\theta`,
:math:`\lambda_{re} = r\cos\phi`, :math:`\lambda_{im} = r\sin\phi`:

.. math::
    h^{re}_t = \lambda_{re} h^{re}_{t-1} - \lambda_{im} h^{im}_{t-1} + \gamma B_{re} x_t,
    \qquad
    h^{im}_t = \lambda_{im} h^{re}_{t-1} + \lambda_{re} h^{im}_{t-1} + \gamma B_{im} x_t,

    y_t = C_{re} h^{re}_t - C_{im} h^{im}_t + D \odot x_t.

Per unit, :math:`\partial h_t/\partial h_{t-1}` is a 2×2 rotation-scale block between
the two state leaves of the layer, and ν, θ and row i of ``B`` move only unit i: SnAp-1
on one LRU layer is exact RTRL (Zucchet et al. 2023, "Online learning of long-range
dependencies", NeurIPS).

**γ is a function of ν**, :math:`\gamma = \sqrt{1 - |\lambda|^2}` computed at every step
(as ``sqrt(-expm1(-2 e^ν))``, accurate as :math:`|\lambda| \to 1`), not a separate
parameter. The code of Orvieto et al. and of Zucchet et al. learns ``gamma_log`` on its
own, initialised to this value. Tied to ν, the normalisation holds throughout training
rather than only at initialisation: a white input of unit variance keeps a unit-variance
state at every :math:`|\lambda|`, so an online learner moving ν towards long memory
(:math:`|\lambda| \to 1`) does not blow the state up; γ's derivative enters ν's gradient
and trace exactly.

:func:`lru_stack` builds the deep architecture of Orvieto et al. and Zucchet et al.
(encoder; per layer: norm → LRU → GELU → GLU or MLP → skip connection; readout) with its
:class:`~uorojax.structure.Structure`, whose encoder, norms, ``C``, ``D`` and GLU/MLP
weights are :class:`~uorojax.structure.Feedforward`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.models.structure.types import Feedforward, Units

PyTree = Any

RECURRENT_PARAMS = ("nu", "theta", "B_re", "B_im")
"""The LRU's parameters that move its own units (each along axis 0)."""

OUTPUT_PARAMS = ("C_re", "C_im", "D")
"""The LRU's parameters that move no state of its own layer (its output map)."""


def eigenvalues(nu: jax.Array, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Real and imaginary parts of :math:`\lambda = \exp(-e^{\nu} + i e^{\theta})`."""
    radius = jnp.exp(-jnp.exp(nu))
    phase = jnp.exp(theta)
    return radius * jnp.cos(phase), radius * jnp.sin(phase)


def input_scale(nu: jax.Array) -> jax.Array:
    r""":math:`\gamma = \sqrt{1 - |\lambda|^2} = \sqrt{1 - e^{-2 e^{\nu}}}`."""
    return jnp.sqrt(-jnp.expm1(-2.0 * jnp.exp(nu)))


def lru_recurrence(params: dict, h_re: jax.Array, h_im: jax.Array, x: jax.Array):
    r"""One step of :math:`h_t = \lambda \odot h_{t-1} + \gamma \odot (B x_t)` in real
    and imaginary parts.

    Args:
      params: ``nu``, ``theta`` (``(n,)``), ``B_re``, ``B_im`` (``(n, d_in)``).
      h_re, h_im: ``h_{t-1}`` (``(..., n)``).
      x: ``x_t`` (``(..., d_in)``).

    Returns:
      ``(h_re, h_im)`` of ``h_t``.
    """
    lam_re, lam_im = eigenvalues(params["nu"], params["theta"])
    gamma = input_scale(params["nu"])
    new_re = lam_re * h_re - lam_im * h_im + gamma * (x @ params["B_re"].T)
    new_im = lam_im * h_re + lam_re * h_im + gamma * (x @ params["B_im"].T)
    return new_re, new_im


def lru_readout(params: dict, h_re: jax.Array, h_im: jax.Array, x: jax.Array) -> jax.Array:
    r""":math:`y_t = \mathrm{Re}(C h_t) + D \odot x_t = C_{re} h^{re}_t - C_{im} h^{im}_t
    + D \odot x_t` (``C_re``, ``C_im``: ``(d_in, n)``; ``D``: ``(d_in,)``)."""
    return h_re @ params["C_re"].T - h_im @ params["C_im"].T + params["D"] * x


def check_ring(r_min: float, r_max: float, max_phase: float) -> None:
    """The ring ``r_min <= |λ| <= r_max`` (with ``r_max <= 1``, ``r_min < 1``,
    ``r_max > 0``) and a positive ``max_phase``; raises ConfigError otherwise."""
    r_min = checks.non_negative_float("r_min", r_min)
    r_max = checks.non_negative_float("r_max", r_max)
    max_phase = checks.non_negative_float("max_phase", max_phase)
    if not (r_min <= r_max <= 1.0 and r_min < 1.0 and r_max > 0.0):
        raise checks.ConfigError(
            f"the LRU ring needs 0 <= r_min <= r_max <= 1, r_min < 1 and r_max > 0 "
            f"(|λ| = 1 has no finite ν), got r_min={r_min}, r_max={r_max}"
        )
    if max_phase <= 0.0:
        raise checks.ConfigError(f"max_phase must be > 0, got {max_phase}")


def _uniform_open(key, shape, dtype):
    """Uniform on ``[ε, 1)``, ε the dtype's machine epsilon: keeps ν and θ finite."""
    return jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).eps)


def ring_nu_init(r_min: float, r_max: float) -> nn.initializers.Initializer:
    r"""ν such that :math:`|\lambda|` is uniform on the ring ``[r_min, r_max]`` of the
    complex plane (uniform area: :math:`|\lambda|^2` uniform on
    :math:`[r_{min}^2, r_{max}^2]`), Orvieto et al. (2023), Lemma 3.2:
    :math:`\nu = \log(-\tfrac12 \log(u (r_{max}^2 - r_{min}^2) + r_{min}^2))`."""

    def init(key, shape, dtype=jnp.float32):
        u = _uniform_open(key, shape, dtype)
        return jnp.log(-0.5 * jnp.log(u * (r_max**2 - r_min**2) + r_min**2))

    return init


def phase_init(max_phase: float) -> nn.initializers.Initializer:
    r"""θ with the phase :math:`e^\theta` uniform on ``[0, max_phase]``:
    :math:`\theta = \log(\text{max\_phase} \cdot u)`."""

    def init(key, shape, dtype=jnp.float32):
        return jnp.log(max_phase * _uniform_open(key, shape, dtype))

    return init


class LRUCell(nn.RNNCellBase):
    r"""A linear recurrent unit (Orvieto et al. 2023) as a flax linen RNN cell.

    See the module docstring for the equations and for γ (a function of ν). The carry
    is ``(h_re, h_im)``, two real vectors of ``features`` units; the output ``y_t`` has
    the width of the input (``D ⊙ x`` needs ``d_out = d_in``, as in Orvieto et al.).
    In :func:`~uorojax.linen_model` (``"lru"``) ``hidden_size`` is ``features``, the
    number of complex units ``d_state`` (``2 · hidden_size`` real state numbers), and
    ``d_model`` is the input width (the vocabulary for one-hot tokens).

    Parameters (all real): ``nu``, ``theta`` ``(n,)``; ``B_re``, ``B_im`` ``(n, d_in)``,
    drawn from ``N(0, 1/(2 d_in))``; ``C_re``, ``C_im`` ``(d_in, n)``, from
    ``N(0, 1/n)``; ``D`` ``(d_in,)``, from ``N(0, 1)`` (Orvieto et al.; Zucchet et al.
    2023, ``online_lru/rec.py``). ``nu``, ``theta`` and row i of ``B`` move only unit i
    (:func:`lru_param_units`); ``C`` and ``D`` move no state of the layer.

    Attributes:
      features: ``d_state``, the number of complex units.
      r_min, r_max: the ring of :math:`|\lambda|` at initialisation
        (:func:`ring_nu_init`); defaults 0 and 1 (Zucchet et al.).
      max_phase: phases drawn on ``[0, max_phase]`` (:func:`phase_init`); 2π.
      carry_init: init of ``(h_re, h_im)`` (zeros).
      param_dtype: dtype of the parameters and the carry.

    Example::

      cell = uorojax.LRUCell(features=8)
      model = uorojax.from_linen_cells(cell, 10, vocab_size=10)
    """

    features: int
    r_min: float = 0.0
    r_max: float = 1.0
    max_phase: float = 2 * math.pi
    carry_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        checks.positive_int("features", self.features)
        check_ring(self.r_min, self.r_max, self.max_phase)
        super().__post_init__()

    @nn.compact
    def __call__(self, carry, inputs):
        h_re, h_im = carry
        n, d_in = self.features, jnp.shape(inputs)[-1]

        def param(name, init, shape):
            return self.param(name, init, shape, self.param_dtype)

        normal = nn.initializers.normal
        params = {
            "nu": param("nu", ring_nu_init(self.r_min, self.r_max), (n,)),
            "theta": param("theta", phase_init(self.max_phase), (n,)),
            "B_re": param("B_re", normal(1.0 / math.sqrt(2 * d_in)), (n, d_in)),
            "B_im": param("B_im", normal(1.0 / math.sqrt(2 * d_in)), (n, d_in)),
            "C_re": param("C_re", normal(1.0 / math.sqrt(n)), (d_in, n)),
            "C_im": param("C_im", normal(1.0 / math.sqrt(n)), (d_in, n)),
            "D": param("D", normal(1.0), (d_in,)),
        }
        new_re, new_im = lru_recurrence(params, h_re, h_im, inputs)
        return (new_re, new_im), lru_readout(params, new_re, new_im, inputs)

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        shape = (*input_shape[:-1], self.features)
        key_re, key_im = jax.random.split(rng)
        return (
            self.carry_init(key_re, shape, self.param_dtype),
            self.carry_init(key_im, shape, self.param_dtype),
        )

    @property
    def num_feature_axes(self) -> int:
        return 1


def lru_param_units(name: str, layer: int, feeds: int | None) -> Units | Feedforward | None:
    """What an LRU parameter moves in one step, for its :class:`Structure`.

    Args:
      name: the parameter's name in the cell (``nu``, ``theta``, ``B_re``, ...).
      layer: the cell's layer.
      feeds: the layer the cell's output feeds within the step (None: only the readout).

    Returns:
      ``Units(layer, 0)`` for ``nu``, ``theta``, ``B_re``, ``B_im`` (entry i moves unit i);
      ``Feedforward(feeds)`` for ``C_re``, ``C_im``, ``D``, or None when the output
      feeds only the readout.
    """
    if name in RECURRENT_PARAMS:
        return Units(layer, 0)
    if name in OUTPUT_PARAMS:
        return None if feeds is None else Feedforward(feeds)
    known = RECURRENT_PARAMS + OUTPUT_PARAMS
    raise checks.ConfigError(f"unknown LRU parameter {name!r}; expected one of {known}")
