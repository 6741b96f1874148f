r"""Online training: parameters updated at every step of an endless stream, fully compiled.

A :class:`Trainer` wraps an :class:`~uorojax.Estimator` and any optax optimizer:

* ``trainer.init(params, state0, key, example_x, example_y) -> TrainState``
* ``trainer.step(train_state, x, y) -> (train_state, metrics)``: one online step.
* ``trainer.run(train_state, xs, ys) -> (train_state, metrics)``: a jitted
  ``lax.scan`` over a chunk of T steps; the parameters are updated after every step
  (TBPTT: after every window) and per-step metrics come back as arrays, with no host
  round-trip inside the chunk. A Python loop over chunks is the only host loop, so a
  stream of any length runs in constant memory.

The PRNG key of step ``t`` is ``jax.random.fold_in(train_state.key, t)`` (for a window,
``t`` is the window's first step), so a hand-written loop can reproduce a trainer run.

Non-finite values: with ``nonfinite="raise"`` the first step whose loss, gradient, new
carry or new params is not finite freezes the train state (the rest of the chunk is a
no-op) and ``run`` raises :class:`~uorojax.NonFiniteError` naming the step, holding the
last finite state. With ``nonfinite="skip"`` such a step is dropped entirely (params,
optimizer state and carry unchanged) and counted in ``train_state.num_skipped``. In both
cases no NaN or inf is ever written into the params, optimizer state or tangent pair.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from uorojax import checks
from uorojax.estimators import Estimator, tree_finite, tree_norm, tree_vdot

PyTree = Any


class TrainState(NamedTuple):
    """Everything an online run carries from step to step (a pytree).

    Attributes:
      params: model parameters.
      opt_state: the optax optimizer state.
      carry: the estimator carry (model state, tangents or Jacobian, buffers).
      key: the base PRNG key; step t uses ``fold_in(key, t)``.
      step: number of stream steps consumed (int32).
      num_skipped: steps dropped for non-finite values (``nonfinite="skip"``).
      halted_at: -1, or the step of the first non-finite value (``nonfinite="raise"``).
      shadow_carry: exact-RTRL carry run beside the estimator, or None.
    """

    params: PyTree
    opt_state: PyTree
    carry: PyTree
    key: jax.Array
    step: jax.Array
    num_skipped: jax.Array
    halted_at: jax.Array
    shadow_carry: PyTree = None


class Trainer(NamedTuple):
    """Pure functions of an online training run; see the module docstring.

    ``run_chunk`` is the jitted scan behind ``run`` without its host-side checks (no
    exception on non-finite values; read ``halted_at``): it can be vmapped, for example
    over independent seeds. With ``make_trainer(..., donate=True)`` it donates its train
    state, which then must not hold one array twice (``init`` and ``run`` see to that).
    """

    init: Callable[..., TrainState]
    step: Callable[..., tuple[TrainState, dict]]
    run: Callable[..., tuple[TrainState, dict]]
    run_chunk: Callable[..., tuple[TrainState, dict]]
    estimator: Estimator


def paper_schedule(gamma: float, alpha: float, steps_per_update: int = 1) -> optax.Schedule:
    r"""The UORO paper's learning rate :math:`\eta_t = \gamma / (1 + \alpha\sqrt{t})`.

    ``t`` counts stream steps (characters). Optax schedules see the number of updates,
    so for an estimator that updates every ``steps_per_update`` steps (TBPTT's
    truncation) ``t = count * steps_per_update``.

    Example::

      optax.adam(uorojax.paper_schedule(1e-3, 1.5e-2))
    """
    gamma = checks.non_negative_float("gamma", gamma)
    alpha = checks.non_negative_float("alpha", alpha)
    steps_per_update = checks.positive_int("steps_per_update", steps_per_update)

    def schedule(count):
        t = jnp.asarray(count, jnp.float32) * steps_per_update
        return gamma / (1.0 + alpha * jnp.sqrt(t))

    return schedule


def step_key(key: jax.Array, step: int | jax.Array) -> jax.Array:
    """The PRNG key the trainer hands the estimator at stream step ``step``."""
    return jax.random.fold_in(key, step)


def _step_finite(info, grads: PyTree, carry: PyTree) -> jax.Array:
    """Loss, gradient and new carry all finite. The carry's test comes from the
    estimator's certificate (``info.carry_finite``) where it gives one."""
    carry_finite = tree_finite(carry) if info.carry_finite is None else jnp.all(info.carry_finite)
    return tree_finite((info.loss, grads)) & carry_finite


