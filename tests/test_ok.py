"""OK (Benzing et al. 2019): the optimal Kronecker-sum approximation of RTRL.

Statistical checks share one set of runs per estimator (20,000 keys, compiled once) on
the tiny tanh RNN; the reduction itself is checked alone on random Kronecker terms.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    check_unbiased,
    flat,
    normalized_squared_error,
    regression_stream,
    scan_estimator,
    tiny_rnn,
)
from jax.flatten_util import ravel_pytree

import uorojax
from uorojax import ConfigError
from uorojax import runs as experiment
from uorojax.estimators import registry
from uorojax.models.structure.types import leaf_units

OK_MODULE = importlib.import_module("uorojax.estimators.ok")
LOSS = uorojax.squared_error
LENGTH = 8
NUM_KEYS = 20_000


def float64_simple():
    model = uorojax.linen_model("simple", 3, 2)
    params, state0 = model.init(jax.random.key(0), jnp.zeros(2))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    return model, params, jax.tree.map(lambda a: 0.2 + a.astype(jnp.float64), state0)


def input_width(model, params, state0):
    """m, the length of the layer input a_t = [x; h; 1]."""
    inputs = model.structure.layer_inputs(params, state0, jnp.zeros(2))
    return sum(int(np.size(a)) for a in inputs if a is not None)


def dense_jacobian(structure, params, input_factor, unit_factor):
    """Σ_i A_i ⊗ u_i entry by entry, as a (|S|, |Θ|) matrix in ravel_pytree order:
    entry (unit p, input q) of a layer leaf is Σ_i A_i[s, p] u_i[q] (a bias: u_i)."""
    columns = []
    for leaf, units, piece in zip(
        jax.tree.leaves(params), leaf_units(structure, params), input_factor
    ):
        if piece is None:
            columns.append(jnp.zeros((unit_factor.shape[1], leaf.size), unit_factor.dtype))
        elif leaf.ndim == 1:
            columns.append(jnp.einsum("isp,i->sp", unit_factor, piece))
        else:
            unit_of = np.indices(leaf.shape)[units.axis].ravel()
            input_of = np.indices(leaf.shape)[1 - units.axis].ravel()
            columns.append(jnp.einsum("ise,ie->se", unit_factor[:, :, unit_of], piece[:, input_of]))
    return jnp.concatenate(columns, axis=1)


def carry_jacobian(structure, params, carry):
    """An OK carry's Jacobian estimate; a KF-RTRL carry is one term."""
    if isinstance(carry, uorojax.KFRTRLState):
        pieces = tuple(None if p is None else p[None] for p in carry.input_factor)
        return dense_jacobian(structure, params, pieces, carry.unit_factor[None])
    return dense_jacobian(structure, params, carry.input_factor, carry.unit_factor)


def scan(est, params, state0, xs, ys, key):
    """The final carry and the gradient of every step, flattened (T, |Θ|)."""
    carry, grads, _ = scan_estimator(est, params, state0, xs, ys, key)
    return carry, jax.vmap(flat)(grads)


