r"""Online training: parameters updated at every step of an endless stream, fully compiled.

A :class:`Trainer` wraps an :class:`~uorojax.Estimator` and any optax optimizer:

* ``trainer.init(params, state0, key) -> TrainState``
* ``trainer.step(train_state, x, y) -> (train_state, metrics)``: one online step.
* ``trainer.run(train_state, xs, ys) -> (train_state, metrics)``: a jitted
  ``lax.scan`` over a chunk of T steps; the parameters are updated after every step
  (windowed estimators: after every window) and per-step metrics come back as arrays,
  with no host round-trip inside the chunk. A Python loop over chunks is the only host
  loop, so a stream of any length runs in constant memory.

The PRNG key of step ``t`` is ``jax.random.fold_in(train_state.key, t)``, so a
hand-written loop can reproduce a trainer run.

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
from uorojax.estimators.base import Estimator, run_window
from uorojax.training import flat
from uorojax.training.update import (
    TrainState,
    advance_counters,
    gradient_agreement,
    keep_if,
    step_finite,
    step_key,
    step_metrics,
    when_ready,
)
from uorojax.tree import tree_finite

PyTree = Any


class Trainer(NamedTuple):
    """Pure functions of an online training run; see the module docstring.

    ``step`` and ``run`` raise :class:`~uorojax.NonFiniteError` with ``nonfinite="raise"``
    (a host check after the compiled call). Called inside the caller's own ``jax.jit``
    they cannot read the state on the host: they then return it unchecked, the halt in
    its ``halted_at`` (-1: none), and ``run`` does not check that a window was
    finished. ``run_chunk`` is the jitted scan behind
    ``run`` without that check (read ``halted_at``): it can be vmapped, for example over
    independent seeds. With ``make_trainer(..., donate=True)`` it donates its train
    state, which then must not hold one array twice (``init`` and ``run`` see to that).
    """

    init: Callable[..., TrainState]
    step: Callable[..., tuple[TrainState, dict]]
    run: Callable[..., tuple[TrainState, dict]]
    run_chunk: Callable[..., tuple[TrainState, dict]]
    estimator: Estimator


class _Settings(NamedTuple):
    """The static choices of one trainer (see :func:`make_trainer`)."""

    estimator: Estimator
    optimizer: optax.GradientTransformationExtraArgs  # when_ready(the user's optimizer)
    flatten: Any  # make_trainer's flatten; flat.flattens decides per params layout
    user_optimizer: optax.GradientTransformation
    nonfinite: str
    shadow: Estimator | None
    param_metrics: dict[str, Callable[[PyTree], jax.Array]]
    target_metrics: dict[str, Callable[[PyTree, PyTree], jax.Array]]


def _update(cfg: _Settings, ts: TrainState, grads, carry, info, num_steps, shadow_carry, ready):
    """One optimizer update from an estimator's output, every write guarded against
    non-finite values. ``num_steps``: stream steps it covers (a window's length on the
    whole-window path); ``ready``: True (statically) or the step's ``info.ready``."""
    if flat.flattens(cfg.user_optimizer, ts.params, cfg.flatten):
        grads, old, updates, opt_state = flat.flat_update(
            cfg.optimizer, grads, ts.opt_state, ts.params, ready=ready
        )
        new = optax.apply_updates(old, updates)
        params = flat.unravel_like(new, ts.params)
        tested = (flat.poisoned(new, grads), shadow_carry)  # one reduction for both
        finite = step_finite(info, None, carry) & tree_finite(tested)
    else:
        updates, opt_state = cfg.optimizer.update(grads, ts.opt_state, ts.params, ready=ready)
        params = optax.apply_updates(ts.params, updates)
        finite = step_finite(info, grads, carry) & tree_finite((params, shadow_carry))
    window_closed = jnp.reshape(info.ready, (-1,))[-1]
    first_bad = _first_bad_step(info.loss, num_steps)
    counters = advance_counters(
        ts, num_steps, finite, window_closed, first_bad, cfg.nonfinite == "skip"
    )
    accept = counters.pop("accept")
    params, opt_state, carry, shadow_carry = keep_if(
        accept,
        (params, opt_state, carry, shadow_carry),
        (ts.params, ts.opt_state, ts.carry, ts.shadow_carry),
    )
    new_ts = ts._replace(
        params=params, opt_state=opt_state, carry=carry, shadow_carry=shadow_carry, **counters
    )
    metrics = step_metrics(info.loss, grads, accept, num_steps)
    for name, fn in cfg.param_metrics.items():
        metrics[name] = jnp.broadcast_to(fn(new_ts.params), (num_steps,))
    return new_ts, metrics