def gradient_agreement(estimate: PyTree, exact: PyTree) -> dict:
    """Cosine and norm ratio of an estimated gradient against the exact one."""
    dot, n_est, n_exact = tree_vdot(estimate, exact), tree_norm(estimate), tree_norm(exact)
    tiny = jnp.finfo(jnp.result_type(dot)).tiny
    return {
        "cosine": dot / jnp.maximum(n_est * n_exact, tiny),
        "norm_ratio": n_est / jnp.maximum(n_exact, tiny),
    }


def make_trainer(
    estimator: Estimator,
    optimizer: optax.GradientTransformation,
    *,
    nonfinite: str = "raise",
    cross_entropy: bool = False,
    shadow: Estimator | None = None,
    param_metrics: dict[str, Callable[[PyTree], jax.Array]] | None = None,
    unroll: int = 1,
    donate: bool = False,
) -> Trainer:
    """Builds the online training functions for an estimator and an optax optimizer.

    Args:
      estimator: any :class:`~uorojax.Estimator` (single stream, ``per_stream``, or built
        on ``as_one_system``).
      optimizer: any optax transformation or chain (clipping, schedules, ...).
      nonfinite: ``"raise"`` or ``"skip"``; see the module docstring.
      cross_entropy: the loss is a cross-entropy in nats; adds ``bits_per_char`` to the
        metrics.
      shadow: an exact estimator (``uorojax.rtrl`` on the same model, wrapped the same
        way) run beside the trained one with the same params; adds the per-step
        ``shadow_cosine`` and ``shadow_norm_ratio`` of the estimate against it. Only for
        estimators with ``window == 1``.
      param_metrics: named scalar functions of the params, logged after every update
        (for example ``{"theta": lambda p: p["theta"]}``).
      unroll: steps (TBPTT: windows) per iteration of ``run_chunk``'s loop, passed to
        ``jax.lax.scan``. Results do not change. On GPU, where each loop iteration has a
        fixed cost, 4 made per-stream UORO 1.7x faster at (256, 64) (an H200); on CPU
        it mostly adds compile time.
      donate: ``step``, ``run`` and ``run_chunk`` donate the train state they are given
        (``jax.jit``'s ``donate_argnums``), so XLA updates the params, optimizer state
        and carry in place instead of holding a second copy: for per-stream UORO that
        saves B·|Θ| floats of device memory. The train state passed in is unusable
        afterwards (keep the one returned). Results do not change.

    Returns:
      A :class:`Trainer`.

    Example::

      trainer = uorojax.make_trainer(uorojax.uoro(apply, loss), optax.adam(1e-3))
      ts = trainer.init(params, state0, jax.random.key(0), xs[0], ys[0])
      ts, metrics = trainer.run(ts, xs, ys)
    """
    checks.one_of("nonfinite", nonfinite, ("raise", "skip"))
    unroll = checks.positive_int("unroll", unroll)
    if not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer must be an optax transformation, got {type(optimizer)}")
    window = estimator.window
    own_buffers = _own_buffers if donate else (lambda ts: ts)
    if shadow is not None and window != 1:
        raise checks.ConfigError("shadow needs an estimator that emits a gradient every step")

    def init(params, state0, key, example_x=None, example_y=None) -> TrainState:
        checks.check_params(params)
        checks.check_key(key)
        carry = estimator.init_state(params, state0, example_x=example_x, example_y=example_y)
        shadow_carry = None
        if shadow is not None:
            shadow_carry = shadow.init_state(params, state0)
        return own_buffers(
            TrainState(
                params=params,
                opt_state=optimizer.init(params),
                carry=carry,
                key=key,
                step=jnp.zeros((), jnp.int32),
                num_skipped=jnp.zeros((), jnp.int32),
                halted_at=jnp.full((), -1, jnp.int32),
                shadow_carry=shadow_carry,
            )
        )

    def apply_gradient(ts: TrainState, grads, carry, info, num_steps: int, shadow_carry=None):
        """Applies the optimizer when ready, guarding every write against non-finite values."""

        def update(_):
            updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
            return optax.apply_updates(ts.params, updates), opt_state

        ready = info.ready
        if not isinstance(ready, jax.core.Tracer) and bool(np.any(ready)):
            params, opt_state = update(None)  # UORO, RTRL, and TBPTT's whole windows
        else:  # TBPTT one step at a time: an optimizer step only when a window closes.
            params, opt_state = jax.lax.cond(
                jnp.any(ready), update, lambda _: (ts.params, ts.opt_state), None
            )
        finite = _step_finite(info, grads, carry) & tree_finite((params, shadow_carry))
        halted = ts.halted_at >= 0
        accept = finite & ~halted
        rejected = ~finite & ~halted
        # A select per leaf rather than a conditional: each select fuses into the fusion
        # that writes the new value, so a certified carry (UORO's tangents) is neither
        # re-read nor copied; on GPU a conditional at every step also measured slower.
        params, opt_state, carry, shadow_carry = jax.tree.map(
            lambda new, old: jnp.where(accept, new, old),
            (params, opt_state, carry, shadow_carry),
            (ts.params, ts.opt_state, ts.carry, ts.shadow_carry),
        )
        new_ts = TrainState(
            params=params,
            opt_state=opt_state,
            carry=carry,
            key=ts.key,
            # "skip" drops the bad step and moves on; "raise" stays before it.
            step=ts.step + num_steps * (1 if nonfinite == "skip" else accept),
            num_skipped=ts.num_skipped + num_steps * (rejected if nonfinite == "skip" else 0),
            halted_at=(
                jnp.where(rejected, ts.step + _first_bad_step(info.loss, num_steps), ts.halted_at)
                if nonfinite == "raise"
                else ts.halted_at
            ),
            shadow_carry=shadow_carry,
        )
        metrics = {
            "loss": _mean_over_streams(info.loss, num_steps),
            "grad_norm": jnp.broadcast_to(tree_norm(grads), (num_steps,)),
            "skipped": jnp.broadcast_to(~accept, (num_steps,)),
        }
        for name, fn in (param_metrics or {}).items():
            metrics[name] = jnp.broadcast_to(fn(new_ts.params), (num_steps,))
        return new_ts, metrics

    def _mean_over_streams(loss, num_steps):
        loss = jnp.reshape(loss, (num_steps, -1))
        return jnp.mean(loss, axis=1)

    def one_step(ts: TrainState, x, y, key):
        grads, carry, info = estimator.step(ts.params, ts.carry, x, y, key)
        shadow_metrics, shadow_carry = {}, None
        if shadow is not None:
            exact, shadow_carry, _ = shadow.step(ts.params, ts.shadow_carry, x, y, key)
            shadow_metrics = {
                f"shadow_{k}": v[None] for k, v in gradient_agreement(grads, exact).items()
            }
        loss = jnp.reshape(info.loss, (1, -1))
        new_ts, metrics = apply_gradient(
            ts, grads, carry, info._replace(loss=loss), 1, shadow_carry
        )
        metrics.update(shadow_metrics)
        return new_ts, metrics

    def one_window(ts: TrainState, xs, ys, key):
        grads, carry, info = estimator.step_window(ts.params, ts.carry, xs, ys, key)
        return apply_gradient(ts, grads, carry, info, window)

    def finish(metrics):
        if cross_entropy:
            metrics["bits_per_char"] = metrics["loss"] / math.log(2.0)
        return metrics

    jit = functools.partial(jax.jit, donate_argnums=0 if donate else ())

    @jit
    def step(ts: TrainState, x, y):
        ts, metrics = one_step(ts, x, y, step_key(ts.key, ts.step))
        return ts, finish(jax.tree.map(lambda m: m[0], metrics))

    def chunk_keys(ts: TrainState, num_calls: int, stride: int):
        """The keys of a chunk's calls, all drawn at once (one RNG call, not one per step).

        They equal ``step_key(ts.key, step)`` at each call's step: a step either advances
        ``ts.step`` by its length or, with "raise", halts the rest of the chunk.
        """
        steps = ts.step + stride * jnp.arange(num_calls)
        return jax.vmap(step_key, in_axes=(None, 0))(ts.key, steps)

    @jit
    def run_chunk(ts: TrainState, xs, ys):
        length = _chunk_length(xs)
        if estimator.step_window is not None:
            num_windows = length // window
            split = (
                lambda t: jax.tree.map(  # noqa: E731
                    lambda a: a.reshape(num_windows, window, *a.shape[1:]), t
                )
            )
            keys = chunk_keys(ts, num_windows, window)
            ts, metrics = jax.lax.scan(
                lambda s, xyk: one_window(s, *xyk),
                ts,
                (split(xs), split(ys), keys),
                unroll=unroll,
            )
            metrics = jax.tree.map(lambda m: m.reshape(-1, *m.shape[2:]), metrics)
        else:
            keys = chunk_keys(ts, length, 1)
            ts, metrics = jax.lax.scan(
                lambda s, xyk: one_step(s, *xyk), ts, (xs, ys, keys), unroll=unroll
            )
            metrics = jax.tree.map(lambda m: m[:, 0], metrics)
        return ts, finish(metrics)

    def run(ts: TrainState, xs, ys) -> tuple[TrainState, dict]:
        length = _chunk_length(xs)
        checks.check_leading_axis("ys", ys, length, "time")
        if window > 1 and length % window:
            raise ValueError(
                f"chunk length {length} must be a multiple of the estimator window {window}"
            )
        if window > 1 and estimator.step_window is not None:
            position = jnp.ravel(ts.carry.position)[0]
            if not isinstance(position, jax.core.Tracer) and int(position) != 0:
                raise ValueError(
                    f"run needs the carry at a window boundary, but {int(position)} steps of "
                    "the current window were consumed by step(); finish the window first"
                )
        ts, metrics = run_chunk(own_buffers(ts), xs, ys)
        halted_at = int(ts.halted_at)
        if nonfinite == "raise" and halted_at >= 0:
            raise checks.NonFiniteError(
                f"non-finite loss, gradient or state at stream step {halted_at}; the train "
                "state was left as it was before that step (err.train_state)",
                step=halted_at,
                train_state=ts._replace(halted_at=jnp.full((), -1, jnp.int32)),
            )
        return ts, metrics

    def checked_step(ts: TrainState, x, y):
        return step(own_buffers(ts), x, y)

    return Trainer(init, checked_step if donate else step, run, run_chunk, estimator)


