"""The benchmark's rows that split a trainer's cost into its parts
(``experiments/benchmark.py``): ``grads_<method>``, the rule alone, sums the step's
gradients with the params fixed, as braintrace's ``etrace_grad`` does; ``adam`` and
``adam_flat``, the optimizer alone, run optax's Adam leaf by leaf and on the raveled
params."""

import importlib.util
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from helpers import flat, regression_stream, scan_estimator, tiny_rnn

import uorojax

_PATH = pathlib.Path(__file__).parents[1] / "experiments" / "benchmark.py"
_SPEC = importlib.util.spec_from_file_location("uorojax_benchmark_script", _PATH)
benchmark = importlib.util.module_from_spec(_SPEC)
with warnings.catch_warnings():  # ml_collections loads the default config by load_module
    warnings.simplefilter("ignore", DeprecationWarning)
    _SPEC.loader.exec_module(benchmark)

LOSS = uorojax.squared_error


def _streams(num_streams=3, length=6):
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(length * num_streams)
    split = lambda a: a.reshape(length, num_streams, -1)  # noqa: E731
    return model, params, uorojax.tree.repeat_streams(h0, num_streams), split(xs), split(ys)


def test_the_rule_alone_sums_the_steps_gradients_with_the_params_fixed():
    """One chunk of ``grads_<method>`` equals a scan over ``estimator.step`` with the keys
    drawn as its docstring says, summed, for a deterministic and a random estimator."""
    model, params, states, xs, ys = _streams()
    for name in ("es_d_rtrl", "uoro_per_stream"):
        est = benchmark.make_estimator(name, model.apply, model.structure, LOSS, 3, xs[0, 0])
        run, init = benchmark.gradient_sum_chunk(est, params, states)
        (total, carry, _), losses = run(init(), xs, ys)
        _, chunk_key = jax.random.split(jax.random.key(0))
        c, grads, infos = scan_estimator(est, params, states, xs, ys, chunk_key)
        expected = jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)
        np.testing.assert_allclose(losses, infos.loss, rtol=1e-12)
        np.testing.assert_allclose(flat(total), flat(expected), rtol=1e-10, atol=1e-14)
        assert float(jnp.abs(flat(total)).max()) > 0
        for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(c)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_the_optimizer_alone_is_adam_leaf_by_leaf_and_flat():
    """``adam`` and ``adam_flat`` move the params as optax's Adam does, from the same
    fixed gradient, one update a step of the chunk."""
    _, params, _, xs, ys = _streams()
    steps = xs.shape[0]
    opt = optax.adam(1e-3)
    p, state = params, opt.init(params)
    grads = jax.tree.map(lambda a: jnp.full_like(a, 1e-3), params)
    for _ in range(steps):
        updates, state = opt.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    for is_flat in (False, True):
        run, init = benchmark.optimizer_chunk(params, flat=is_flat)
        (moved, _), _ = run(init(), xs, ys)
        np.testing.assert_allclose(flat(moved), flat(p), rtol=1e-12)
    assert float(jnp.abs(flat(p) - flat(params)).max()) > 1e-3
