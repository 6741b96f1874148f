"""Online gradient estimators: one file each, on one protocol (see ``base``)."""

from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    FastPaths,
    LossFn,
    StepInfo,
    fast_paths,
    unroll,
    window_step,
    with_fast_paths,
)
from uorojax.estimators.batching import as_one_system, per_stream
from uorojax.estimators.kf_rtrl import KFRTRLState, kf_rtrl
from uorojax.estimators.ok import OKState, ok
from uorojax.estimators.rtrl import RTRLState, jacobian_matrix, rtrl
from uorojax.estimators.snap import SnApState, snap1
from uorojax.estimators.tbptt import tbptt
from uorojax.estimators.uoro import UOROState, tangent_outer, uoro, uoro_rescale
from uorojax.estimators.windowed import WindowState

__all__ = [
    "ApplyFn",
    "Estimator",
    "FastPaths",
    "KFRTRLState",
    "LossFn",
    "OKState",
    "RTRLState",
    "SnApState",
    "StepInfo",
    "UOROState",
    "WindowState",
    "as_one_system",
    "fast_paths",
    "jacobian_matrix",
    "kf_rtrl",
    "ok",
    "per_stream",
    "rtrl",
    "snap1",
    "tangent_outer",
    "tbptt",
    "unroll",
    "uoro",
    "uoro_rescale",
    "window_step",
    "with_fast_paths",
]