def _own_buffers(tree: PyTree) -> PyTree:
    """The tree with every array that appears more than once copied, so that it can be
    donated (XLA refuses to donate one buffer twice; TBPTT's carry starts with the
    window's start state equal to the state)."""
    seen = set()

    def own(a):
        if id(a) in seen:
            return jnp.array(a, copy=True)
        seen.add(id(a))
        return a

    return jax.tree.map(own, tree)


def _first_bad_step(loss, num_steps: int) -> jax.Array:
    """Index within a window of the first step with a non-finite loss (0 if none)."""
    bad = ~jnp.all(jnp.isfinite(jnp.reshape(loss, (num_steps, -1))), axis=1)
    return jnp.where(jnp.any(bad), jnp.argmax(bad), 0).astype(jnp.int32)


def _chunk_length(xs) -> int:
    leaves = jax.tree.leaves(xs)
    if not leaves or not jnp.shape(leaves[0]):
        raise ValueError("xs must have a leading time axis")
    return jnp.shape(leaves[0])[0]


# ----------------------------------------------------------------------------- optax


class OnlineGradientState(NamedTuple):
    """State of :func:`as_optax`.

    Attributes:
      carry: the estimator carry.
      loss: the last step's loss.
      finite: whether the last step's loss, gradient and new carry were all finite (the
        trainer's non-finite guard; check it before trusting an update).
    """

    carry: PyTree
    loss: jax.Array
    finite: jax.Array