def _one_step(cfg: _Settings, ts: TrainState, x, y, key):
    grads, carry, info = cfg.estimator.step(ts.params, ts.carry, x, y, key)
    shadow_metrics, shadow_carry = {}, None
    if cfg.shadow is not None:
        exact, shadow_carry, _ = cfg.shadow.step(ts.params, ts.shadow_carry, x, y, key)
        shadow_metrics = {
            f"shadow_{k}": v[None] for k, v in gradient_agreement(grads, exact).items()
        }
    info = info._replace(loss=jnp.reshape(info.loss, (1, -1)))
    ready = True if cfg.estimator.window == 1 else info.ready
    new_ts, metrics = _update(cfg, ts, grads, carry, info, 1, shadow_carry, ready)
    metrics.update(shadow_metrics)
    metrics.update({name: fn(info.output, y)[None] for name, fn in cfg.target_metrics.items()})
    return new_ts, metrics


def _one_window(cfg: _Settings, ts: TrainState, xs, ys, keys):
    grads, carry, info = run_window(cfg.estimator, ts.params, ts.carry, xs, ys, keys)
    new_ts, metrics = _update(cfg, ts, grads, carry, info, cfg.estimator.window, None, True)
    metrics.update({name: jax.vmap(fn)(info.output, ys) for name, fn in cfg.target_metrics.items()})
    return new_ts, metrics


def _chunk_keys(ts: TrainState, length: int):
    """The keys of a chunk's steps, all drawn at once (one RNG call, not one per step).

    They equal ``step_key(ts.key, step)`` at each step: a step either advances
    ``ts.step`` by one or, with "raise", halts the rest of the chunk.
    """
    steps = ts.step + jnp.arange(length)
    return jax.vmap(step_key, in_axes=(None, 0))(ts.key, steps)


def _run_chunk(cfg: _Settings, unroll: int, ts: TrainState, xs, ys):
    length = _chunk_length(xs)
    keys = _chunk_keys(ts, length)
    window = cfg.estimator.window
    if window == 1:
        ts, metrics = jax.lax.scan(
            lambda s, xyk: _one_step(cfg, s, *xyk), ts, (xs, ys, keys), unroll=unroll
        )
        return ts, jax.tree.map(lambda m: m[:, 0], metrics)
    num_windows = length // window
    split = functools.partial(jax.tree.map, lambda a: a.reshape(num_windows, window, *a.shape[1:]))
    ts, metrics = jax.lax.scan(
        lambda s, xyk: _one_window(cfg, s, *xyk),
        ts,
        (split(xs), split(ys), split(keys)),
        unroll=unroll,
    )
    return ts, jax.tree.map(lambda m: m.reshape(-1, *m.shape[2:]), metrics)


def _with_bits_per_char(metrics: dict) -> dict:
    metrics["bits_per_char"] = metrics["loss"] / math.log(2.0)
    return metrics


