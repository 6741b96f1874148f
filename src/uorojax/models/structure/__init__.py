r"""What structured estimators need to know about a model: its recurrent units.

UORO and RTRL treat a model as a black box. SnAp-1, e-prop, RFLO, ES-D-RTRL, KF-RTRL and
OK exploit its structure, which a :class:`Structure` describes for one stream
(:mod:`~uorojax.models.structure.types`). The modules: ``types`` (the description and
paths into params), ``jacobian`` (the unit-diagonal blocks of the state Jacobian),
``dense`` (the inputs and derivatives of dense layers) and ``check`` (a description
against the model's Jacobians).
"""

from uorojax.models.structure.check import (
    check_feedforward_leaf,
    check_single_stream,
    check_structure,
)
from uorojax.models.structure.dense import (
    check_dense_inputs,
    check_layer_inputs,
    dense_inputs,
    input_direction,
    input_shape,
    kronecker_leaf,
    layer_derivative,
    preactivation_derivatives,
)
from uorojax.models.structure.jacobian import (
    diagonalised_params,
    ones_on_each_leaf,
    unit_jacobian,
    unit_jacobian_columns,
)
from uorojax.models.structure.types import (
    DenseInput,
    Feedforward,
    RecurrentKernel,
    Structure,
    Units,
    along,
    declared_units,
    get_path,
    leaf_units,
    plain_path,
    require,
    set_path,
    state_layers,
)

__all__ = [
    "DenseInput",
    "Feedforward",
    "RecurrentKernel",
    "Structure",
    "Units",
    "check_structure",
    "declared_units",
    "diagonalised_params",
    "unit_jacobian",
    "unit_jacobian_columns",
]
