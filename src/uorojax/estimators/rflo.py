r"""RFLO (Murray 2019): random-feedback local online learning, here with the true feedback.

Murray (2019), "Local online learning in recurrent networks with random feedback", eLife.
For the leaky RNN of :func:`~uorojax.leaky_rnn`,

.. math::
    u_t = W h_{t-1} + U x_t + b, \qquad
    h_t = (1 - 1/\tau)\, h_{t-1} + (1/\tau) \phi(u_t),

RFLO keeps, for every weight of unit i, the trace of its own leak only:

.. math::
    P_t = (1 - 1/\tau) P_{t-1} + (1/\tau)\, \phi'(u_t) \otimes [h_{t-1}; x_t; 1],
    \qquad \Delta [W, U, b] \propto \frac{\partial L_t}{\partial h_t} \odot P_t,

and the readout ``V`` (Murray's ``C``) gets its direct gradient. This is e-prop
(:mod:`uorojax.estimators.eprop`) on that model: without the recurrent kernel ``W`` the
state Jacobian is :math:`(1 - 1/\tau) I` and the one-step influence is
:math:`(1/\tau)\phi'(u_t) \otimes [h_{t-1}; x_t; 1]`, so :func:`rflo` is e-prop under
RFLO's name. Murray's random feedback matrix, which replaces :math:`V^\top` in the
learning signal, is **not** part of it: the signal here is the true
:math:`\partial L_t/\partial h_t`. On another model it computes e-prop.
"""

from __future__ import annotations

from typing import Any

from uorojax.estimators.base import ApplyFn, Estimator, LossFn
from uorojax.estimators.sparse_influence import EPropState, sparse_estimator
from uorojax.models.structure.types import Structure


def rflo(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    structure: Structure | None = None,
    example_x: Any = None,
) -> Estimator:
    r"""RFLO on a leaky RNN, with the true learning signal: e-prop under Murray's name.

    See the module docstring for the equations (Murray 2019). One stream; use
    :func:`~uorojax.per_stream` for a batch.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``, normally of
        :func:`~uorojax.leaky_rnn`.
      loss_fn: ``(output, y) -> scalar``.
      structure: None (the default) to infer the model's structure from ``example_x``
        (:func:`~uorojax.infer_structure`), or a :class:`~uorojax.structure.Structure`
        written by hand (``model.structure``), checked against the model before any
        gradient (at ``init_state`` with ``example_x``, else at the first step).
      example_x: one stream's input of one step (arrays or ``jax.ShapeDtypeStruct``):
        what the structure is inferred from, and checked at.

    Returns:
      An :class:`Estimator` whose carry is an :class:`~uorojax.EPropState`
      (its trace of ``W``, ``U`` and ``b`` is RFLO's ``P_t``).

    Example::

      model = uorojax.leaky_rnn(32, 3, 2, tau=10.0)
      est = uorojax.rflo(model.apply, uorojax.squared_error, structure=model.structure)
    """
    return sparse_estimator(
        "rflo", EPropState, apply_fn, loss_fn, structure, keep_diagonal=False, example_x=example_x
    )
