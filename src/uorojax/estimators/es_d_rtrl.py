r"""ES-D-RTRL (pp-prop; Wang et al. 2026): input/output-factorised eligibility traces.

Wang, Dong, Ji, Xiao, Jiang, Liu, Huan & Wu (2026), "Model-agnostic linear-memory online
learning in spiking neural networks", Nature Communications (braintrace's ``pp_prop`` /
``ES_D_RTRL``, the ``IODimVjpAlgorithm`` of ``braintrace/_algorithm/io_dim_vjp.py``).

For a dense params leaf :math:`W` of a layer (unit axis ``i``, input axis ``j``) that
multiplies :math:`a_t` into a pre-activation :math:`z_t` of the layer's units, D-RTRL's
trace :math:`\epsilon_t = \partial s_t/\partial W` is approximated by an outer product
of two exponentially smoothed vectors, one over the units and one over the input:

.. math::
    \epsilon^x_t &= \alpha\, \epsilon^x_{t-1} + a_t, \\
    \epsilon^f_t &= \alpha\, D_t\, \epsilon^f_{t-1} + (1 - \alpha)\, D^f_t, \\
    g_t[i, j] &= \frac{1}{c_t} \Big(\sum_k \frac{\partial L_t}{\partial s_{k,t}[i]}\,
                 \epsilon^f_{k,t}[i]\Big)\, \epsilon^x_t[j],
    \qquad c_t = 1 - \alpha^{t}.

* :math:`D^f_t = \partial s_t/\partial z_t` per unit, in every state leaf ``k`` of the
  layer (an LSTM's ``c`` and ``h``): :func:`~uorojax.structure.preactivation_derivatives`.
* :math:`D_t` is the unit-diagonal block of :math:`\partial s_t/\partial s_{t-1}`
  (``S × S`` per unit for ``S`` state leaves) with the recurrent kernels taken out, as
  in braintrace's default hidden-to-hidden Jacobian (``HiddenGroup`` tracing skips the
  weight operations that read the hidden state, ``braintrace/_compiler/hidden_group.py``,
  ``_eval_eqn``): e-prop's :math:`\tilde A_t`.
* Order and coefficients follow ``_update_IO_dim_etrace_scan_fn``: :math:`\alpha`
  multiplies both old traces, the input trace adds :math:`a_t` unscaled (a low-pass
  filter) and the unit trace adds :math:`(1 - \alpha) D^f_t` (exponential smoothing);
  the gradient reads the *new* traces.
* A bias has no input trace: its gradient is the unit factor alone,
  :math:`g_t[i] = \frac{1}{c_t}\sum_k \partial L_t/\partial s_{k,t}[i]\,
  \epsilon^f_{k,t}[i]` (braintrace's dense ``xy_to_dw`` gives the bias ``df``).
* :math:`c_t = 1 - \alpha^{t}` at the t-th step of a stream undoes the warm-up bias of
  the smoothing, and is 1 from step 1001 on (``_solve_IO_dim_weight_gradients``).
* Leaves that move no state (the readout) get their exact direct gradient.

**The learning signal.** With :math:`\lambda_t = \partial L_t/\partial s_t`, which one
step does not give directly (the model returns :math:`L_t` as a function of
:math:`(\theta, s_{t-1}, x_t)`), the factor the gradient needs is, per unit,

.. math::
    \lambda_t \cdot \epsilon^f_t
      = \alpha\, (\lambda_t D_t) \cdot \epsilon^f_{t-1} + (1 - \alpha)\, \lambda_t D^f_t
      = \alpha\, \delta\tilde s_{t-1} \cdot \epsilon^f_{t-1}
        + (1 - \alpha)\, \frac{\partial L_t}{\partial z_t},

where :math:`\delta\tilde s_{t-1}` is the state cotangent of one VJP of the step
through the params without recurrent kernels (as in e-prop), and
:math:`\partial L_t/\partial z_t[i] = \sum_W \delta\theta_W[i, :] \cdot a_W / \sum_W
\|a_W\|^2` over the leaves W that add into :math:`z`, from the exact direct gradient
:math:`\delta\theta_W = \partial L_t/\partial z \otimes a_W` of the same VJP. Both are
exact when a layer's params and old state reach :math:`L_t` only through its new state
(every model uorojax builds), and whenever a pre-activation has a bias or a non-zero
input (every pre-activation of uorojax's models has a bias).

The structure must say, for every params leaf of the layer, the vector it multiplies and
the pre-activation it feeds (:attr:`~uorojax.structure.Structure.leaf_inputs`, or
``layer_inputs`` for a single dense layer): ``uorojax.tanh_rnn``, ``uorojax.leaky_rnn``
and a one-layer ``uorojax.linen_model`` (Simple, GRU, MGU, LSTM) without an embedding
provide it.

Memory per stream: an input trace per kernel (its input width) and a unit trace per
dense leaf and state leaf of its layer (``n`` each): ``O(I + O)`` per leaf, not
``O(|Θ|)``. A step costs one forward, its backward for the loss, one for the new state
batched over ones on each of the ``q`` state leaves (:math:`D_t` and :math:`D^f_t`; no
params gradient and no readout for these), and ``O(|Θ|)`` for the outer products.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.base import ApplyFn, Estimator, LossFn, StepInfo
from uorojax.estimators.batching import streams_estimator
from uorojax.estimators.factored_traces import (
    as_rows,
    local_backward,
    plan,
    preactivation_rows,
    trace_layout,
)
from uorojax.estimators.probe_rows import probe_plan, probe_rows, probe_vectors
from uorojax.models.structure.check import check_single_stream
from uorojax.models.structure.dense import dense_inputs, input_shape
from uorojax.models.structure.jacobian import local_apply
from uorojax.models.structure.resolve import StructureSource
from uorojax.models.structure.types import Structure, leaf_units, state_layers
from uorojax.tree import first

PyTree = Any

MODEL_HINT = (
    "uorojax.tanh_rnn, uorojax.leaky_rnn and a one-layer uorojax.linen_model (simple, "
    "gru, mgu, lstm, optimized_lstm) with one-hot or float input provide it."
)

#: From this many steps of a stream on, the warm-up correction is 1 (as in braintrace).
CORRECTION_STEPS = 1000


class ESDRTRLState(NamedTuple):
    """ES-D-RTRL carry, laid out as a few stacked arrays (see
    :func:`~uorojax.estimators.factored_traces.trace_layout`).

    Attributes:
      state: the model state.
      input_trace: ``ε^x`` of the kernels, one ``(p, m)`` array per group of kernels
        that the layout stacks (same layer, input width, unit axis and dtype): row r is
        the r-th kernel of the group.
      unit_trace: ``ε^f`` for every state leaf k: an ``(P, n_k)`` array whose row r is
        the unit trace of the r-th dense leaf of k's layer (the layer's rows in the
        layout); None for a state leaf whose layer has no dense leaf.
      steps: the steps of the stream so far, counted up to ``CORRECTION_STEPS``.
    """

    state: PyTree
    input_trace: tuple
    unit_trace: tuple
    steps: jax.Array


def es_d_rtrl_init(source: StructureSource, params, state0) -> ESDRTRLState:
    """Zero traces, shaped from the params and the state (the structure resolved by
    ``source``)."""
    checks.check_init(params, state0, "es_d_rtrl")
    structure = source.at_init(params, state0)
    check_single_stream(structure, params, state0, "es_d_rtrl", fused=True)
    leaves, units = jax.tree.leaves(params), leaf_units(structure, params)
    layout = trace_layout(leaves, units)
    input_trace = tuple(
        jnp.zeros((len(g), *input_shape(leaves[g[0]], units[g[0]])), leaves[g[0]].dtype)
        for g in layout.groups
    )
    unit_trace = tuple(
        jnp.zeros((len(layout.rows[layer]), *s.shape), s.dtype) if layer in layout.rows else None
        for s, layer in zip(jax.tree.leaves(state0), state_layers(structure, state0))
    )
    return ESDRTRLState(state0, input_trace, unit_trace, jnp.zeros((), jnp.int32))


def correction(steps: jax.Array, decay: float, dtype) -> jax.Array:
    """``1 - α^{t}`` at the t-th step of a stream (``steps = t - 1`` before it), 1 from
    step ``CORRECTION_STEPS + 1`` on, at least 1e-8 (braintrace's warm-up correction)."""
    corrected = 1 - jnp.power(jnp.asarray(decay, dtype), (steps + 1).astype(dtype))
    return jnp.maximum(jnp.where(steps < CORRECTION_STEPS, corrected, 1), 1e-8).astype(dtype)


def unit_trace_update(decay, blocks, old, derivative):
    """``ε^f_k ← α Σ_k2 D[k, k2] ε^f_k2 + (1 - α) D^f_k`` for the state leaves of a layer:
    ``blocks[k][k2]`` is ``(B, n)`` (None across layers), ``old[k]`` and
    ``derivative[k]`` are ``(B, P, n)`` (a row per dense leaf of k's layer), or None."""
    return tuple(
        None
        if old_k is None
        else decay
        * sum(
            blocks[k][k2][:, None] * old[k2] for k2 in range(len(old)) if blocks[k][k2] is not None
        )
        + (1 - decay) * derivative[k]
        for k, old_k in enumerate(old)
    )


def stacked_gradients(signal: jax.Array, traces: jax.Array, ndim: int, axis: int) -> jax.Array:
    """``Σ_b kronecker_leaf(signal_{b,r}, trace_{b,r})`` for every row r of a stack of
    leaves (a leading stream axis ``b``, the row axis next): one batched matrix product
    for kernels (``signal``: ``(B, p, n)``, ``traces``: ``(B, p, m)``; the result ``(p, n,
    m)`` or ``(p, m, n)`` by the unit ``axis``), a weighted sum for biases (``traces``:
    ``(B, p)``, the result ``(p, n)``)."""
    if ndim == 1:
        return jnp.sum(signal * traces[:, :, None], axis=0)
    if axis == 0:
        return jnp.einsum("bru,bri->rui", signal, traces)
    return jnp.einsum("bri,bru->riu", traces, signal)


def gradients(the_plan, decay, p_leaves, d_theta, signals, vectors, old_input_trace):
    """The averaged gradient of every params leaf and the new input traces.

    ``ε^x ← α ε^x + a_t`` for every group of kernels, whose gradient is one batched
    matrix product of the signals and the new input traces (:func:`stacked_gradients`;
    a kernel of fused gate blocks reads its blocks' rows as one unit axis); a bias's
    is its signal; a leaf that moves no state keeps its direct gradient.
    """
    units, layout = the_plan.units, the_plan.layout
    grads = [d if u is None else None for d, u in zip(d_theta, units)]
    input_trace = []
    for group, old in zip(layout.groups, old_input_trace):
        u = units[group[0]]
        start = layout.rows[u.layer].index((group[0], 0))
        new_x = decay * old + jnp.stack([vectors[j] for j in group], axis=1).astype(old.dtype)
        signal = signals[u.layer][:, start : start + len(group) * u.groups]
        signal = signal.reshape(signal.shape[0], len(group), -1)
        for j, g in zip(group, stacked_gradients(signal, new_x, 2, u.axis)):
            grads[j] = g.astype(p_leaves[j].dtype)
        input_trace.append(new_x)
    for layer, rows in layout.rows.items():
        by_blocks: dict = {}
        for j in dict.fromkeys(j for j, _ in rows):
            if p_leaves[j].ndim == 1:
                by_blocks.setdefault(units[j].groups, []).append(j)
        for blocks, biases in by_blocks.items():
            at = [rows.index((j, 0)) for j in biases]
            signal = jnp.stack([signals[layer][:, r : r + blocks] for r in at], axis=1)
            signal = signal.reshape(*signal.shape[:2], -1)  # (B, p, blocks·n)
            ones = jnp.stack([vectors[j] for j in biases], axis=1)
            for j, g in zip(biases, stacked_gradients(signal, ones, 1, 0)):
                grads[j] = g.astype(p_leaves[j].dtype)
    return grads, tuple(input_trace)


def es_d_rtrl_streams(
    apply_fn, loss_fn, source, decay, params, carry: ESDRTRLState, xs, ys, stream_keys
):
    """One ES-D-RTRL step of B streams (leading axes; one stream is B = 1): the module
    docstring's equations, from one forward and its backward for the loss and the state
    leaves (:func:`~uorojax.estimators.factored_traces.local_backward`), with each layer's
    traces updated as one stack (:func:`~uorojax.estimators.factored_traces.trace_layout`).
    On an inferred program the rows' signals come from its probes
    (:mod:`~uorojax.estimators.probe_rows`), else from the structure's ``leaf_inputs``.

    Returns:
      ``(grads, carry, info)``, the gradient averaged over the streams.
    """
    del stream_keys  # deterministic
    states = carry.state
    p_leaves, treedef = jax.tree.flatten(params)
    structure = source.at_step(params, first(states), first(xs))
    local = local_apply(apply_fn, structure, keep_diagonal=False)
    if structure.program is not None:
        the_plan = probe_plan(structure, params, first(states))
        program = structure.program
        new_states, outputs, losses, d_theta, d_copies, d_probes, d_states = local_backward(
            lambda p, s, x, z: program.apply(p, s, x, recurrent="none", probes=z),
            loss_fn, the_plan.copy_groups, params, states, xs, ys, program.probe_zeros(),
        )  # fmt: skip
        vectors = probe_vectors(structure, the_plan, params, states, xs)
        sizes = {layer: n for layer, n in enumerate(program.sizes)}
        rows_of = probe_rows(the_plan, d_copies, d_probes, sizes)
    else:
        if structure.leaf_inputs is None and structure.layer_inputs is None:
            raise checks.ConfigError(
                "es_d_rtrl needs, for every dense params leaf of the layer, the vector it "
                "multiplies and the pre-activation it feeds: inference refused this model "
                "(uorojax.infer_structure says why), and its hand-written structure gives "
                "no leaf_inputs. " + MODEL_HINT
            )
        the_plan = plan(structure, params, first(states), first(xs))
        new_states, outputs, losses, d_theta, d_copies, _, d_states = local_backward(
            local, loss_fn, the_plan.copy_groups, params, states, xs, ys
        )
        vectors = jax.vmap(  # each stream's input vectors
            lambda s, x: [
                None if d is None else d.vector for d in dense_inputs(structure, params, s, x)
            ]
        )(states, xs)
        per_name = preactivation_rows(the_plan, len(p_leaves), d_copies, vectors)
        rows_of = {layer: as_rows(per_name, the_plan.names, the_plan.inputs, rows)
                   for layer, rows in the_plan.layout.rows.items()}  # fmt: skip
    layers, layout = the_plan.layers, the_plan.layout
    columns = jax.tree.leaves(jax.tree.map(lambda a: a[1:], d_states))
    blocks = [  # blocks[k][k2] = ∂s_k/∂s_k2 per stream and unit
        [columns[k2][k] if layers[k] == layers[k2] else None for k2 in range(len(layers))]
        for k in range(len(layers))
    ]
    d_state = jax.tree.leaves(first(d_states))  # δs̃_{t-1}
    scale = correction(carry.steps, decay, d_state[0].dtype)[:, None, None]
    derivative = [
        None if f is None else rows_of[layer][1 + k]
        for k, (f, layer) in enumerate(zip(carry.unit_trace, layers))
    ]
    unit_trace = unit_trace_update(decay, blocks, carry.unit_trace, derivative)
    signals = {}
    for layer in layout.rows:
        # λ_t · ε^f_t = α δs̃_{t-1} · ε^f_{t-1} + (1 - α) ∂L_t/∂z_t, per stream and row
        history = sum(
            d_state[k][:, None] * f
            for k, f in enumerate(carry.unit_trace)
            if f is not None and layers[k] == layer
        )
        signals[layer] = (decay * history + (1 - decay) * rows_of[layer][0]) / scale
    grads, input_trace = gradients(
        the_plan, decay, p_leaves, jax.tree.leaves(d_theta), signals, vectors,
        carry.input_trace,
    )  # fmt: skip
    new_carry = ESDRTRLState(
        new_states, input_trace, unit_trace, jnp.minimum(carry.steps + 1, CORRECTION_STEPS)
    )
    info = StepInfo(losses, outputs, jnp.asarray(True))
    return jax.tree.unflatten(treedef, grads), new_carry, info


def check_decay(decay: Any) -> float:
    """``decay`` as a float in ``[0, 1)``, or a ConfigError."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)):
        raise checks.ConfigError(f"decay must be a float in [0, 1), got {decay!r}")
    if not (math.isfinite(float(decay)) and 0 <= decay < 1):
        raise checks.ConfigError(
            f"decay must be in [0, 1) (the traces' smoothing factor α), got {decay}"
        )
    return float(decay)


def es_d_rtrl(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    structure: Structure | None = None,
    example_x: Any = None,
    decay: float = 0.9,
) -> Estimator:
    r"""ES-D-RTRL (braintrace's ``pp_prop``): factored traces, ``O(I + O)`` memory a leaf.

    Each dense leaf's trace is the outer product of a smoothed unit factor and a smoothed
    input factor, read with the learning signal ``∂L_t/∂s_t`` (see the module docstring;
    Wang et al. 2026). Biased. One stream; use :func:`~uorojax.per_stream` for a batch.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      structure: None (the default) to infer the model's structure from ``example_x``
        (:func:`~uorojax.infer_structure`: each dense kernel's vector and
        pre-activation are read through the inferred program, fused gates included), or
        a hand-written :class:`~uorojax.structure.Structure`, checked against the model
        before any gradient (where inference refuses the model, it needs
        ``leaf_inputs`` or ``layer_inputs``).
      example_x: one stream's input of one step: what the structure is inferred from.
      decay: the smoothing factor ``α`` in ``[0, 1)`` (braintrace's ``decay_or_rank``
        as a float; a rank ``r`` is ``α = (r - 1)/(r + 1)``). ``α = 0`` gives the
        one-step truncated gradient.

    Returns:
      An :class:`Estimator` whose carry is an :class:`ESDRTRLState`.

    Raises:
      ConfigError: for a decay outside ``[0, 1)``; at ``init_state``, without
        ``structure`` or ``example_x``, for a model whose structure cannot be inferred
        or a hand-written one that differs from it, or for a leaf whose trace has no
        input/unit factorisation.

    Example::

      model = uorojax.from_nnx(functools.partial(nnx.GRUCell, 3, 32), jnp.zeros(32),
                               example_x=x0)
      est = uorojax.es_d_rtrl(model.apply, uorojax.squared_error, example_x=x0)
    """
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    decay = check_decay(decay)
    source = StructureSource("es_d_rtrl", apply_fn, structure, example_x)
    return streams_estimator(
        functools.partial(es_d_rtrl_init, source),
        functools.partial(es_d_rtrl_streams, apply_fn, loss_fn, source, decay),
    )
