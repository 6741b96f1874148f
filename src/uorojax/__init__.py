"""uorojax: online gradient estimation for recurrent networks in JAX."""

from uorojax import diagnostics, experiment, plots, tasks
from uorojax.checks import ConfigError, ModelError, NonFiniteError
from uorojax.estimators import (
    Estimator,
    RTRLState,
    StepInfo,
    TBPTTState,
    UOROState,
    as_one_system,
    jacobian_matrix,
    per_stream,
    rtrl,
    tangent_outer,
    tbptt,
    tree_norm,
    tree_vdot,
    unroll,
    uoro,
    uoro_rescale,
)
from uorojax.models import (
    Model,
    from_linen_cells,
    from_nnx,
    linen_model,
    softmax_cross_entropy,
    squared_error,
    tanh_rnn,
)
from uorojax.training import (
    OnlineGradientState,
    Trainer,
    TrainState,
    as_optax,
    carry_stream_axes,
    gradient_agreement,
    make_trainer,
    paper_schedule,
    shard_chunk,
    shard_train_state,
    step_key,
    stream_mesh,
)

__version__ = "0.1.0"