@functools.cache
def exact_rtrl():
    """The tiny tanh RNN, its stream, and exact RTRL's final Jacobian and per-step
    gradients."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(LENGTH)
    carry, grads = scan(uorojax.rtrl(model.apply, LOSS), params, h0, xs, ys, jax.random.key(0))
    return model, params, h0, xs, ys, uorojax.jacobian_matrix(carry), grads


def build(name, model):
    if name == "kf_rtrl":
        return uorojax.kf_rtrl(model.apply, LOSS, structure=model.structure)
    return uorojax.ok(model.apply, LOSS, structure=model.structure, rank=int(name[2:]))


def run_keys(est, num_keys=NUM_KEYS, seed=11):
    """Final Jacobian estimates (N, |S|, |Θ|) and per-step gradients (N, T, |Θ|) over N keys."""
    model, params, h0, xs, ys, _, _ = exact_rtrl()

    def one(key):
        carry, grads = scan(est, params, h0, xs, ys, key)
        return carry_jacobian(model.structure, params, carry), grads

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), num_keys))


@functools.cache
def samples(name):
    return run_keys(build(name, exact_rtrl()[0]))


def errors_against_rtrl(jacobians, grads):
    """Relative errors of the mean Jacobian and mean last-step gradient at N = 1,000 and
    20,000 keys (the format of helpers.check_unbiased)."""
    *_, exact_jacobian, exact_grads = exact_rtrl()
    rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))  # noqa: E731
    return {
        n: (rel(jacobians[:n].mean(0), exact_jacobian), rel(grads[:n, -1].mean(0), exact_grads[-1]))
        for n in (1000, NUM_KEYS)
    }


def relative_variances(name):
    """Per step, E‖g_t − E g_t‖² / ‖g*_t‖² (diagnostics.gradient_statistics'
    relative_variance), and the final Jacobian's E‖J − E J‖_F² / ‖J*‖_F²."""
    jacobians, grads = samples(name)
    *_, exact_jacobian, exact_grads = exact_rtrl()
    grad_var = jnp.sum(grads.var(0), -1) / jnp.sum(jnp.square(exact_grads), -1)
    jac_var = jnp.sum(jacobians.var(0)) / jnp.sum(jnp.square(exact_jacobian))
    return np.asarray(grad_var), float(jac_var)


# ----------------------------------------------------------------------------- the estimator


@pytest.mark.parametrize("rank", [1, 2])
def test_ok_mean_converges_to_exact_rtrl(rank):
    jacobians, grads = samples(f"ok{rank}")
    check_unbiased(errors_against_rtrl(jacobians, grads))
    *_, exact_grads = exact_rtrl()
    assert normalized_squared_error(grads[:, -1], exact_grads[-1]) < 9.0


def _top_singular_values(sigma, signs):
    """A biased reduction: the best deterministic rank r (drops the smallest value)."""
    return jnp.sqrt(sigma)[:, None] * jnp.eye(sigma.shape[0], sigma.shape[0] - 1)


optimal_unbiased_diagonal = OK_MODULE.optimal_unbiased_diagonal


def _without_signs(sigma, signs):
    """A biased reduction: the optimal one with its random signs fixed to +1."""
    return optimal_unbiased_diagonal(sigma, jnp.ones_like(signs))


def test_the_check_catches_a_biased_ok(monkeypatch):
    """The same check fails when the reduction truncates to the top singular values."""
    monkeypatch.setattr(OK_MODULE, "optimal_unbiased_diagonal", _top_singular_values)
    model = exact_rtrl()[0]
    jacobians, grads = run_keys(build("ok1", model))
    with pytest.raises(AssertionError):
        check_unbiased(errors_against_rtrl(jacobians, grads))


@pytest.mark.parametrize("name", ["tanh_rnn", "flax_simple"])
def test_ok_at_a_rank_above_the_input_width_is_exact_rtrl(name):
    """The r+1 input factors span at most m dimensions, so from r = m + 1 no reduction is
    needed: every gradient and the Jacobian equal exact RTRL's. (A smaller rank is not
    exact: rank 2 has a variance, see the test below.)"""
    if name == "tanh_rnn":
        model, params, state0, xs, ys, exact_jacobian, exact = exact_rtrl()
    else:
        model, params, state0 = float64_simple()
        xs, ys = regression_stream(LENGTH)
        exact_carry, exact = scan(uorojax.rtrl(model.apply, LOSS), params, state0, xs, ys,
                                  jax.random.key(0))  # fmt: skip
        exact_jacobian = uorojax.jacobian_matrix(exact_carry)
    rank = input_width(model, params, state0) + 1
    est = uorojax.ok(model.apply, LOSS, structure=model.structure, rank=rank)
    carry, grads = jax.jit(scan, static_argnums=0)(est, params, state0, xs, ys, jax.random.key(1))
    err = jnp.linalg.norm(grads - exact, axis=1) / jnp.linalg.norm(exact, axis=1)
    jacobian = carry_jacobian(model.structure, params, carry)
    jac_err = jnp.linalg.norm(jacobian - exact_jacobian) / jnp.linalg.norm(exact_jacobian)
    assert float(err.max()) < 1e-10 and float(jac_err) < 1e-10, (err, jac_err)