def make_trainer(
    estimator: Estimator,
    optimizer: optax.GradientTransformation,
    *,
    nonfinite: str = "raise",
    cross_entropy: bool = False,
    shadow: Estimator | None = None,
    param_metrics: dict[str, Callable[[PyTree], jax.Array]] | None = None,
    target_metrics: dict[str, Callable[[PyTree, PyTree], jax.Array]] | None = None,
    unroll: int = 1,
    donate: bool = False,
    flatten: bool | str = "auto",
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
      target_metrics: named scalar functions ``(output, y)`` of a step's model output
        and target, logged at every step (with a leading stream axis when there are
        streams: return the mean over it), for example a task's accuracy.
      unroll: steps (windows, for a windowed estimator) per iteration of ``run_chunk``'s
        loop, passed to ``jax.lax.scan``. Results do not change (see
        docs/performance.md for when it pays).
      donate: ``step``, ``run`` and ``run_chunk`` donate the train state they are given
        (``jax.jit``'s ``donate_argnums``), so XLA updates the params, optimizer state
        and carry in place instead of holding a second copy: for per-stream UORO that
        saves ``B·|Θ|`` floats of device memory. The train state passed in is unusable
        afterwards (keep the one returned); ``init`` copies the params and state it is
        given, so those stay usable. Results do not change.
      flatten: run the optimizer, the guard's tests and the gradient's norm on the
        params raveled into one vector (``uorojax.training.flat``): a few kernels a step
        in all instead of a few per params leaf. ``"auto"`` (the default) does so when
        a probe finds the optimizer elementwise (Adam, SGD, clipping, schedules; not
        ``optax.masked`` with a mask tree, ``multi_transform``, LAMB or Adafactor, which
        keep the per-leaf path); True or False decides. When flat, ``opt_state`` is the
        optimizer's state for the flat vector. The updates are the per-leaf ones up to
        float rounding (clipping's global norm is summed in another order). The flat
        path launches the fewest kernels, which sets a step's time on an accelerator;
        on a CPU, whose runtime runs independent kernels side by side, ``False`` can be
        faster (per-stream UORO: docs/performance.md, "The flat trainer and per-stream
        UORO on this CPU").

    Returns:
      A :class:`Trainer`.

    Example::

      trainer = uorojax.make_trainer(uorojax.uoro(apply, loss), optax.adam(1e-3))
      ts = trainer.init(params, state0, jax.random.key(0))
      ts, metrics = trainer.run(ts, xs, ys)
    """
    checks.one_of("nonfinite", nonfinite, ("raise", "skip"))
    unroll = checks.positive_int("unroll", unroll)
    if not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer must be an optax transformation, got {type(optimizer)}")
    window = estimator.window
    if shadow is not None and window != 1:
        raise checks.ConfigError("shadow needs an estimator that emits a gradient every step")
    cfg = _Settings(
        estimator,
        when_ready(optimizer),
        flat.check_flatten(flatten),
        optimizer,
        nonfinite,
        shadow,
        dict(param_metrics or {}),
        dict(target_metrics or {}),
    )
    finish = _with_bits_per_char if cross_entropy else (lambda m: m)
    owned = own_buffers if donate else (lambda ts: ts)
    jit = functools.partial(jax.jit, donate_argnums=0 if donate else ())

    def init(params, state0, key) -> TrainState:
        checks.check_init(params, state0)
        checks.check_state_has_entries(state0)
        checks.check_key(key)
        if donate:  # the train state owns its buffers: donating it leaves the caller's alone
            params, state0 = jax.tree.map(lambda a: jnp.array(a, copy=True), (params, state0))
        carry = estimator.init_state(params, state0)  # first: a misfit model fails fast
        return owned(
            TrainState(
                params=params,
                opt_state=flat.init(optimizer, params, flat.flattens(optimizer, params, flatten)),
                carry=carry,
                key=key,
                step=jnp.zeros((), jnp.int32),
                num_skipped=jnp.zeros((), jnp.int32),
                halted_at=jnp.full((), -1, jnp.int32),
                pending=jnp.zeros((), jnp.int32),
                shadow_carry=None if shadow is None else shadow.init_state(params, state0),
            )
        )

    @jit
    def step(ts: TrainState, x, y):
        ts, metrics = _one_step(cfg, ts, x, y, step_key(ts.key, ts.step))
        return ts, finish(jax.tree.map(lambda m: m[0], metrics))

    @jit
    def run_chunk(ts: TrainState, xs, ys):
        ts, metrics = _run_chunk(cfg, unroll, ts, xs, ys)
        return ts, finish(metrics)

    def run(ts: TrainState, xs, ys) -> tuple[TrainState, dict]:
        length = _chunk_length(xs)
        checks.check_leading_axis("ys", ys, length, "time")
        if window > 1 and length % window:
            lower = length // window * window
            raise ValueError(
                f"chunk length {length} must be a multiple of the estimator window "
                f"{window} (for example {lower or window} or {lower + window}); step() "
                "takes single steps"
            )
        if _traced(ts):  # inside the caller's jax.jit: the halt is in the returned state
            return run_chunk(ts, xs, ys)
        if window > 1 and int(ts.pending) != 0:
            raise ValueError(
                f"run needs the carry at a window boundary, but {int(ts.pending)} steps of "
                "the current window were consumed by step(); finish the window first"
            )
        return _checked(run_chunk(owned(ts), xs, ys))

    def checked_step(ts: TrainState, x, y):
        if _traced(ts):
            return step(ts, x, y)
        return _checked(step(owned(ts), x, y))

    def _checked(result):
        if nonfinite == "raise":
            raise_if_halted(result[0])
        return result

    return Trainer(init, checked_step, run, run_chunk, estimator)


def _traced(ts: TrainState) -> bool:
    """Whether the train state is being traced (``run`` or ``step`` called inside the
    caller's own ``jax.jit``), where its values cannot be read on the host."""
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(ts))


def raise_if_halted(ts: TrainState) -> None:
    """NonFiniteError if the train state halted on a non-finite value (``"raise"``);
    with a leading seed axis (runs trained together), naming the seed's index."""
    halted = np.atleast_1d(np.asarray(ts.halted_at))
    for index, step in enumerate(halted.tolist()):
        if step >= 0:
            which = f" (seed index {index})" if halted.size > 1 else ""
            raise checks.NonFiniteError(
                f"non-finite loss, gradient or state at stream step {step}{which}; the train "
                "state was left as it was before that step (err.train_state)",
                step=step,
                train_state=ts._replace(halted_at=jnp.full_like(ts.halted_at, -1)),
            )


def own_buffers(tree: PyTree) -> PyTree:
    """The tree with every array that appears more than once copied, so that it can be
    donated (XLA refuses to donate one buffer twice; a windowed carry starts with the
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