def as_optax(
    estimator: Estimator, state0: PyTree, *, example_x: Any = None, example_y: Any = None
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

    ``opt_state[0].loss`` is the last step loss and ``opt_state[0].carry`` the carry. For
    TBPTT the transformation emits zeros inside a window, which stateful optimizers still
    count as steps: prefer :func:`make_trainer` for TBPTT.

    Args:
      estimator: any :class:`~uorojax.Estimator`.
      state0: the model's initial recurrent state.
      example_x, example_y: one step's input and target (TBPTT needs them).
    """

    def init_fn(params):
        carry = estimator.init_state(params, state0, example_x=example_x, example_y=example_y)
        loss_dtype = jnp.result_type(jax.tree.leaves(params)[0])
        return OnlineGradientState(carry, jnp.zeros((), loss_dtype), jnp.asarray(True))

    def update_fn(updates, state, params=None, *, x=None, y=None, key=None, **extra_args):
        del updates, extra_args
        if params is None or x is None or y is None or key is None:
            raise ValueError("as_optax's update needs params and the keyword args x, y and key")
        grads, carry, info = estimator.step(params, state.carry, x, y, key)
        loss = jnp.mean(info.loss).astype(state.loss.dtype)
        finite = _step_finite(info, grads, carry)
        return grads, OnlineGradientState(carry, loss, finite)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------- devices


def stream_mesh(devices: Any = None) -> jax.sharding.Mesh:
    """A 1-D device mesh over the stream axis (named ``"streams"``), all local devices
    by default. On several hosts, call ``jax.distributed.initialize()`` first and pass
    ``jax.devices()`` to span them all."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("streams",))


def carry_stream_axes(
    estimator: Estimator, params: PyTree, states0: PyTree, example_x=None, example_y=None
) -> PyTree:
    """For every leaf of the estimator carry, the index of its stream axis (or None).

    Found without guessing from shapes: the carry's shapes are computed (abstractly)
    for B and for B + 1 streams, and the axis that changes is the stream axis. A
    shared tangent ``θ̃`` has none; per-stream tildes, states and buffers have one.
    """

    def shapes(n):
        grow = (
            lambda t: jax.tree.map(  # noqa: E731
                lambda a: jax.ShapeDtypeStruct((n, *jnp.shape(a)[1:]), jnp.result_type(a)), t
            )
        )
        return jax.eval_shape(
            lambda s, ex, ey: estimator.init_state(params, s, example_x=ex, example_y=ey),
            grow(states0),
            grow(example_x),
            grow(example_y),
        )

    num_streams = jnp.shape(jax.tree.leaves(states0)[0])[0]

    def axis(a, b):
        changed = [i for i, (m, n) in enumerate(zip(a.shape, b.shape)) if m != n]
        return changed[0] if changed else None

    return jax.tree.map(axis, shapes(num_streams), shapes(num_streams + 1))


def _sharding(mesh, ndim: int, axis: int | None):
    spec = [None] * ndim
    if axis is not None:
        spec[axis] = "streams"
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def shard_train_state(ts: TrainState, mesh: jax.sharding.Mesh, stream_axes: PyTree) -> TrainState:
    """Places a train state on a stream mesh: carry leaves split along their stream axis
    (see :func:`carry_stream_axes`), everything else (params, optimizer state, ``θ̃`` of
    shared tangents) replicated. The jitted trainer then runs data-parallel over streams:
    XLA averages gradients and reduces the shared-tangent inner products across devices.
    """

    def place(tree, axes):
        return jax.tree.map(
            lambda a, ax: jax.device_put(a, _sharding(mesh, a.ndim, ax)), tree, axes
        )

    def replicate(tree):
        return jax.tree.map(lambda a: jax.device_put(a, _sharding(mesh, a.ndim, None)), tree)

    carry_axes = stream_axes
    return ts._replace(
        params=replicate(ts.params),
        opt_state=replicate(ts.opt_state),
        carry=place(ts.carry, carry_axes),
        step=replicate(ts.step),
        num_skipped=replicate(ts.num_skipped),
        halted_at=replicate(ts.halted_at),
        shadow_carry=(None if ts.shadow_carry is None else replicate(ts.shadow_carry)),
    )


def shard_chunk(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    """Places a chunk of inputs or targets, shaped ``(time, streams, ...)``, on the mesh."""
    return jax.tree.map(lambda a: jax.device_put(a, _sharding(mesh, a.ndim, 1)), tree)
