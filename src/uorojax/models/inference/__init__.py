r"""Infer a recurrent model's structure from its jaxpr.

The structured online estimators (SnAp-1, e-prop, RFLO, ES-D-RTRL, KF-RTRL, OK) need
to know which state units each parameter moves, which dense maps are recurrent, and how
to take a recurrent kernel's diagonal. :func:`infer` reads all of it from the model's
step ``apply_fn(params, state, x) -> (new_state, output)`` (one step, one stream; any
pytrees: dicts, tuples, ``flax.nnx`` states, Equinox modules split by
``eqx.partition``), without a hand-written :class:`uorojax.structure.Structure`::

    program = infer(model.apply, params, state0, x)
    program.roles          # per params leaf: Units(layer, axis, groups), Feedforward, None
    program.layers         # state leaf indices per layer, bottom first
    program.dense_uses     # every K @ v with a params K: recurrent, input or output
    program.apply(params, state, x, recurrent="diagonal", probes=None)
    program.dense_inputs(params, state, x)

**What it computes.** An abstract interpretation of the jaxpr keeps, for every value and
every params, old-state and input leaf, the exact relation "entry i depends on entries
p", as a union of affine terms whose cost does not depend on the array sizes
(:mod:`~uorojax.models.inference.affine`). From the new state's relations: the *layers* (the
strongly connected components of the state graph, in topological order), the *dense
uses* (``dot_general`` with a pure params operand, split into recurrent and input uses
by the layer they reach), each params leaf's *role* (:class:`Units`,
:class:`Feedforward`, None, or a :class:`~uorojax.ConfigError` naming the leaf and the
reason) and, with the recurrent uses diagonalised, a check that each layer's state
Jacobian is unit-diagonal. :meth:`Program.apply` re-evaluates the jaxpr with the
recurrent uses diagonalised (``"diagonal"``) or taken out of the state Jacobian
(``"none"``), with the same values and exact params derivatives in every mode.

**For estimator authors.** :func:`uorojax.infer_structure` wraps the program in a
:class:`~uorojax.structure.Structure` (``structure.program``); the roles are the
structure's own :class:`Units` (with ``groups``, the fused gate blocks along ``axis``)
and :class:`Feedforward` (a learned embedding is ``Feedforward(0)``).
``program.roles`` replaces ``Structure.param_units``; ``program.state_layers`` replaces ``state_units``;
``apply(..., recurrent="diagonal")`` replaces ``diagonalised_params`` (no bias needed),
``recurrent="none"`` its ``keep_diagonal=False``; ``probes`` with a JVP or VJP give
``∂s/∂z`` and ``∂L/∂z`` of every dense use's output ``z`` per unit, and
:meth:`Program.dense_inputs` its vector ``a``, which ``leaf_inputs`` and
``preactivation_derivatives`` gave (``B = D_z ⊗ a``); ``DenseUse.leaves`` and ``rows``
say which leaf fills which block of the kernel and which rows of ``a`` read which leaf.

**Guarantees.** The relations are *sound*: every entry of the true one-step Jacobian,
at any point, lies inside them; they never depend on values at a point (a relu, a clip
or a saturated unit does not hide an entry). Every known primitive has an exact rule
(for generic cells the relation equals the Jacobian's pattern); a primitive without a
rule counts as full mixing, so a missing rule widens a pattern or causes a refusal,
never a narrower pattern. :func:`analyse` and :func:`materialise` expose the relations
for tests.

**Limits.** Where an index map is not affine the pattern is widened, never narrowed: a
reshape whose digits carry more than a few times, a slice of an axis read through
several overlapping variables, a scan or while loop whose carries keep growing (after
three rounds), a gather with unknown or many (more than 64) start indices, a dynamic
slice with an unknown start, scatters, cumulative sums and sorts. Dense uses inside
``lax.cond``, ``lax.scan``, ``lax.while_loop`` or a ``custom_jvp``/``custom_vjp``
function cannot be marked: if that control flow reaches the state, :func:`infer` refuses
the model. A recurrent use must contract its whole vector (``K @ v``, no batch axes),
and its kernel's units must be block-major (``g·n + u``; interleaved layouts are
refused). A ``custom_vjp`` function is read through its forward function: a backward
rule denser than the forward's pattern (a straight-through estimator) is not seen. In
``"diagonal"``/``"none"`` mode an entry of a recurrent use's vector that reads both its
own layer's state and a lower layer's is held constant as a whole. A state leaf must be
a real vector. :func:`compare_roles` lists where hand-written roles differ from the
inferred ones; :func:`uorojax.verify_structure` checks a whole hand-written structure.
"""

from uorojax.models.inference.affine import Term
from uorojax.models.inference.build import infer
from uorojax.models.inference.patterns import materialise
from uorojax.models.inference.program import Program
from uorojax.models.inference.roles import Feedforward, Units, compare_roles, describe_role
from uorojax.models.inference.tracing import Analysis, analyse
from uorojax.models.inference.uses import DenseUse

__all__ = [
    "Analysis",
    "DenseUse",
    "Feedforward",
    "Program",
    "Term",
    "Units",
    "analyse",
    "compare_roles",
    "describe_role",
    "infer",
    "materialise",
]
