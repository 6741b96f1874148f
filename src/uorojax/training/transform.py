"""An estimator as an optax gradient transformation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from uorojax.estimators.base import Estimator
from uorojax.training import flat
from uorojax.training.update import step_finite, when_ready
from uorojax.tree import zeros_like

PyTree = Any


class OnlineGradientState(NamedTuple):
    """State of :func:`as_optax`.

    Attributes:
      carry: the estimator carry (the last finite one).
      loss: the last step's loss (mean over streams).
      finite: whether the last step's loss, gradient and new carry were all finite. When
        False the transformation emitted zeros and kept the previous carry.
      ready: whether the last step emitted a gradient (False inside a window of a
        windowed estimator).
      opt_state: the state of the ``optimizer`` given to :func:`as_optax`, or None.
    """

    carry: PyTree
    loss: jax.Array
    finite: jax.Array
    ready: jax.Array
    opt_state: PyTree = None


def as_optax(
    estimator: Estimator,
    state0: PyTree,
    optimizer: optax.GradientTransformation | None = None,
    *,
    flatten: bool | str = "auto",
) -> optax.GradientTransformationExtraArgs:
    """Turns an estimator into an optax gradient transformation.

    ``update(updates, state, params, *, x, y, key)`` ignores the incoming ``updates``
    (pass ``None``) and emits the estimator's online gradient for the step ``(x, y)``,
    advancing the carry held in the optax state. Chain it in front of any optimizer::

        tx = optax.chain(
            uorojax.as_optax(uorojax.uoro(apply_fn, loss_fn), state0),
            optax.clip_by_global_norm(1.0),
            optax.adam(1e-3),
        )
        opt_state = tx.init(params)
        updates, opt_state = tx.update(None, opt_state, params, x=x, y=y, key=key)
        params = optax.apply_updates(params, updates)

    A step whose loss, gradient or new carry is not finite emits zeros and keeps the
    previous carry (``opt_state[0].finite`` is then False), so no NaN or inf reaches the
    optimizer, the params or the carry.

    With ``optimizer=``, the transformation applies it itself, and only on steps that
    emit a finite gradient: a windowed estimator (TBPTT, truncated UORO) then moves the
    optimizer once per window, and a dropped step is not an optimizer step, exactly as
    :func:`~uorojax.make_trainer` does::

        tx = uorojax.as_optax(tbptt_estimator, state0, optimizer=optax.adam(1e-3))

    Args:
      estimator: any :class:`~uorojax.Estimator`.
      state0: the model's initial recurrent state.
      optimizer: an optax transformation to apply where a gradient is ready, or None to
        emit the gradients for the transformations chained after this one.
      flatten: run ``optimizer`` on the params raveled into one vector, as
        :func:`~uorojax.make_trainer` does (``"auto"``: when it is elementwise; see
        ``uorojax.training.flat``). Its state is then the state for the flat vector.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its state is an
      :class:`OnlineGradientState`.

    Example::

      tx = uorojax.as_optax(uorojax.uoro(apply_fn, loss_fn), h0, optimizer=optax.adam(1e-3))
    """
    flat.check_flatten(flatten)

    def init_fn(params):
        carry = estimator.init_state(params, state0)
        loss_dtype = jnp.result_type(jax.tree.leaves(params)[0])
        true = jnp.asarray(True)
        opt_state = None
        if optimizer is not None:
            opt_state = flat.init(optimizer, params, flat.flattens(optimizer, params, flatten))
        return OnlineGradientState(carry, jnp.zeros((), loss_dtype), true, true, opt_state)

    def update_fn(updates, state, params=None, *, x=None, y=None, key=None, **extra_args):
        del updates, extra_args
        if params is None or x is None or y is None or key is None:
            raise ValueError("as_optax's update needs params and the keyword args x, y and key")
        grads, carry, info = estimator.step(params, state.carry, x, y, key)
        finite = step_finite(info, grads, carry)
        ready = jnp.asarray(info.ready)
        grads, carry = jax.lax.cond(
            finite, lambda: (grads, carry), lambda: (zeros_like(grads), state.carry)
        )
        opt_state = state.opt_state
        gate = finite & ready  # the trainer's gate: only finite, ready gradients move it
        if optimizer is not None and flat.flattens(optimizer, params, flatten):
            _, _, updates, opt_state = flat.flat_update(
                when_ready(optimizer), grads, state.opt_state, params, ready=gate
            )
            grads = flat.unravel_like(updates, params)
        elif optimizer is not None:
            grads, opt_state = when_ready(optimizer).update(
                grads, state.opt_state, params, ready=gate
            )
        loss = jnp.mean(info.loss).astype(state.loss.dtype)
        return grads, OnlineGradientState(carry, loss, finite, ready, opt_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