def test_variance_falls_with_the_rank_and_rank_one_is_below_kf_rtrl():
    """Seeded, 20,000 keys: the variance estimates' sampling error is a few percent,
    far below the gaps tested (a factor 2 between ranks)."""
    grad_var = {}
    jac_var = {}
    for name in ("ok1", "ok2", "ok4", "kf_rtrl"):
        per_step, jac_var[name] = relative_variances(name)
        grad_var[name] = float(per_step.mean())
    assert grad_var["ok1"] > 2 * grad_var["ok2"] > 4 * grad_var["ok4"] > 0, grad_var
    assert jac_var["ok1"] > 2 * jac_var["ok2"] > 4 * jac_var["ok4"] > 0, jac_var
    assert grad_var["ok1"] < grad_var["kf_rtrl"], grad_var
    assert jac_var["ok1"] < jac_var["kf_rtrl"], jac_var


def test_a_zero_start_and_a_rank_above_the_terms_give_no_nan():
    """From zero factors, with more rank than non-zero terms (J_t has rank ≤ t+1): finite
    gradients and Jacobians for every key, and the first rank+1 gradients exact (a sum of
    rank ≤ r is kept as it is; eps = 0 on such sums: the reduction tests below)."""
    *_, exact = exact_rtrl()
    jacobians, grads = samples("ok4")
    assert np.isfinite(jacobians).all() and np.isfinite(grads).all()
    err = jnp.linalg.norm(grads - exact, axis=-1) / jnp.linalg.norm(exact, axis=-1)
    assert float(err[:, :5].max()) < 1e-10, err[:, :5].max(0)


# ----------------------------------------------------------------------------- the reduction


def random_terms(key, count, shape=(3, 3), width=5):
    k1, k2 = jax.random.split(key)
    units = jax.random.normal(k1, (count, *shape), jnp.float64)
    inputs = jax.random.normal(k2, (count, width), jnp.float64)
    return units, inputs


def kronecker_sum(units, inputs):
    """Σ_i vec(T_i) u_iᵀ."""
    return jnp.einsum("ip,iq->pq", units.reshape(units.shape[0], -1), inputs)


@functools.partial(jax.jit, static_argnums=0)
def _reduce_many(reduce, units, inputs, keys, eps):
    def one(key):
        new_units, new_inputs = reduce(units.reshape(units.shape[0], -1), inputs, key, eps)
        assert new_units.shape[0] == units.shape[0] - 1
        return kronecker_sum(new_units, new_inputs)

    return jax.vmap(one)(keys)


def reduced_sums(units, inputs, eps=0.0, reduce=OK_MODULE.optimal_kronecker_sum):
    """The reduced sum for NUM_KEYS keys (one compilation per shape and ``reduce``)."""
    keys = jax.random.split(jax.random.key(5), NUM_KEYS)
    return _reduce_many(reduce, units, inputs, keys, eps)


def least_variance(sigma, rank):
    """The paper's optimum written out: the first j with (r − j) σ_j ≤ Σ_{i≥j} σ_i
    (0-based) keeps σ_0..σ_{j−1} and mixes the rest, summing to S, into k = r − j
    dimensions at level S/k; the variance is S²/k − Σ_{i≥j} σ_i². Returns (variance,
    kept values, S/k, k)."""
    sigma = np.sort(np.asarray(sigma))[::-1][: rank + 1]
    sigma = np.pad(sigma, (0, rank + 1 - sigma.size))
    for j in range(rank + 1):
        k = rank - j
        rest = sigma[j:]
        if k * sigma[j] <= rest.sum():
            return rest.sum() ** 2 / k - np.sum(rest**2), sigma[:j], rest.sum() / k, k
    raise AssertionError("j = r always fits")


