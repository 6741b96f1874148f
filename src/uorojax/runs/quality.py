"""Gradient quality during a run: estimators against the exact online gradient on a
held-out segment (``quality.csv``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from uorojax import checks
from uorojax.analysis import diagnostics
from uorojax.estimators import registry
from uorojax.runs.build import Experiment, one_stream_model
from uorojax.training import distributed
from uorojax.training.update import TrainState


def quality_specs(c: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The estimators whose gradient quality a run measures: ``quality_estimators``, or
    the run's own algorithm with its hyperparameters."""
    if c.quality_estimators:
        return tuple(c.quality_estimators)
    block = c[c.algorithm]
    own = [f"{h.name}={block[h.name]}" for h in registry.hyperparameters(c.algorithm)]
    return (f"{c.algorithm}:{','.join(own)}" if own else c.algorithm,)


def measure_quality(exp: Experiment, ts: TrainState, step: int) -> list[dict]:
    """One row per estimator of :func:`quality_specs`: its gradient statistics against
    the exact online gradient over a held-out segment, with the run's params and state
    at ``step`` (:func:`uorojax.diagnostics.summarise`). An estimator the model does not
    fit (KF-RTRL on a gated cell) is left out."""
    c = exp.config
    params, state = distributed.to_host(one_stream_model(exp, ts))
    xs, ys = (jnp.asarray(a) for a in exp.held_out(c.quality_seed).next_chunk(c.quality_segment))
    key = jax.random.fold_in(jax.random.key(c.quality_seed), step)
    rows = []
    for spec in quality_specs(c):
        algorithm, values = registry.parse_method(spec)
        estimator = registry.build_estimator(
            algorithm, exp.apply_fn, exp.loss_fn, structure=exp.structure,
            example_x=xs[0], example_y=ys[0], **values,
        )  # fmt: skip
        try:
            estimator.init_state(params, state)
        except checks.ConfigError:
            continue
        stats = diagnostics.gradient_statistics(
            estimator, exp.apply_fn, exp.loss_fn, params, state, xs, ys, key,
            num_keys=c.quality_keys,
        )  # fmt: skip
        rows.append({"step": step, "estimator": spec, **diagnostics.summarise(stats, estimator)})
    return rows
