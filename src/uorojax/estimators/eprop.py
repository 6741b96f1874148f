r"""E-prop (Bellec et al. 2020): eligibility traces of each unit's own dynamics.

Bellec, Scherr, Subramoney, Hajek, Salaj, Legenstein & Maass (2020), "A solution to the
learning dilemma for recurrent networks of spiking neurons", Nature Communications.

E-prop keeps, of RTRL's influence :math:`J_t = \partial s_t/\partial\theta`, only what
flows through each unit's internal dynamics: SnAp-1's one-step pattern :math:`M`
(parameter :math:`\theta_p` moves only its unit :math:`u(p)`, in every state leaf of its
layer; see :mod:`uorojax.estimators.snap`) carried by :math:`\tilde A_t`, the
unit-diagonal blocks of :math:`A_t = \partial s_t/\partial s_{t-1}` computed with the
recurrent kernels *removed* (each kernel of the structure's ``recurrent_kernels`` set to
zero and its product with the state moved into its bias as a constant, so every value
is unchanged: :func:`~uorojax.structure.diagonalised_params` with
``keep_diagonal=False``):

.. math::  \tilde J_t = B_t \odot M + \tilde A_t \tilde J_{t-1}, \qquad
           g_t = \frac{\partial L_t}{\partial s_t} \tilde J_t
           \;(+\ \text{the readout's direct gradient}).

**The learning signal.** A step gives :math:`L_t` as a function of
:math:`(\theta, s_{t-1}, x_t)`, so :math:`\partial L_t/\partial s_t` is not at hand.
The gradient uses the identity

.. math::  \frac{\partial L_t}{\partial s_t} \tilde J_t
           = \delta\theta_t + \delta\tilde s_{t-1} \tilde J_{t-1},

with :math:`\delta\theta_t = \partial L_t/\partial\theta` (the exact direct gradient,
readout included) and :math:`\delta\tilde s_{t-1} = \frac{\partial L_t}{\partial s_t}
\tilde A_t`, both from one VJP of the step through the params without recurrent kernels
(there only the state is held constant, so the params' derivatives are exact). It holds
whenever a layer's params and old state reach :math:`L_t` only through the layer's new
state, as in every model uorojax builds: then :math:`\delta\theta` of the layer's
params is :math:`\frac{\partial L_t}{\partial s_t}(B_t \odot M)`. In a stack,
:math:`\partial L_t/\partial s_t` of a layer includes its paths through the layers
above within the step. The signal is the true one (symmetric feedback), not the random
or adaptive feedback variants of the paper.

Cases:

* Murray's leaky RNN (:func:`~uorojax.leaky_rnn`): :math:`\tilde A_t = (1 - 1/\tau) I`
  and :math:`B_t \odot M = (1/\tau)\,\phi'(u_t) \otimes [h_{t-1}; x_t; 1]`: RFLO
  (:func:`~uorojax.rflo`).
* LSTM, state ``(c, h)``: without the recurrent kernels the gates do not read
  :math:`h_{t-1}`, so per unit :math:`\tilde A_t = \begin{pmatrix} f_t & 0 \\ o_t
  \tanh'(c_t) f_t & 0 \end{pmatrix}` (rows new ``c, h``; columns old ``c, h``). The
  ``c`` trace is Bellec et al.'s eligibility vector :math:`e^c_t = f_t e^c_{t-1} +
  \partial c_t/\partial\theta`, the ``h`` trace is :math:`\partial h_t/\partial c_t\,
  e^c_t + \partial h_t/\partial\theta|_{c_t}`, and the gradient is
  :math:`\frac{\partial L_t}{\partial h_t}(\partial h_t/\partial c_t\, e^c_t +
  \partial h_t/\partial\theta|_{c_t})`: their LSTM rule, read out through ``h`` (the
  ``h`` trace itself never feeds back: its column of :math:`\tilde A_t` is zero).
* Zero recurrent kernels: :math:`\tilde A_t` is SnAp-1's, and e-prop equals SnAp-1.
* A plain tanh RNN: :math:`\tilde A_t = 0`, and e-prop is the one-step truncated
  gradient.

Memory: SnAp-1's, one number per parameter and state leaf of its layer (``O(|Θ|)``)
per stream. A step costs one VJP, one VJP per state leaf (:math:`\tilde A_t`) and one
VJP per state leaf (:math:`B_t \odot M`): SnAp-1's step, written once for B streams
(:func:`~uorojax.estimators.sparse_influence.sparse_step` with ``keep_diagonal=False``).
"""

from __future__ import annotations

from typing import Any

from uorojax.estimators.base import ApplyFn, Estimator, LossFn
from uorojax.estimators.sparse_influence import EPropState, sparse_estimator
from uorojax.models.structure.types import Structure

__all__ = ["EPropState", "eprop"]


def eprop(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    structure: Structure | None = None,
    example_x: Any = None,
) -> Estimator:
    r"""E-prop: eligibility traces through each unit's own dynamics, ``O(|Θ|)`` memory.

    The traces follow SnAp-1's pattern with the recurrent kernels taken out of the
    state Jacobian, and the gradient is the learning signal ``∂L_t/∂s_t`` times them
    (see the module docstring; Bellec et al. 2020). Biased: it drops every path through
    the recurrent kernels. One stream; use :func:`~uorojax.per_stream` for a batch.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      structure: None (the default) to infer the model's structure from ``example_x``
        (:func:`~uorojax.infer_structure`), or a :class:`~uorojax.structure.Structure`
        written by hand (``model.structure``), checked against the model before any
        gradient (at ``init_state`` with ``example_x``, else at the first step).
      example_x: one stream's input of one step (arrays or ``jax.ShapeDtypeStruct``):
        what the structure is inferred from, and checked at.

    Returns:
      An :class:`Estimator` whose carry is an :class:`EPropState`.

    Raises:
      ConfigError: (at ``init_state``) without ``structure`` or ``example_x``, for a
        model whose structure cannot be inferred (the reason, and what to use instead),
        for a hand-written structure that differs from the model (the leaf and what it
        actually moves), or for a parameter the pattern cannot hold.

    Example::

      model = uorojax.linen_model("lstm", 32, vocab, vocab_size=vocab)
      est = uorojax.eprop(model.apply, uorojax.softmax_cross_entropy,
                          structure=model.structure)
    """
    return sparse_estimator(
        "eprop", EPropState, apply_fn, loss_fn, structure, keep_diagonal=False, example_x=example_x
    )
