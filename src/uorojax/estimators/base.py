r"""The estimator protocol and the pieces every estimator shares.

A model is two pure functions::

    apply_fn(params, state, x) -> (new_state, output)     # one time step
    loss_fn(output, y) -> scalar                           # the step loss L_t

with ``state`` and ``params`` any pytrees. Writing :math:`s_t, o_t = F(\theta, s_{t-1}, x_t)`
and :math:`J_t = \partial s_t / \partial\theta`, the online gradient of the step loss is

.. math::  \frac{dL_t}{d\theta} = \frac{\partial L_t}{\partial s_{t-1}} J_{t-1}
           + \frac{\partial L_t}{\partial \theta}, \qquad
           J_t = \underbrace{\frac{\partial F_s}{\partial s}}_{A_t} J_{t-1}
           + \underbrace{\frac{\partial F_s}{\partial \theta}}_{B_t}.

An :class:`Estimator` is two pure functions and one number, in the style of
``optax.GradientTransformation``::

    carry = est.init_state(params, state0)
    grads, carry, info = est.step(params, carry, x, y, key)
    est.window    # steps between gradients: 1, or a truncation T

The contract (``docs/protocol.md``; ``tests/test_protocol.py`` checks it for every
estimator in the registry):

* ``init_state(params, state0)`` takes nothing else; whatever an estimator needs to size
  its carry (TBPTT's window buffers) it is given at construction.
* ``step`` is pure and traceable: it runs under ``jax.jit``, ``jax.lax.scan`` and
  ``jax.vmap``. ``grads`` has the structure and dtypes of ``params``.
* ``info.ready`` is a JAX bool scalar: True on the steps whose ``grads`` is a gradient to
  apply. An estimator with ``window == 1`` is ready on every step; one with ``window ==
  T`` is ready on the last step of every window of T steps (and returns zeros before).

Two optional fields hold faster ways to do the same work: ``window_step`` (a whole
window at once) and ``per_stream`` (the estimator for B streams, fused).
:func:`run_window` and :func:`~uorojax.per_stream` use them where they are given and the
protocol otherwise (optax has no such fields; ``docs/protocol.md`` says what its
``GradientTransformationExtraArgs`` does and what carries over). They are fields, so
``est._replace(step=wrapper)`` keeps them: a wrapper of ``step`` must replace them too
(or set them to None) to run everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.tree import swap_leading_axes, zeros_like

PyTree = Any
ApplyFn = Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree]]
LossFn = Callable[[PyTree, PyTree], jax.Array]
StepFn = Callable[..., tuple[PyTree, PyTree, "StepInfo"]]


class StepInfo(NamedTuple):
    """What one estimator step reports besides the gradient.

    Attributes:
      loss: the step loss ``loss_fn(output, y)`` (a scalar; per stream under vmap).
      output: the model output for this step.
      ready: a JAX bool scalar, True when ``grads`` is a gradient to apply (always, for
        an estimator with ``window == 1``; on the last step of each window otherwise).
      carry_finite: optional certificate that the new carry is finite, computed from
        values the step already has (UORO: the new state, ``s̃`` and a bound on
        ``‖θ̃‖`` from the norms of the rescaling). With it the trainer neither re-reads
        a large carry (such as B per-stream tangents) to test it nor copies it to keep
        the old one. None means the trainer tests the carry itself.
    """

    loss: jax.Array
    output: PyTree
    ready: jax.Array
    carry_finite: jax.Array | None = None


class Estimator(NamedTuple):
    """An online gradient estimator: two pure functions, its window, and optional fast paths.

    Attributes:
      init_state: ``(params, state0) -> carry``.
      step: ``(params, carry, x, y, key) -> (grads, carry, info)``; ``info`` is a
        :class:`StepInfo`.
      window: steps between gradients: 1 for estimators that emit a gradient at every
        step (UORO, RTRL, KF-RTRL, SnAp-1), the truncation T for windowed ones (TBPTT,
        truncated UORO), which are ready on the last step of every window.
      window_step: None, or ``(params, carry, xs, ys, keys) -> (grads, carry, info)``: a
        whole window of ``window`` steps from a window boundary in one call (``xs``,
        ``ys``, ``keys`` with a leading time axis; ``info`` fields stacked over time),
        equal to ``window`` calls of ``step`` with those keys (see :func:`run_window`).
      per_stream: None, or the estimator of B streams with a carry each, fused: what
        ``uorojax.per_stream(estimator)`` returns instead of its generic ``jax.vmap``
        (the same results up to float rounding).
    """

    init_state: Callable[[PyTree, PyTree], PyTree]
    step: StepFn
    window: int = 1
    window_step: StepFn | None = None
    per_stream: Estimator | None = None


def run_window(estimator: Estimator, params, carry, xs, ys, keys):
    """``window`` steps from a window boundary in one call: ``(grads, carry, info)``.

    The estimator's ``window_step`` where it has one; otherwise ``window`` calls of
    ``step`` in a ``lax.scan``, returning the last step's gradient (the only one that is
    ready when the window starts at a boundary). ``info`` fields are stacked over time.
    """
    if estimator.window_step is not None:
        return estimator.window_step(params, carry, xs, ys, keys)

    def body(carry, xyk):
        grads, carry, info = estimator.step(params, carry, *xyk)
        return carry, (grads, info)

    carry, (grads, info) = jax.lax.scan(body, carry, (xs, ys, keys))
    return jax.tree.map(lambda g: g[-1], grads), carry, info


# ----------------------------------------------------------------------------- shared steps


def validate(params: PyTree, key: Any) -> None:
    """The checks every step runs while tracing: float params and a PRNG key."""
    checks.check_params(params)
    checks.check_key(key)


def loss_vjp(forward: Callable, loss_and_cotangent: Callable, *primals):
    """Forward step, loss, and the loss's cotangents of ``primals``, from one VJP.

    ``forward(*primals) -> (new_state, output)`` and ``loss_and_cotangent(output) ->
    (loss, ∂L/∂output)``. Returns ``(new_state, output, loss, d_output, cotangents)``
    with one cotangent per primal: ``(δθ,)`` for params alone (no state cotangent is
    formed), ``(δθ, δs)`` for params and state.
    """
    (new_state, output), vjp_fn = jax.vjp(forward, *primals)
    loss, d_output = loss_and_cotangent(output)
    cotangents = vjp_fn((zeros_like(new_state), d_output))
    return new_state, output, loss, d_output, cotangents


def step_loss_and_cotangent(loss_fn: LossFn, y: PyTree) -> Callable:
    """``output -> (loss_fn(output, y), ∂L/∂output)``, for :func:`loss_vjp`."""
    return jax.value_and_grad(lambda o: checks.call_loss(loss_fn, o, y))


def model_step(apply_fn: ApplyFn, params: PyTree, state: PyTree, x: PyTree):
    """``apply_fn(params, state, x)`` with the ``(new_state, output)`` checks."""
    return checks.call_model(apply_fn, params, state, x)


def forward_sequence(apply_fn: ApplyFn, loss_fn: LossFn, params, state, xs, ys):
    """Runs the model over a sequence from ``state``: ``(final_state, losses, outputs)``.

    Example::

      final_state, losses, outputs = uorojax.forward_sequence(apply_fn, loss_fn, params, h0, xs, ys)
    """

    def body(s, xy):
        x, y = xy
        s, o = model_step(apply_fn, params, s, x)
        return s, (checks.call_loss(loss_fn, o, y), o)

    final_state, (losses, outputs) = jax.lax.scan(body, state, (xs, ys))
    return final_state, losses, outputs


def state_jvp(apply_fn: ApplyFn, params, state, x, tangent):
    """``(∂F_state/∂s) tangent`` by forward mode."""
    return jax.jvp(lambda s: apply_fn(params, s, x)[0], (state,), (tangent,))[1]


def num_streams_of(tree: PyTree) -> int:
    """The size of the leading (stream) axis of a batched carry."""
    return jax.tree.leaves(tree)[0].shape[0]


def split_per_stream(key: jax.Array, num_streams: int) -> jax.Array:
    """One key per stream, split from ``key``."""
    checks.check_key(key)
    return jax.random.split(key, num_streams)


def init_per_stream(init_state: Callable[[PyTree, PyTree], PyTree]) -> Callable:
    """``(params, states0) -> carry`` of B streams: ``init_state`` over the leading stream
    axis of ``states0`` (B >= 1)."""

    def init(params, states0):
        check_some_streams(num_streams_of(states0))
        return jax.vmap(lambda s: init_state(params, s))(states0)

    return init


def mean_over_stream_axis(grads: PyTree) -> PyTree:
    """Per-stream gradients (leading stream axis) averaged over the streams."""
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)


def check_some_streams(num_streams: int) -> None:
    """A batch of streams must hold at least one: the mean over none is no gradient."""
    if num_streams == 0:
        raise checks.ConfigError(
            "per_stream was given zero streams (a leading stream axis of size 0): there is "
            "no stream to estimate a gradient from; give the states one row per stream"
        )


def check_streams(num_streams: int, xs: PyTree, ys: PyTree) -> None:
    """At least one stream, and inputs and targets with a leading stream axis of
    ``num_streams``."""
    check_some_streams(num_streams)
    checks.check_leading_axis("x", xs, num_streams, "stream")
    checks.check_leading_axis("y", ys, num_streams, "stream")


def time_major_info(info: StepInfo) -> StepInfo:
    """A per-stream window's info (streams, time, ...) as (time, streams, ...)."""
    return info._replace(loss=swap_leading_axes(info.loss), output=swap_leading_axes(info.output))
