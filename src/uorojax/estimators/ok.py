r"""OK (Benzing, Gauy, Mujika, Martinsson & Steger 2019): the optimal Kronecker-sum
approximation of RTRL.

"Optimal Kronecker-Sum Approximation of Real Time Recurrent Learning" (ICML 2019)
generalises KF-RTRL (:mod:`uorojax.estimators.kf_rtrl`) from one Kronecker term to r.
For one dense recurrent layer :math:`h_t = \sigma(W a_t)`, :math:`a_t = [x_t; h_{t-1}; 1]`
(``m`` inputs, ``n`` units), OK carries

.. math::  J_t \approx \sum_{i=1}^r A_i \otimes u_i
           \qquad (A_i: n \times n, \; u_i \in \mathbb{R}^m).

The recursion :math:`H_t J_{t-1} + B_t`, :math:`H_t = \partial h_t/\partial h_{t-1}`,
:math:`B_t = D_t \otimes a_t` with :math:`D_t = \mathrm{diag}(\sigma'(z_t))`, has r+1
terms, :math:`T_i \otimes u_i` with :math:`T_i = H_t A_i` (i ≤ r) and
:math:`T_{r+1} = D_t`, :math:`u_{r+1} = a_t`. They are replaced by r terms whose
expectation is exactly their sum and whose variance
:math:`\mathbb{E}\|\tilde J - J\|_F^2` is the least any unbiased rank-r replacement can
have (:func:`optimal_kronecker_sum`):

1. *Orthogonalise the input side.* :math:`[u_1, \dots, u_{r+1}] = Q_u R_u` (QR), so
   with :math:`\mathrm{vec}` stacking a factor into a column,
   :math:`\sum_i \mathrm{vec}(T_i) u_i^\top = K Q_u^\top`,
   :math:`K = [\mathrm{vec}\,T_1, \dots, \mathrm{vec}\,T_{r+1}]\, R_u^\top`
   (n² × min(m, r+1)).
2. *Diagonalise.* :math:`K = X \Sigma Y^\top` (thin SVD), :math:`\sigma_1 \ge \dots \ge
   \sigma_{r+1} \ge 0` (zeros padded when a side spans fewer than r+1 dimensions;
   values at most ``eps`` times :math:`\sigma_1` count as zero): the sum is
   :math:`X \Sigma (Q_u Y)^\top` with orthonormal columns on both sides.
3. *Reduce the diagonal* (:func:`optimal_unbiased_diagonal`): a random
   :math:`(r+1) \times r` matrix F with :math:`\mathbb{E}[F F^\top] = \Sigma`; the new
   terms are the columns :math:`f_j` of F mapped back, :math:`\mathrm{vec}\,A'_j = X f_j`
   and :math:`u'_j = Q_u Y f_j`, so :math:`\sum_j A'_j \otimes u'_j = X F F^\top
   (Q_u Y)^\top` and the error is :math:`\|F F^\top - \Sigma\|_F` (orthonormal maps).
   Both factors of a term have the norm :math:`\|f_j\|`.

The gradient is :math:`g = \delta\theta + \delta s \cdot J_{t-1}`: for the layer's
weights :math:`\sum_i (A_i^\top \delta s) \otimes u_i`; the readout gets its direct
gradient. Unbiased for frozen params. At rank r ≥ m (or r ≥ n²) no reduction is
needed: the r+1 input factors span at most m dimensions, so K has at most r non-zero
singular values and OK is exact RTRL for the layer. Memory ``O(r(n² + m))``; cost
``O(r n³)`` a step for the pushes :math:`H_t A_i` (r·n forward-mode products), plus
``O(r² (n² + m))`` for the QR, the thin SVD and the new factors.

The layer's weights may be split over several parameter leaves (a flax ``SimpleCell``
keeps ``W_i``, ``b_i`` and ``W_h`` apart): :attr:`~uorojax.structure.Structure.layer_inputs`
gives, for each, the part of :math:`a_t` it multiplies, and the input factors are kept in
the same pieces, concatenated only for the orthogonalisation.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from uorojax import checks
from uorojax.estimators.base import (
    ApplyFn,
    Estimator,
    LossFn,
    StepInfo,
    loss_vjp,
    model_step,
    step_loss_and_cotangent,
    validate,
)
from uorojax.estimators.kronecker import (
    add_kronecker_gradient,
    check_dense_layer,
    dense_layer,
    state_jacobian_times,
    zero_input_factor,
)
from uorojax.models.structure.resolve import StructureSource
from uorojax.models.structure.types import Structure, leaf_units

PyTree = Any


class OKState(NamedTuple):
    """OK carry: the model state and the factors of ``J ≈ Σ_i unit_factor[i] ⊗ input_factor[i]``.

    Attributes:
      state: the model state.
      input_factor: the ``u_i``, in the layer's pieces: for every parameter leaf of the
        layer (flattened order) an array ``(r, *input)`` (``input`` the part of ``a_t`` the
        leaf multiplies, ``()`` for a bias), None for other leaves.
      unit_factor: the ``A_i``, an ``(r, n, n)`` array.
    """

    state: PyTree
    input_factor: tuple
    unit_factor: jax.Array


# ----------------------------------------------------------------------------- the reduction


def optimal_unbiased_diagonal(sigma: jax.Array, signs: jax.Array) -> jax.Array:
    r"""A random ``(r+1, r)`` matrix F with :math:`\mathbb{E}[F F^\top] = \mathrm{diag}(\sigma)`
    and the least variance :math:`\mathbb{E}\|F F^\top - \mathrm{diag}(\sigma)\|_F^2`.

    The optimal unbiased rank-r approximation of a diagonal matrix (Benzing et al. 2019,
    "Optimal Kronecker-Sum Approximation of Real Time Recurrent Learning", the OK step
    and its supplementary Appendix A). With :math:`\sigma_1 \ge \dots \ge \sigma_{r+1}
    \ge 0` and :math:`T_j = \sum_{i \ge j} \sigma_i`, let ``j*`` be the smallest j with

    .. math::  (r + 1 - j)\, \sigma_j \le T_j

    (j = r always qualifies). The values before ``j*`` are *kept*; the ``k + 1`` values
    from ``j*`` on, :math:`k = r + 1 - j^*`, are *mixed* into k dimensions. With
    :math:`S = T_{j^*}`, :math:`v_i^2 = (S - k \sigma_i) / S` on the mixed values (they
    sum to 1; all equal when S = 0) and :math:`x = c \odot v`, :math:`c_i = \pm 1` independent
    signs,

    .. math::  F F^\top = \mathrm{diag}(\sigma_{\mathrm{kept}})
               \oplus \tfrac{S}{k} \,(I_{k+1} - x x^\top),

    of rank r, with mean :math:`\mathrm{diag}(\sigma)` since
    :math:`\mathbb{E}[x x^\top] = \mathrm{diag}(v^2)`, and variance
    :math:`S^2/k - \sum_{\mathrm{mixed}} \sigma_i^2` (every sample has
    :math:`\|F F^\top\|_F^2 = \sum_{\mathrm{kept}} \sigma_i^2 + S^2/k`), the least any
    unbiased rank-r approximation has (the paper's theorem; on the mixed block alone: an
    X of rank k has :math:`\|X\|_F^2 \ge (\mathrm{tr}\, X)^2 / k`, and
    :math:`\mathbb{E}(\mathrm{tr}\, X)^2 \ge S^2`). F's columns are
    :math:`G R e_l` (l ≠ p), where :math:`G = \mathrm{diag}(g)` with :math:`g_i =
    \sqrt{\sigma_i}` (kept) or :math:`\sqrt{S/k}` (mixed), and R is the Householder
    reflection with :math:`R x = \pm e_p`, :math:`p = \arg\max_i |x_i|`: its other columns
    are an orthonormal basis of :math:`x^\perp`, so :math:`F F^\top = G (I - x x^\top) G`.
    No division by a difference of values: ties and zeros are safe.

    Args:
      sigma: ``(r+1,)`` non-negative values in non-increasing order (r ≥ 1).
      signs: ``(r+1,)`` independent uniform ±1 (only the mixed ones are used).

    Returns:
      F, ``(r+1, r)``.

    Example::

      f = optimal_unbiased_diagonal(jnp.array([3.0, 2.0, 1.0]),
                                    jax.random.rademacher(key, (3,), jnp.float32))
      f @ f.T    # diag(3, 2, 1) on average, rank 2
    """
    size = sigma.shape[0]
    rank = size - 1
    index = jnp.arange(size)
    tail = jnp.cumsum(sigma[::-1])[::-1]  # T_j
    first_mixed = jnp.argmax((rank - index) * sigma <= tail)  # j* (0-based)
    mixed = index >= first_mixed
    k = (rank - first_mixed).astype(sigma.dtype)  # >= 1: j = r - 1 (0-based) qualifies
    total = tail[first_mixed]  # S
    # (S - k σ_i) / S is exactly 0 where σ_i = S/k and the rest is zero (a sum of lower
    # rank, kept as it is); 1 - k σ_i / S can round to ±ulp there, and its root to 1e-8.
    safe_total = jnp.where(total > 0, total, 1.0)
    v_squared = jnp.where(total > 0, (total - k * sigma) / safe_total, 1.0 / (k + 1.0))
    x = signs * jnp.sqrt(jnp.where(mixed, jnp.maximum(v_squared, 0.0), 0.0))
    x = x / jnp.linalg.norm(x)  # |x| = 1 up to rounding, and at least 1/sqrt(r+1)
    scale = jnp.where(mixed, jnp.sqrt(total / k), jnp.sqrt(sigma))
    pivot = jnp.argmax(jnp.abs(x))
    w = x.at[pivot].add(jnp.where(x[pivot] < 0, -1.0, 1.0))  # x - s e_p, s = -sign(x_p)
    reflection = jnp.eye(size, dtype=sigma.dtype) - jnp.outer(w, w) / (1.0 + jnp.abs(x[pivot]))
    columns = index[:rank] + (index[:rank] >= pivot)  # every column but the pivot's
    return scale[:, None] * reflection[:, columns]


def optimal_kronecker_sum(
    unit_terms: jax.Array, input_terms: jax.Array, key: jax.Array, eps: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    r"""r Kronecker terms whose sum is, on average, the sum of r+1, with the least variance.

    Steps 1-3 of the module docstring (Benzing et al. 2019): QR of the input side, thin
    SVD of :math:`K = [\mathrm{vec}\,T_i]\, R_u^\top`, :func:`optimal_unbiased_diagonal`
    of its singular values with fresh random signs.

    Args:
      unit_terms: ``(r+1, P)``, the unit factors flattened (``vec T_i`` as rows).
      input_terms: ``(r+1, m)``, the input factors as rows.
      key: PRNG key for the signs.
      eps: singular values at most ``eps`` times the largest count as zero, so that a sum
        of rank ≤ r (the zero factors at a stream's start) is kept exactly instead of
        mixing rounding noise into it; this drops at most ``eps·sqrt(r+1)`` of the sum
        (Frobenius, relative). 0 keeps every value.

    Returns:
      ``(new_units (r, P), new_inputs (r, m))`` with
      :math:`\mathbb{E} \sum_j \mathrm{vec}(A'_j) u_j'^\top = \sum_i \mathrm{vec}(T_i)
      u_i^\top`.

    Example::

      units, inputs = optimal_kronecker_sum(jnp.stack([a1.ravel(), d.ravel()]),
                                            jnp.stack([u1, x]), key)
    """
    size = unit_terms.shape[0]
    q_input, _ = jnp.linalg.qr(input_terms.T)  # (m, k_u)
    # R_u as Q_uᵀ Uᵀ, so that the SVD waits for Q_u: jaxlib's batched LAPACK calls on CPU
    # wait for their batch slices in the thread pool they run in, and two independent
    # ones running at once can take every thread of a small pool and deadlock.
    r_input = q_input.T @ input_terms.T  # (k_u, r+1)
    left, sigma, right_t = jnp.linalg.svd(unit_terms.T @ r_input.T, full_matrices=False)
    pad = size - sigma.shape[0]
    sigma = jnp.pad(sigma, (0, pad))
    left = jnp.pad(left, ((0, 0), (0, pad)))
    right = jnp.pad(right_t.T, ((0, 0), (0, pad)))
    sigma = jnp.where(sigma > eps * sigma[0], sigma, 0.0)
    signs = jax.random.rademacher(key, (size,), sigma.dtype)
    f = optimal_unbiased_diagonal(sigma, signs)
    return (left @ f).T, (q_input @ (right @ f)).T


# ----------------------------------------------------------------------------- the estimator


def ok_init(source: StructureSource, rank: int, params, state0) -> OKState:
    """Zero factors (the structure resolved and checked by ``source``)."""
    checks.check_init(params, state0, "ok")
    structure = source.at_init(params, state0)
    check_dense_layer(structure, params, state0, "ok", source.example_x)
    h0 = jax.tree.leaves(state0)[0]
    n = h0.shape[0]
    return OKState(
        state0, zero_input_factor(structure, params, (rank,)), jnp.zeros((rank, n, n), h0.dtype)
    )


def _stack_inputs(input_factor: tuple, inputs: list) -> jax.Array:
    """The r old input factors and ``a_t`` as the rows of one ``(r+1, m)`` matrix."""
    rows = []
    for piece, a in zip(input_factor, inputs):
        if piece is not None:
            both = jnp.concatenate([piece, a.astype(piece.dtype)[None]])
            rows.append(both.reshape(both.shape[0], -1))
    return jnp.concatenate(rows, axis=1)


def _split_inputs(matrix: jax.Array, like: tuple) -> tuple:
    """An ``(r, m)`` matrix of input factors back in the layer's pieces."""
    pieces, start = [], 0
    for piece in like:
        if piece is None:
            pieces.append(None)
            continue
        size = piece[0].size
        pieces.append(matrix[:, start : start + size].reshape(piece.shape))
        start += size
    return tuple(pieces)


def ok_step(apply_fn, loss_fn, source, eps, params, carry: OKState, x, y, key):
    """One OK step (see the module docstring)."""
    validate(params, key)
    state = carry.state
    structure = source.at_step(params, state, x)
    units = leaf_units(structure, params)
    new_state, output, loss, _, (delta_theta, delta_s) = loss_vjp(
        lambda p, s: model_step(apply_fn, p, s, x),
        step_loss_and_cotangent(loss_fn, y),
        params,
        state,
    )
    unit_factor, input_factor = carry.unit_factor, carry.input_factor
    # g = δθ + δs · J_{t-1}; for the layer, Σ_i (A_iᵀ δs) ⊗ u_i.
    projected = jnp.einsum("isn,s->in", unit_factor, jax.tree.leaves(delta_s)[0])
    grads = add_kronecker_gradient(delta_theta, projected, input_factor, units)

    inputs, d = dense_layer(apply_fn, structure, params, state, x, "ok")
    h_times_a = jax.vmap(lambda a: state_jacobian_times(apply_fn, params, state, x, a))(unit_factor)
    rank, n, _ = unit_factor.shape
    unit_terms = jnp.concatenate([h_times_a, jnp.diag(d).astype(h_times_a.dtype)[None]])
    new_units, new_inputs = optimal_kronecker_sum(
        unit_terms.reshape(rank + 1, n * n), _stack_inputs(input_factor, inputs), key, eps
    )
    new_carry = OKState(
        new_state, _split_inputs(new_inputs, input_factor), new_units.reshape(rank, n, n)
    )
    return grads, new_carry, StepInfo(loss, output, jnp.asarray(True))


def ok(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    structure: Structure | None = None,
    example_x: Any = None,
    rank: int = 1,
    eps: float = 1e-7,
) -> Estimator:
    r"""OK: the optimal unbiased rank-r Kronecker-sum approximation of RTRL for one dense
    recurrent layer; ``O(r(n² + m))`` memory.

    See the module docstring for the equations (Benzing et al. 2019). Rank 1 has the
    form of KF-RTRL with the least variance a one-term reduction can have; the variance
    falls with the rank, and a rank of at least the layer's input width m is exact
    RTRL. One stream; use :func:`~uorojax.per_stream` for a batch (the factors of
    different streams do not share a Kronecker form).

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      loss_fn: ``(output, y) -> scalar``.
      structure: None (the default) to infer the structure from ``example_x``
        (:func:`~uorojax.infer_structure`: a single dense layer ``h = σ(W a)`` in any
        layout, ``K @ h`` or ``h @ K``, its kernels split or concatenated), or a
        hand-written :class:`~uorojax.structure.Structure`, checked against the model
        before any gradient (with ``layer_inputs`` where inference refuses the model).
      example_x: one stream's input of one step: what the structure is inferred from.
      rank: r, the number of Kronecker terms carried (>= 1).
      eps: singular values of the r+1 step terms at most ``eps`` times the largest count
        as zero (>= 0; see :func:`optimal_kronecker_sum`): a sum of rank ≤ r, such as
        the single term at a stream's start, is then carried exactly.

    Returns:
      An :class:`Estimator` whose carry is an :class:`OKState`.

    Example::

      model = uorojax.tanh_rnn(32, 4, 4)
      est = uorojax.ok(model.apply, uorojax.squared_error, structure=model.structure, rank=4)
    """
    checks.check_callable("apply_fn", apply_fn)
    checks.check_callable("loss_fn", loss_fn)
    rank = checks.positive_int("rank", rank)
    eps = checks.non_negative_float("eps", eps)
    source = StructureSource("ok", apply_fn, structure, example_x)
    return Estimator(
        functools.partial(ok_init, source, rank),
        functools.partial(ok_step, apply_fn, loss_fn, source, eps),
    )
