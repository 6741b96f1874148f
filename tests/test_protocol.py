"""Every estimator in the registry keeps the protocol (docs/protocol.md).

One conformance suite, in the spirit of optax's tests of its transforms: the cases are
drawn from ``uorojax.registry.ESTIMATORS`` (with a truncation of 3, two samples and rank 2
where an estimator reads them), so an estimator added to the registry is checked here without
writing a test. Core checks run with and without ``jax.jit`` (``chex.variants``).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized
from helpers import flat, regression_stream, tiny_rnn

import uorojax
from uorojax.estimators import registry

LOSS = uorojax.squared_error


# A variant case for every estimator that takes one of these hyperparameters.
VARIANTS = {"truncation": 3, "num_samples": 2, "rank": 2}


def _cases():
    cases = []
    for name in registry.ESTIMATORS:
        cases.append((name, name, {}))
        for h in registry.hyperparameters(name):
            if h.name in VARIANTS:
                value = VARIANTS[h.name]
                cases.append((f"{name}_{h.name}{value}", name, {h.name: value}))
    return cases


CASES = _cases()


def _build(algorithm, options, num_streams=None):
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(12)
    est = registry.build_estimator(
        algorithm,
        model.apply,
        LOSS,
        num_streams=num_streams,
        structure=model.structure,
        example_x=xs[0],
        example_y=ys[0],
        **options,
    )
    return est, model, params, h0, xs, ys


def _scan(est, params, carry, xs, ys, keys):
    def body(carry, xyk):
        grads, carry, info = est.step(params, carry, *xyk)
        return carry, (grads, info)

    return jax.lax.scan(body, carry, (xs, ys, keys))


def _close(a, b, rtol=1e-10):
    chex.assert_trees_all_close(a, b, rtol=rtol, atol=1e-13)


class ProtocolTest(chex.TestCase):
    def test_every_registry_entry_is_covered(self):
        covered = {algorithm for _, algorithm, _ in CASES}
        self.assertEqual(covered, set(registry.ESTIMATORS))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_init_and_step_contract(self, algorithm, options):
        est, _, params, h0, xs, ys = _build(algorithm, options)
        self.assertIsInstance(est, uorojax.Estimator)
        self.assertGreaterEqual(est.window, 1)
        carry = est.init_state(params, h0)  # two arguments, nothing else
        step = self.variant(est.step)
        grads, carry, info = step(params, carry, xs[0], ys[0], jax.random.key(0))
        chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
        self.assertIsInstance(info, uorojax.StepInfo)
        self.assertIsInstance(info.ready, jax.Array)
        self.assertEqual(info.ready.dtype, jnp.bool_)
        chex.assert_shape(info.ready, ())
        chex.assert_shape(info.loss, ())
        self.assertEqual(bool(info.ready), est.window == 1)
        chex.assert_tree_all_finite((grads, carry))

    @parameterized.named_parameters(*CASES)
    def test_a_complex_state_is_refused_by_name(self, algorithm, options):
        est, _, params, h0, _, _ = _build(algorithm, options)
        with self.assertRaisesRegex(uorojax.ConfigError, r"state.* is complex"):
            est.init_state(params, h0.astype(jnp.complex128))

    @parameterized.named_parameters(*CASES)
    def test_ready_on_the_last_step_of_every_window(self, algorithm, options):
        est, _, params, h0, xs, ys = _build(algorithm, options)
        keys = jax.random.split(jax.random.key(1), 12)
        _, (grads, info) = jax.jit(_scan, static_argnums=0)(
            est, params, est.init_state(params, h0), xs, ys, keys
        )
        expected = [(t + 1) % est.window == 0 for t in range(12)]
        self.assertEqual(np.asarray(info.ready).tolist(), expected)
        for t in range(12):
            norm = float(jnp.linalg.norm(flat(jax.tree.map(lambda g: g[t], grads))))
            self.assertEqual(norm > 0, expected[t], t)

    @parameterized.named_parameters(*CASES)
    def test_steps_are_pure_and_seeded(self, algorithm, options):
        est, _, params, h0, xs, ys = _build(algorithm, options)
        keys = jax.random.split(jax.random.key(2), 12)
        run = jax.jit(_scan, static_argnums=0)
        first = run(est, params, est.init_state(params, h0), xs, ys, keys)
        again = run(est, params, est.init_state(params, h0), xs, ys, keys)
        chex.assert_trees_all_equal(first, again)

    @parameterized.named_parameters(*CASES)
    def test_whole_window_path_equals_its_steps(self, algorithm, options):
        est, _, params, h0, xs, ys = _build(algorithm, options)
        window = est.window
        keys = jax.random.split(jax.random.key(3), 2 * window)
        carry_steps, (grads, info) = _scan(
            est, params, est.init_state(params, h0), xs[: 2 * window], ys[: 2 * window], keys
        )
        carry = est.init_state(params, h0)
        window_fn = jax.jit(lambda *a: uorojax.run_window(est, *a))
        for w in range(2):
            sl = slice(w * window, (w + 1) * window)
            g, carry, info_w = window_fn(params, carry, xs[sl], ys[sl], keys[sl])
            _close(g, jax.tree.map(lambda a: a[(w + 1) * window - 1], grads))
            _close(info_w.loss, info.loss[sl])
            self.assertEqual(np.asarray(info_w.ready).tolist(), np.asarray(info.ready[sl]).tolist())
        _close(carry, carry_steps)

    @parameterized.named_parameters(*CASES)
    def test_per_stream_equals_a_loop_over_streams(self, algorithm, options):
        est, _, params, _, _, _ = _build(algorithm, options)
        batched, *_ = _build(algorithm, options, num_streams=3)
        num_streams, length = 3, 2 * est.window
        states0 = 0.1 * jnp.arange(num_streams * 3, dtype=jnp.float64).reshape(num_streams, 3)
        xs, ys = regression_stream(length * num_streams)
        xs, ys = xs.reshape(length, num_streams, 2), ys.reshape(length, num_streams, 2)
        keys = jax.random.split(jax.random.key(4), length)
        carry_b, (grads_b, info_b) = jax.jit(_scan, static_argnums=0)(
            batched, params, batched.init_state(params, states0), xs, ys, keys
        )
        grads_loop, carries = [], []
        for b in range(num_streams):
            stream_keys = jax.vmap(lambda k: jax.random.split(k, num_streams)[b])(keys)
            carry, (grads, info) = _scan(
                est, params, est.init_state(params, states0[b]), xs[:, b], ys[:, b], stream_keys
            )
            _close(info.loss, info_b.loss[:, b])
            grads_loop.append(grads)
            carries.append(carry)
        _close(jax.tree.map(lambda *g: sum(g) / num_streams, *grads_loop), grads_b)
        _close(jax.tree.map(lambda *c: jnp.stack(c), *carries), carry_b)
        # Its whole-window path (fused where the estimator has one) agrees too.
        if batched.window > 1:
            carry = batched.init_state(params, states0)
            g, _, _ = uorojax.run_window(
                batched, params, carry, xs[: est.window], ys[: est.window], keys[: est.window]
            )
            _close(g, jax.tree.map(lambda a: a[est.window - 1], grads_b))

    @parameterized.named_parameters(*CASES)
    def test_per_stream_refuses_zero_streams(self, algorithm, options):
        """A batch of zero streams is refused by name, at init and at a step (the step
        returned a gradient of nothing)."""
        est, _, params, h0, xs, ys = _build(algorithm, options, num_streams=2)
        no_streams = lambda tree: jax.tree.map(lambda a: a[:0], tree)  # noqa: E731
        two = jax.tree.map(lambda a: jnp.stack([a, a]), h0)
        with self.assertRaisesRegex(uorojax.ConfigError, "zero streams"):
            est.init_state(params, no_streams(two))
        carry = no_streams(est.init_state(params, two))
        with self.assertRaisesRegex(uorojax.ConfigError, "zero streams"):
            est.step(params, carry, xs[:0], ys[:0], jax.random.key(0))

    @parameterized.named_parameters(*CASES)
    def test_trainer_run_equals_trainer_steps_and_optax(self, algorithm, options):
        est, _, params, h0, xs, ys = _build(algorithm, options)
        length = 4 * est.window if est.window > 1 else 8
        # Adam, not SGD: a zero gradient inside a window would still move its params, and
        # its count says how many updates were made: one per window.
        num_windows = length // est.window
        trainer = uorojax.make_trainer(est, optax.adam(0.05))
        ts0 = trainer.init(params, h0, jax.random.key(5))
        ts_run, metrics = trainer.run(ts0, xs[:length], ys[:length])
        ts = ts0
        for t in range(length):
            ts, m = trainer.step(ts, xs[t], ys[t])
            np.testing.assert_allclose(m["loss"], metrics["loss"][t], rtol=1e-10)
            self.assertEqual(int(ts.pending), (t + 1) % est.window)
            if est.window > 1 and (t + 1) % est.window:
                with self.assertRaisesRegex(ValueError, "window boundary"):
                    trainer.run(ts, xs[: est.window], ys[: est.window])
        _close(ts.params, ts_run.params)
        self.assertEqual(int(ts.opt_state[0].count), num_windows)
        self.assertEqual(int(ts_run.opt_state[0].count), num_windows)
        self.assertGreater(float(jnp.abs(flat(ts_run.params) - flat(params)).max()), 0.0)
        # The same updates from as_optax with the optimizer inside, stepped by hand with
        # the trainer's keys: a windowed estimator's zeros are not optimizer steps.
        tx = uorojax.as_optax(est, h0, optimizer=optax.adam(0.05))
        p, opt_state = params, tx.init(params)
        update = jax.jit(lambda p, s, x, y, k: tx.update(None, s, p, x=x, y=y, key=k))
        for t in range(length):
            updates, opt_state = update(p, opt_state, xs[t], ys[t], uorojax.step_key(ts0.key, t))
            p = optax.apply_updates(p, updates)
            np.testing.assert_allclose(opt_state.loss, metrics["loss"][t], rtol=1e-10)
            self.assertEqual(bool(opt_state.ready), (t + 1) % est.window == 0)
        self.assertEqual(int(opt_state.opt_state[0].count), num_windows)
        _close(p, ts_run.params)

    def test_fast_paths_are_fields_that_survive_replace(self):
        est, _, params, h0, xs, ys = _build("tbptt", {"truncation": 3})
        self.assertIsNotNone(est.window_step)
        self.assertIs(uorojax.per_stream(est), est.per_stream)
        traced = []

        def wrapper(*args):
            traced.append(True)
            return est.step(*args)

        self.assertIs(est._replace(step=wrapper).window_step, est.window_step)
        keys = jax.random.split(jax.random.key(6), 3)
        window = (params, est.init_state(params, h0), xs[:3], ys[:3], keys)
        fast = uorojax.run_window(est, *window)
        self.assertFalse(traced)
        generic = uorojax.run_window(est._replace(step=wrapper, window_step=None), *window)
        self.assertTrue(traced)  # without the field, the protocol's scan runs the wrapper
        _close(fast, generic)
