r"""Unbiased Online Recurrent Optimization (Tallec & Ollivier 2017), with truncation.

UORO keeps a rank-one estimate :math:`J_t \approx \tilde s_t \otimes \tilde\theta_t` of
:math:`J_t = \partial s_t/\partial\theta`, unbiased for frozen params. One step
(Algorithm 1), with exact local derivatives from ``jax.vjp``/``jax.jvp``:

1. :math:`(s_t, o_t) = F(\theta, s_{t-1}, x_t)`, :math:`L_t = \ell(o_t, y_t)`; a
   params-only VJP gives :math:`\delta\theta = \partial L_t/\partial\theta`.
2. One JVP of F along the old :math:`\tilde s` gives :math:`\tilde s' = A_t \tilde s` and
   the output's tangent, whose inner product with :math:`\partial L_t/\partial o_t` is
   :math:`\delta s\cdot\tilde s`, :math:`\delta s = \partial L_t/\partial s_{t-1}`.
3. :math:`g = (\delta s\cdot\tilde s)\,\tilde\theta + \delta\theta` with the old tildes.
4. :math:`\nu` Rademacher, shaped like the state;
   :math:`\theta' = \nu^\top B_t` (a params-only VJP of the new state).
5. :func:`uoro_rescale`.

Truncated UORO (``truncation=T``, the authors' code) does the same over windows of T
steps: the in-window gradient by backpropagation from the window-start state
:math:`s_0`, plus :math:`(\delta s_0\cdot\tilde s)\,\tilde\theta` with
:math:`\delta s_0 = \partial(\sum_{\rm window} L)/\partial s_0` for the history before
the window; :math:`\tilde s' = (\partial s_T/\partial s_0)\tilde s` by one JVP through
the window; one :math:`\nu` per window on :math:`s_T` and
:math:`\theta' = \nu^\top \partial s_T/\partial\theta` by one VJP through the window.
For frozen params its expectation is the exact gradient of the window's summed loss
with the full history: TBPTT(T)'s bias removed.

B streams with a pair each (``per_stream``) average their estimates: variance
:math:`/B`, memory :math:`B(|S| + |\Theta|)`. The step is written once, for B streams
(:func:`uoro_streams_step`; one stream is B = 1), the window once, for one stream
(:func:`uoro_window`, mapped over the streams).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from uorojax import checks
from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    StepInfo,
    forward_sequence,
    loss_vjp,
    model_step,
    num_streams_of,
)
from uorojax.estimators.batching import over_streams, streams_estimator
from uorojax.estimators.cotangent_norm import pullback_and_norm
from uorojax.estimators.shared import kept_unless_finite, mean_loss_cotangents, safe_ratio
from uorojax.estimators.windowed import (
    WindowState,
    example_buffers,
    from_window_function,
    mean_over_streams,
)
from uorojax.tree import (
    batched_cotangent_norm,
    rademacher_like,
    stack_zeros,
    tree_finite,
    tree_norm,
    tree_vdot,
    zeros_like,
)

PyTree = Any


class UOROState(NamedTuple):
    """UORO carry: the model state and the rank-one tangent pair.

    ``s_tilde ⊗ theta_tilde`` is an unbiased estimate of ``J_t = ds_t/dθ``. With
    ``num_samples=k > 1`` both tildes carry a leading axis of size k.
    """

    state: PyTree
    s_tilde: PyTree
    theta_tilde: PyTree


def uoro_rescale(
    s_tilde_prime: PyTree, theta_tilde: PyTree, nu: PyTree, theta_prime: PyTree, eps: float
) -> tuple[PyTree, PyTree]:
    r"""UORO's variance-reducing update of the tangent pair (one sample).

    .. math::
        \rho_0 = \sqrt{\|\tilde\theta\| / (\|\tilde s'\| + \epsilon)} + \epsilon, \quad
        \rho_1 = \sqrt{\|\theta'\| / (\|\nu\| + \epsilon)} + \epsilon,

        \tilde s \leftarrow \rho_0 \tilde s' + \rho_1 \nu, \qquad
        \tilde\theta \leftarrow \tilde\theta / \rho_0 + \theta' / \rho_1.

    With ``eps = 0`` the two terms are balanced: ``‖ρ0 s̃'‖ = ‖θ̃/ρ0‖`` and
    ``‖ρ1 ν‖ = ‖θ'/ρ1‖``. A zero pair (``θ̃ = 0`` and ``s̃' = 0``, at a stream's start)
    takes ``ρ0 = 1`` when ``eps = 0``: its terms are zero whatever ρ0.

    Args:
      s_tilde_prime: ``A_t s̃`` (state-shaped).
      theta_tilde: the previous ``θ̃`` (params-shaped).
      nu: the Rademacher noise (state-shaped).
      theta_prime: ``νᵀ B_t`` (params-shaped).
      eps: the stabiliser ε.

    Returns:
      The new ``(s_tilde, theta_tilde)``.

    Example::

      s_tilde, theta_tilde = uorojax.uoro_rescale(a_s, theta_tilde, nu, nu_b, 1e-7)
    """
    return rescale(s_tilde_prime, theta_tilde, nu, theta_prime, eps, tree_norm(theta_prime))[:2]


def rescale(s_tilde_prime, theta_tilde, nu, theta_prime, eps, theta_prime_norm):
    """:func:`uoro_rescale`, plus a finiteness certificate for the new pair.

    Entrywise ``|θ̃_new| ≤ |θ̃|/ρ0 + |θ'|/ρ1 ≤ ‖θ̃‖/ρ0 + ‖θ'‖/ρ1``, so a finite bound
    makes every entry of ``θ̃_new`` finite without reading it again (a NaN or inf in
    ``θ̃`` or ``θ'`` makes its norm, hence the bound, non-finite). ``s̃_new`` is
    state-sized and tested directly. ``theta_prime_norm`` is ``‖θ'‖``, from the caller
    (:func:`~uorojax.pullback_and_norm` has it without reading ``θ'``).
    """
    theta_tilde_norm = tree_norm(theta_tilde)
    rho0 = jnp.sqrt(safe_ratio(theta_tilde_norm, tree_norm(s_tilde_prime) + eps)) + eps
    rho1 = jnp.sqrt(theta_prime_norm / (tree_norm(nu) + eps)) + eps
    s_tilde = jax.tree.map(lambda a, n: rho0 * a + rho1 * n, s_tilde_prime, nu)
    theta_tilde = jax.tree.map(lambda a, b: a / rho0 + b / rho1, theta_tilde, theta_prime)
    bound = theta_tilde_norm / rho0 + theta_prime_norm / rho1
    return s_tilde, theta_tilde, jnp.isfinite(bound) & tree_finite(s_tilde)


def gradient_with_history(coeff, theta_tilde, delta_theta, sample_axes: int):
    """The whole gradient estimate ``g = δθ + Σ coeff · θ̃``: the direct (or in-window)
    gradient plus the history term, summed over the leading ``sample_axes`` of ``θ̃`` and
    ``coeff`` (``coeff = δs · s̃`` per sample, with any averaging folded in)."""
    add = lambda d, tt: d + jnp.tensordot(coeff, tt, axes=sample_axes).astype(d.dtype)  # noqa: E731
    return jax.tree.map(add, delta_theta, theta_tilde)


# ----------------------------------------------------------------------------- samples axis
# With k = 1 the carry has no samples axis (docs/performance.md, "In place").


def with_samples_axis(tree, k: int, axis: int = 0):
    """Carry layout -> a samples axis at ``axis`` (absent from the carry when k = 1)."""
    return jax.tree.map(lambda a: jnp.expand_dims(a, axis), tree) if k == 1 else tree


def without_unit_samples_axis(tree, k: int):
    """A leading samples axis of size 1 removed (k = 1), kept otherwise."""
    return jax.tree.map(lambda a: jnp.squeeze(a, 0), tree) if k == 1 else tree


def over_samples(fn, k: int):
    """Maps a one-sample function over the carry's samples axis (none when k = 1)."""
    return jax.vmap(fn) if k > 1 else fn


def uoro_init(params, state0, k: int) -> UOROState:
    """Zero tildes in the carry layout."""
    checks.check_init(params, state0, "uoro")
    return UOROState(
        state=state0,
        s_tilde=without_unit_samples_axis(stack_zeros(state0, k), k),
        theta_tilde=without_unit_samples_axis(stack_zeros(params, k), k),
    )


def tangent_push(apply_fn, k, params, state, x, s_tilde, nu, d_output, batched):
    """One stream's step of the tangent pair before its rescaling, and ``δs · s̃``.

    ``θ' = νᵀ B_t`` and ``‖θ'‖`` come from one params-only VJP of the new state
    (:func:`~uorojax.pullback_and_norm`). One JVP along the old ``s̃`` gives both ``s̃' =
    A_t s̃`` and the output's tangent, whose inner product with ``d_output =
    ∂L_t/∂o_t`` is ``δs · s̃``: the state cotangent ``δs`` is never formed. Returns
    ``(s_tilde_prime, theta_prime, theta_prime_norm, coeff)``, each with a leading
    samples axis when k > 1. ``batched``: the caller vmaps this over several streams
    (docs/performance.md, "Norms without reading θ'").
    """

    def one_sample(s_tilde, nu):
        theta_prime, theta_prime_norm = pullback_and_norm(
            lambda p: apply_fn(p, state, x)[0], params, nu, batched=batched or k > 1
        )
        s_tilde_prime, output_tangent = jax.jvp(
            lambda s: apply_fn(params, s, x), (state,), (s_tilde,)
        )[1]
        return s_tilde_prime, theta_prime, theta_prime_norm, tree_vdot(d_output, output_tangent)

    return over_samples(one_sample, k)(s_tilde, nu)


def tangent_rescale(eps, k, pushed, theta_tilde, nu):
    """:func:`rescale` of each sample's pair; returns ``(s_tilde, theta_tilde, finite)``."""
    s_tilde_prime, theta_prime, theta_prime_norm, _ = pushed

    def one_sample(s_tilde_prime, theta_tilde, nu, theta_prime, theta_prime_norm):
        return rescale(s_tilde_prime, theta_tilde, nu, theta_prime, eps, theta_prime_norm)

    s_tilde, theta_tilde, finite = over_samples(one_sample, k)(
        s_tilde_prime, theta_tilde, nu, theta_prime, theta_prime_norm
    )
    return s_tilde, theta_tilde, jnp.all(finite)


def uoro_streams_step(apply_fn, loss_fn, eps, k, params, carry: UOROState, xs, ys, stream_keys):
    r"""One UORO step of B streams, each with its own tangent pair (one stream: B = 1).

    Steps 1-5 of the module docstring for every stream, and the mean of the streams'
    estimates, :math:`g = \frac1B \sum_b \big(\delta\theta_b + \frac1k \sum_i
    (\delta s_b \cdot \tilde s_{b,i})\,\tilde\theta_{b,i}\big)` with the old tildes
    (k samples a stream). The averaged direct gradient comes from one backward of the
    mean loss (no stream's is formed), the history term from one contraction of ``θ̃``
    over streams and samples, and each stream's pair from :func:`tangent_push` and
    :func:`tangent_rescale`, mapped over the streams. ``carry``, ``xs``, ``ys`` and
    ``stream_keys`` (each stream's noise) have a leading stream axis; returns ``(grads,
    carry, info)``, ``info.loss`` and ``info.output`` per stream.
    """
    states = carry.state
    num_streams = num_streams_of(states)
    streams = functools.partial(over_streams, num_streams=num_streams)
    new_states, outputs, losses, d_outputs, (mean_delta_theta,) = loss_vjp(
        lambda p: streams(lambda s, x: model_step(apply_fn, p, s, x))(states, xs),
        mean_loss_cotangents(loss_fn, ys),
        params,
    )
    nu = streams(lambda key, s: without_unit_samples_axis(rademacher_like(key, s, k), k))(
        stream_keys, new_states
    )
    push = functools.partial(tangent_push, apply_fn, k, params, batched=num_streams > 1)
    pushed = streams(push)(states, xs, carry.s_tilde, nu, d_outputs)
    # coeff = δs_b · s̃_b already carries the 1/B of the mean, through d_outputs.
    grads = gradient_with_history(
        jnp.reshape(pushed[3], (num_streams, k)) / k,
        with_samples_axis(carry.theta_tilde, k, 1),
        mean_delta_theta,
        2,
    )
    rescale_one = functools.partial(tangent_rescale, eps, k)
    s_tilde, theta_tilde, finite = streams(rescale_one)(pushed, carry.theta_tilde, nu)
    s_tilde, theta_tilde = kept_unless_finite(
        tree_finite(grads), (s_tilde, theta_tilde), (carry.s_tilde, carry.theta_tilde)
    )
    carry_finite = jnp.all(finite) & tree_finite(new_states)
    return (
        grads,
        UOROState(new_states, s_tilde, theta_tilde),
        StepInfo(losses, outputs, jnp.asarray(True), carry_finite),
    )


def uoro_window(apply_fn, loss_fn, eps, k, params, start: UOROState, xs, ys, key):
    """Truncated UORO over one window of T steps from ``start``, one stream (see the
    module docstring): ``(grads, new_start, losses, outputs)``.

    One forward pass through the window, linearised, serves everything: the linear map
    pushes each ``s̃`` (``s̃' = ∂s_T/∂s_0 s̃`` and, as the tangent of the summed loss,
    ``δs_0 · s̃``); its transpose, with stacked cotangents, gives the in-window gradient
    ``g_BPTT`` and each sample's ``θ' = νᵀ ∂s_T/∂θ`` in one backward pass.
    """

    def run(p, s0):
        final, losses, outputs = forward_sequence(apply_fn, loss_fn, p, s0, xs, ys)
        return (final, jnp.sum(losses)), (losses, outputs)

    (final, total), window_linear, (losses, outputs) = jax.linearize(
        run, params, start.state, has_aux=True
    )
    nu = rademacher_like(key, final, k)  # (k, ...)
    zero, one = jnp.zeros_like(total), jnp.ones_like(total)
    cotangents = (
        jax.tree.map(
            lambda f, n: jnp.concatenate([jnp.zeros((1, *f.shape), f.dtype), n]), final, nu
        ),
        jnp.concatenate([one[None], jnp.broadcast_to(zero, (k,))]),
    )
    window_transpose = jax.linear_transpose(window_linear, params, start.state)
    theta_cotangents, _ = jax.vmap(window_transpose)(cotangents)
    g_bptt = jax.tree.map(lambda a: a[0], theta_cotangents)
    theta_prime = jax.tree.map(lambda a: a[1:], theta_cotangents)
    no_params = zeros_like(params)

    def one_sample(s_tilde, theta_tilde, nu, theta_prime):
        s_tilde_prime, coeff = window_linear(no_params, s_tilde)  # coeff = δs_0 · s̃
        theta_prime_norm = batched_cotangent_norm(theta_prime)  # under vmap over samples
        return *rescale(s_tilde_prime, theta_tilde, nu, theta_prime, eps, theta_prime_norm), coeff

    s_tilde, theta_tilde, _, coeff = jax.vmap(one_sample)(
        with_samples_axis(start.s_tilde, k),
        with_samples_axis(start.theta_tilde, k),
        nu,
        theta_prime,
    )
    grads = gradient_with_history(coeff / k, with_samples_axis(start.theta_tilde, k), g_bptt, 1)
    new_start = UOROState(
        final, without_unit_samples_axis(s_tilde, k), without_unit_samples_axis(theta_tilde, k)
    )
    return grads, new_start, losses, outputs


def uoro(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    truncation: int = 1,
    eps: float = 1e-7,
    num_samples: int = 1,
    example_x: Any = None,
    example_y: Any = None,
) -> Estimator:
    r"""UORO (Tallec & Ollivier 2017): an unbiased rank-one online gradient estimate.

    ``truncation=1`` is Algorithm 1: an update at every step, memory ``O(|S| + |Θ|)``.
    ``truncation=T`` is the authors' truncated UORO: one update per window of T steps,
    the in-window gradient by backpropagation and the history before the window by the
    tangent pair (see the module docstring); memory ``O(T·|S| + |Θ|)``, cost about
    TBPTT(T)'s plus one forward-mode pass. With ``num_samples=k`` the carry holds k
    independent tangent pairs and the gradient averages their k estimates: variance
    falls like 1/k, cost grows like k.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      truncation: window length T (>= 1).
      eps: the stabiliser ε of the rescaling (>= 0).
      num_samples: number of independent tangent pairs k (>= 1).
      example_x, example_y: one step's input and target, which size the window buffers
        (needed when T > 1).

    Returns:
      An :class:`Estimator`; its carry is a :class:`UOROState` (T = 1) or a
      :class:`~uorojax.WindowState` whose ``start`` is one (T > 1).

    Example::

      est = uorojax.uoro(apply_fn, loss_fn)
      carry = est.init_state(params, state0)
      grads, carry, info = est.step(params, carry, x, y, jax.random.key(0))
    """
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    truncation = checks.positive_int("truncation", truncation)
    eps = checks.non_negative_float("eps", eps)
    k = checks.positive_int("num_samples", num_samples)

    init_state = functools.partial(uoro_init, k=k)
    if truncation > 1:
        return from_window_function(
            apply_fn,
            loss_fn,
            truncation,
            example_buffers(truncation, example_x, example_y, "uoro"),
            init_start=init_state,
            state_of=lambda start: start.state,
            window_fn=mean_over_streams(functools.partial(uoro_window, apply_fn, loss_fn, eps, k)),
        )
    return streams_estimator(
        init_state, functools.partial(uoro_streams_step, apply_fn, loss_fn, eps, k)
    )


def tangent_outer(carry: UOROState | WindowState) -> jax.Array:
    """The Jacobian estimate ``s̃ ⊗ θ̃`` as a dense ``(|S|, |Θ|)`` matrix.

    Flattening follows ``jax.flatten_util.ravel_pytree``. With several samples
    (leading axis), their estimates are averaged. For a truncated UORO carry, the pair
    at the current window start. For diagnostics and tests on small models.
    """
    if isinstance(carry, WindowState):
        carry = carry.start
    s_leaves = jax.tree.leaves(carry.s_tilde)
    t_leaves = jax.tree.leaves(carry.theta_tilde)
    if s_leaves[0].ndim > jax.tree.leaves(carry.state)[0].ndim:
        s = jnp.concatenate([a.reshape(a.shape[0], -1) for a in s_leaves], axis=1)
        t = jnp.concatenate([a.reshape(a.shape[0], -1) for a in t_leaves], axis=1)
        return jnp.einsum("ks,kp->sp", s, t) / s.shape[0]
    return jnp.outer(ravel_pytree(carry.s_tilde)[0], ravel_pytree(carry.theta_tilde)[0])


__all__ = [
    "UOROState",
    "gradient_with_history",
    "rescale",
    "tangent_outer",
    "uoro",
    "uoro_rescale",
]
