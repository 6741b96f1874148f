"""Recurrent models in the ``apply_fn(params, state, x) -> (new_state, output)`` form.

A :class:`Model` pairs ``init(key, example_x) -> (params, state0)`` with ``apply`` and,
where the model provides one, the :class:`~uorojax.structure.Structure` of its recurrent
units (for the structured estimators). The general case is any pure function; this
package adds a plain tanh RNN and Murray's leaky RNN (:mod:`~uorojax.models.dense`),
adapters for ``flax.linen`` cells (:mod:`~uorojax.models.linen`), a cell with an
element-wise recurrence (:mod:`~uorojax.models.cells`), linear recurrent units and deep
LRU stacks (:mod:`~uorojax.models.lru`, :mod:`~uorojax.models.lru_stack`), adapters for
``flax.nnx`` and Equinox modules (:mod:`~uorojax.models.adapters`), the step losses the
tasks use (:mod:`~uorojax.models.losses`) and the structure of a model
(:mod:`uorojax.models.structure`). :data:`uorojax.models.registry.MODELS` is the table
a config's ``model`` names.
"""

from uorojax.models import registry, structure
from uorojax.models.adapters import from_equinox, from_nnx, ravel_params
from uorojax.models.cells import ElementwiseMGUCell
from uorojax.models.dense import leaky_rnn, tanh_rnn
from uorojax.models.linen import (
    INITS,
    LINEN_CELLS,
    RecurrentStack,
    from_linen_cells,
    linen_model,
    torch7_init,
)
from uorojax.models.losses import softmax_cross_entropy, squared_error
from uorojax.models.lru import LRUCell
from uorojax.models.lru_stack import lru_stack
from uorojax.models.model import Model

__all__ = [
    "INITS",
    "LINEN_CELLS",
    "ElementwiseMGUCell",
    "LRUCell",
    "Model",
    "RecurrentStack",
    "from_equinox",
    "from_linen_cells",
    "from_nnx",
    "leaky_rnn",
    "linen_model",
    "lru_stack",
    "ravel_params",
    "registry",
    "softmax_cross_entropy",
    "squared_error",
    "structure",
    "tanh_rnn",
    "torch7_init",
]
