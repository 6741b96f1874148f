r"""What structured estimators need to know about a model: its recurrent units.

UORO and RTRL treat a model as a black box. SnAp-1, e-prop, RFLO, ES-D-RTRL, KF-RTRL and
OK exploit its structure, which a :class:`Structure` describes for one stream
(:mod:`~uorojax.models.structure.types`): inferred from the model's jaxpr
(:func:`infer_structure`), or written by hand (:func:`from_roles`, or the lookups of
:class:`Structure`) and then verified against the model (:func:`verify_structure`).

The modules: ``types`` (the roles and the description), ``paths`` (one path convention
for dicts, tuples, NamedTuples, ``flax.nnx`` states and Equinox modules), ``inferred``
(the inferred structure, tables of roles, :func:`describe`), ``leaves`` (shapes against
the params and state), ``verify`` and ``verify_inputs`` (a structure against the model),
``numeric`` (the pullback tests they use where inference refuses), ``jacobian`` (the
unit-diagonal blocks of the state Jacobian) and ``dense`` (the inputs and derivatives of
dense layers). ``docs/structure.md`` tells a user what is inferred and how to override it.
"""

from uorojax.models.structure.check import check_structure
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
from uorojax.models.structure.inferred import describe, from_roles, infer_structure
from uorojax.models.structure.jacobian import (
    diagonalised_params,
    ones_on_each_leaf,
    unit_jacobian,
    unit_jacobian_columns,
)
from uorojax.models.structure.leaves import check_leaves, check_single_stream
from uorojax.models.structure.paths import get_path, plain_path, set_path
from uorojax.models.structure.types import (
    DenseInput,
    Feedforward,
    RecurrentKernel,
    Role,
    RoleTable,
    Structure,
    Units,
    along,
    declared_units,
    describe_role,
    leaf_units,
    require,
    state_layers,
)
from uorojax.models.structure.verify import verify_structure

__all__ = [
    "DenseInput",
    "Feedforward",
    "RecurrentKernel",
    "Role",
    "RoleTable",
    "Structure",
    "Units",
    "check_structure",
    "declared_units",
    "describe",
    "describe_role",
    "diagonalised_params",
    "from_roles",
    "get_path",
    "infer_structure",
    "plain_path",
    "set_path",
    "unit_jacobian",
    "unit_jacobian_columns",
    "verify_structure",
]
