"""Online gradient estimators: the protocol, batching, and one module per estimator.

One module per estimator: ``uoro``, ``rtrl``, ``tbptt``, ``kf_rtrl``, ``ok``, ``snap``,
``eprop``, ``rflo``, ``es_d_rtrl``. No estimator imports another; what they share lives
in modules that are not estimators:

* ``base``: the protocol (``Estimator``, ``StepInfo``, ``run_window``) and the calls
  every step makes;
* ``batching``: streams (``per_stream``, ``as_one_system``), and the construction of an
  estimator whose maths is written once for B streams, one stream as B = 1
  (``streams_estimator``);
* ``shared``: pieces of maths several estimators use (the mean loss's cotangents over
  streams, the keep-unless-finite select, a 0/0-safe ratio, the params without
  recurrent kernels);
* ``windowed``: estimators that update once per window (TBPTT, truncated UORO);
* ``sparse_influence``: the sparse influence of SnAp-1, e-prop and RFLO, one step for
  all three;
* ``factored_traces``: the bookkeeping of ES-D-RTRL's factored traces;
* ``kronecker``: the Kronecker factors of KF-RTRL and OK;
* ``cotangent_norm``: a VJP and its norm without reading the result back (UORO, SnAp-1).

The factories (``uorojax.uoro``, ``uorojax.snap1``, ...) are exported by the top-level
package, so that a module here is never shadowed by its own function:
``uorojax.estimators.uoro`` is the module.
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