def pairwise_sign_mixing(units, inputs, key, eps):
    """A plain unbiased alternative (KF-RTRL's rule): keep r−1 terms and mix the last
    two with independent signs, each side balanced."""
    c = jax.random.rademacher(key, (2,), units.dtype)
    p = jnp.sqrt(jnp.linalg.norm(units[-2:], axis=1) / jnp.linalg.norm(inputs[-2:], axis=1))
    mixed_input = c[0] * p[0] * inputs[-2] + c[1] * p[1] * inputs[-1]
    mixed_unit = c[0] * units[-2] / p[0] + c[1] * units[-1] / p[1]
    return (
        jnp.concatenate([units[:-2], mixed_unit[None]]),
        jnp.concatenate([inputs[:-2], mixed_input[None]]),
    )


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_the_reduction_is_unbiased_with_the_least_variance(rank):
    units, inputs = random_terms(jax.random.key(rank), rank + 1)
    exact = kronecker_sum(units, inputs)
    sums = reduced_sums(units, inputs)
    flat_sums = sums.reshape(sums.shape[0], -1)
    for n in (1000, NUM_KEYS):
        assert normalized_squared_error(flat_sums[:n], exact.ravel()) < 9.0, n
    # Each sample has ‖X‖² = Σ kept σ² + S²/k exactly, hence E‖X − S‖² = S²/k − Σ mixed σ²,
    # the paper's optimum computed here from the singular values of the dense sum.
    sigma = np.linalg.svd(np.asarray(exact), compute_uv=False)
    optimum, kept, mixed_level, k = least_variance(sigma, rank)
    expected_norm = np.sum(kept**2) + k * mixed_level**2
    np.testing.assert_allclose(jnp.sum(jnp.square(sums), (1, 2)), expected_norm, rtol=1e-10)
    variance = float(jnp.mean(jnp.sum(jnp.square(sums - exact), (1, 2))))
    np.testing.assert_allclose(variance, optimum, rtol=0.05)
    alternative = reduced_sums(units, inputs, reduce=pairwise_sign_mixing)
    alt_variance = float(jnp.mean(jnp.sum(jnp.square(alternative - exact), (1, 2))))
    assert normalized_squared_error(alternative.reshape(NUM_KEYS, -1), exact.ravel()) < 9.0
    assert variance < alt_variance, (variance, alt_variance)


@pytest.mark.parametrize("variant", [_top_singular_values, _without_signs])
def test_the_reduction_check_catches_a_biased_variant(variant, monkeypatch):
    monkeypatch.setattr(OK_MODULE, "optimal_unbiased_diagonal", variant)
    units, inputs = random_terms(jax.random.key(2), 3)
    exact = kronecker_sum(units, inputs)
    # A new function object, so the patched reduction is traced afresh.
    sums = reduced_sums(units, inputs, reduce=lambda *args: OK_MODULE.optimal_kronecker_sum(*args))
    assert normalized_squared_error(sums.reshape(NUM_KEYS, -1), exact.ravel()) > 9.0


def test_the_reduction_keeps_ties_zeros_and_low_rank_sums():
    """Tied singular values: unbiased, finite. All-zero terms: zeros. A sum of rank ≤ r
    (one non-zero term among r+1 = 4, or two parallel ones at r = 1): every sample is the
    sum itself."""
    basis_units = jnp.eye(9)[:3].reshape(3, 3, 3) * 2.0  # orthonormal up to a common scale
    basis_inputs = jnp.eye(5)[:3]
    exact = kronecker_sum(basis_units, basis_inputs)  # singular values 2, 2, 2
    sums = reduced_sums(basis_units, basis_inputs)
    assert np.isfinite(sums).all()
    assert normalized_squared_error(sums.reshape(NUM_KEYS, -1), exact.ravel()) < 9.0
    zeros = reduced_sums(jnp.zeros((3, 3, 3)), jnp.zeros((3, 5)))
    assert np.isfinite(zeros).all() and float(jnp.abs(zeros).max()) == 0.0
    units, inputs = random_terms(jax.random.key(7), 4)
    units, inputs = units.at[:3].set(0.0), inputs.at[:3].set(0.0)
    exact = kronecker_sum(units, inputs)
    for eps in (0.0, 1e-7):
        sums = reduced_sums(units, inputs, eps=eps)
        np.testing.assert_allclose(sums, jnp.broadcast_to(exact, sums.shape), atol=1e-13)
    # Two parallel terms at rank 1: a rank-1 sum, kept without noise (no root of a rounding
    # error: 1 - σ_1/S computed as a quotient can be ±1e-16, its root 1e-8).
    units, inputs = random_terms(jax.random.key(8), 1)
    units, inputs = jnp.concatenate([units, 2 * units]), jnp.concatenate([inputs, 3 * inputs])
    exact = kronecker_sum(units, inputs)
    sums = reduced_sums(units, inputs)
    np.testing.assert_allclose(sums, jnp.broadcast_to(exact, sums.shape), atol=1e-12)


