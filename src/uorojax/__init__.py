"""uorojax: online gradient estimation for recurrent networks in JAX.

``import uorojax`` loads the core only (jax, flax, optax, chex, numpy). The experiment
runner (``uorojax.experiment``) and figures (``uorojax.plots``) need the ``run`` extra
and are imported on their own.
"""

from uorojax import diagnostics, estimators, registry, structure, tasks, tree
from uorojax.checks import ConfigError, ModelError, NonFiniteError
from uorojax.cotangent_norm import pullback_and_norm
from uorojax.estimators import (
    Estimator,
    KFRTRLState,
    OKState,
    RTRLState,
    SnApState,
    StepInfo,
    UOROState,
    WindowState,
    as_one_system,
    jacobian_matrix,
    kf_rtrl,
    ok,
    per_stream,
    rtrl,
    snap1,
    tangent_outer,
    tbptt,
    unroll,
    uoro,
    uoro_rescale,
)
from uorojax.models import (
    ElementwiseMGUCell,
    Model,
    from_equinox,
    from_linen_cells,
    from_nnx,
    linen_model,
    ravel_params,
    softmax_cross_entropy,
    squared_error,
    tanh_rnn,
)
from uorojax.sharding import carry_stream_axes, shard_chunk, shard_train_state, stream_mesh
from uorojax.trainer import (
    Trainer,
    TrainState,
    gradient_agreement,
    make_trainer,
    paper_schedule,
    step_key,
)
from uorojax.transform import OnlineGradientState, as_optax
from uorojax.tree import tree_norm, tree_vdot

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ElementwiseMGUCell",
    "Estimator",
    "KFRTRLState",
    "Model",
    "ModelError",
    "NonFiniteError",
    "OKState",
    "OnlineGradientState",
    "RTRLState",
    "SnApState",
    "StepInfo",
    "TrainState",
    "Trainer",
    "UOROState",
    "WindowState",
    "as_one_system",
    "as_optax",
    "carry_stream_axes",
    "diagnostics",
    "estimators",
    "from_equinox",
    "from_linen_cells",
    "from_nnx",
    "gradient_agreement",
    "jacobian_matrix",
    "kf_rtrl",
    "linen_model",
    "make_trainer",
    "ok",
    "paper_schedule",
    "per_stream",
    "pullback_and_norm",
    "ravel_params",
    "registry",
    "rtrl",
    "shard_chunk",
    "shard_train_state",
    "snap1",
    "softmax_cross_entropy",
    "squared_error",
    "step_key",
    "stream_mesh",
    "structure",
    "tangent_outer",
    "tanh_rnn",
    "tasks",
    "tbptt",
    "tree",
    "tree_norm",
    "tree_vdot",
    "unroll",
    "uoro",
    "uoro_rescale",
]
