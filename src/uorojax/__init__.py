"""uorojax: online gradient estimation for recurrent networks in JAX.

The packages are the layers of the library, as the API reference groups them:
``estimators`` (the maths: the protocol, batching, one module per estimator, the
registry), ``models`` (cells, LRUs, adapters, losses, the model table, and the structure
of a model: ``models.structure`` describes and verifies it, ``models.inference`` infers
it from the model's step), ``tasks`` (streams and the task table), ``training`` (the
online trainer, the optax transform, sharding, checkpoints, runs over several
processes), ``runs`` (configs, the runner, its work directory, command line and
reports) and ``analysis`` (gradient quality, compiled cost, figures), over the core
modules ``checks`` (input validation) and ``tree`` (pytree arithmetic). ``models`` is
the bottom layer and ``runs`` the top; ``docs/architecture.md`` draws what imports what.

``import uorojax`` loads the core only (jax, flax, optax, chex, numpy). The experiment
runner (``uorojax.runs``), checkpoints and figures need the ``run`` extra and are
imported on their own.
"""

from uorojax import checks, estimators, models, tasks, training, tree
from uorojax.analysis import diagnostics
from uorojax.checks import ConfigError, ModelError, NonFiniteError
from uorojax.estimators import registry
from uorojax.estimators.base import Estimator, StepInfo, forward_sequence, run_window
from uorojax.estimators.batching import as_one_system, per_stream
from uorojax.estimators.cotangent_norm import pullback_and_norm
from uorojax.estimators.eprop import EPropState, eprop
from uorojax.estimators.es_d_rtrl import ESDRTRLState, es_d_rtrl
from uorojax.estimators.kf_rtrl import KFRTRLState, kf_rtrl
from uorojax.estimators.ok import OKState, ok
from uorojax.estimators.rflo import rflo
from uorojax.estimators.rtrl import RTRLState, jacobian_matrix, rtrl
from uorojax.estimators.snap import SnApState, snap1
from uorojax.estimators.tbptt import tbptt
from uorojax.estimators.uoro import UOROState, tangent_outer, uoro, uoro_rescale
from uorojax.estimators.windowed import WindowState
from uorojax.models import (
    ElementwiseMGUCell,
    LRUCell,
    Model,
    from_equinox,
    from_linen_cells,
    from_nnx,
    leaky_rnn,
    linen_model,
    lru_stack,
    ravel_params,
    softmax_cross_entropy,
    squared_error,
    structure,
    tanh_rnn,
)
from uorojax.models.structure import check_structure, infer_structure, verify_structure
from uorojax.training import (
    OnlineGradientState,
    Trainer,
    TrainState,
    as_optax,
    carry_stream_axes,
    distributed,
    gradient_agreement,
    make_trainer,
    paper_schedule,
    shard_chunk,
    shard_train_state,
    step_key,
    stream_mesh,
)
from uorojax.tree import tree_norm, tree_vdot

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EPropState",
    "ESDRTRLState",
    "ElementwiseMGUCell",
    "Estimator",
    "KFRTRLState",
    "LRUCell",
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
    "check_structure",
    "checks",
    "diagnostics",
    "distributed",
    "eprop",
    "es_d_rtrl",
    "estimators",
    "forward_sequence",
    "from_equinox",
    "from_linen_cells",
    "from_nnx",
    "gradient_agreement",
    "infer_structure",
    "jacobian_matrix",
    "kf_rtrl",
    "leaky_rnn",
    "linen_model",
    "lru_stack",
    "make_trainer",
    "models",
    "ok",
    "paper_schedule",
    "per_stream",
    "pullback_and_norm",
    "ravel_params",
    "registry",
    "rflo",
    "rtrl",
    "run_window",
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
    "training",
    "tree",
    "tree_norm",
    "tree_vdot",
    "uoro",
    "uoro_rescale",
    "verify_structure",
]