def test_eps_keeps_a_nearly_low_rank_sum_without_noise():
    """Singular values 1 and 1e-12 at rank 1: with eps = 1e-7 the second counts as zero
    and every sample is the sum (to its 1e-12 bias); with eps = 0 it is mixed in, and the
    noise is its root, 1e-6."""
    units = (jnp.eye(9)[:2] * jnp.array([1.0, 1e-12])[:, None]).reshape(2, 3, 3)
    inputs = jnp.eye(5)[:2]
    exact = kronecker_sum(units, inputs)
    scale = float(jnp.abs(exact).max())
    errors = {}
    for eps in (1e-7, 0.0):
        sums = reduced_sums(units, inputs, eps=eps)
        errors[eps] = float(jnp.abs(sums - exact).max()) / scale
    assert errors[1e-7] < 1e-10 and errors[0.0] > 1e-8, errors


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "rank, message", [(0, "rank must be >= 1, got 0"), (1.5, "rank must be a positive int")]
)
def test_a_bad_rank_is_named(rank, message):
    model = uorojax.tanh_rnn(3, 2, 2)
    with pytest.raises(ConfigError, match=message):
        uorojax.ok(model.apply, LOSS, structure=model.structure, rank=rank)
    with pytest.raises(ConfigError, match="eps must be finite and >= 0"):
        uorojax.ok(model.apply, LOSS, structure=model.structure, eps=-1.0)


def test_ok_refuses_models_without_one_dense_layer():
    tanh = uorojax.tanh_rnn(3, 2, 2)
    with pytest.raises(ConfigError, match="ok: structure=None infers"):
        uorojax.ok(tanh.apply, LOSS).init_state(*tanh.init(jax.random.key(0), jnp.zeros(2)))
    for model in (
        uorojax.linen_model("gru", 3, 2),
        uorojax.linen_model("simple", 3, 2, num_layers=2),
    ):
        params, state0 = model.init(jax.random.key(0), jnp.zeros(2))
        est = uorojax.ok(model.apply, LOSS, structure=model.structure, rank=2)
        with pytest.raises(ConfigError, match="ok needs a dense recurrent layer"):
            est.init_state(params, state0)


def test_the_registry_and_config_read_the_rank():
    model, params, h0 = tiny_rnn()
    options = {"structure": model.structure, "rank": 3}
    est = registry.build_estimator("ok", model.apply, LOSS, num_streams=2, **options)
    carry = est.init_state(params, jnp.stack([h0, h0]))
    assert carry.unit_factor.shape == (2, 3, 3, 3)
    assert ravel_pytree(carry.input_factor)[0].size == 2 * 3 * (2 + 3 + 1)
    with pytest.raises(ConfigError, match="supports batch_mode per_stream"):
        registry.build_estimator("ok", model.apply, LOSS, num_streams=2, batch_mode="shared",
                                 **options)  # fmt: skip
    with pytest.raises(ConfigError, match="uoro does not take rank"):
        registry.build_estimator("uoro", model.apply, LOSS, **options)
    with pytest.raises(ConfigError, match="rank must be >= 1"):
        experiment.build(
            {"algorithm": "ok", "model": "simple", "ok": {"rank": 0}, "hidden_size": 4}
        )
