"""Online gradient estimators: the protocol, batching, and one module per estimator.

The modules: ``base`` (the protocol), ``batching`` (``per_stream``, ``as_one_system``),
``windowed`` (estimators that update once per window), and one file per estimator:
``uoro``, ``rtrl``, ``tbptt``, ``kf_rtrl``, ``snap``, ``eprop``, ``rflo``, ``es_d_rtrl``. The factories (``uorojax.uoro``,
``uorojax.snap1``, ...) are exported by the top-level package, so that a module here is
never shadowed by its own function: ``uorojax.estimators.uoro`` is the module.
"""

from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    StepInfo,
    forward_sequence,
    run_window,
)
from uorojax.estimators.batching import as_one_system, per_stream

__all__ = [
    "ApplyFn",
    "Estimator",
    "LossFn",
    "StepInfo",
    "as_one_system",
    "forward_sequence",
    "per_stream",
    "run_window",
]
