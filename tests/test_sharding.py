"""B streams sharded over 4 devices give the same results as one device.

With 4 or more real devices (GPUs) the test uses them; otherwise it runs in a subprocess
on 4 simulated CPU devices, so it holds on a laptop, in CI and on a one-GPU machine.
"""

import os
import subprocess
import sys
import textwrap

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    import uorojax
    devices = jax.devices()[:4]
    assert len(devices) == 4, jax.devices()
    model = uorojax.tanh_rnn(3, 2, 2, dtype=jnp.float64)
    params, _ = model.init(jax.random.key(0))
    B, T = 8, 24
    xs = jax.random.normal(jax.random.key(1), (T, B, 2))
    ys = jnp.tanh(xs @ jnp.array([[1.0, 0.5], [-0.5, 1.0]]))
    states0 = 0.1 * jnp.arange(B * 3, dtype=jnp.float64).reshape(B, 3)
    loss = uorojax.squared_error
    mesh = uorojax.stream_mesh(devices)
    kw = dict(example_x=xs[0, 0], example_y=ys[0, 0])
    cases = {
        "per_stream_uoro": uorojax.per_stream(uorojax.uoro(model.apply, loss)),
        "shared_uoro_k2": uorojax.uoro(*uorojax.as_one_system(model.apply, loss), num_samples=2),
        "per_stream_tbptt": uorojax.per_stream(uorojax.tbptt(model.apply, loss, 4, **kw)),
        "per_stream_truncated_uoro": uorojax.per_stream(uorojax.uoro(model.apply, loss, truncation=4, **kw)),
        "per_stream_snap1": uorojax.per_stream(uorojax.estimators.snap.snap1(model.apply, loss, structure=model.structure)),
        "shared_rtrl": uorojax.rtrl(*uorojax.as_one_system(model.apply, loss)),
    }
    for name, est in cases.items():
        trainer = uorojax.make_trainer(est, optax.adam(1e-2))
        ts0 = trainer.init(params, states0, jax.random.key(2))
        single, m1 = trainer.run(ts0, xs, ys)
        axes = uorojax.carry_stream_axes(est, params, states0)
        sharded_ts = uorojax.shard_train_state(ts0, mesh, axes)
        split = [a for a, ax in zip(jax.tree.leaves(sharded_ts.carry), jax.tree.leaves(axes)) if ax is not None]
        assert split and all(len(a.sharding.device_set) == 4 for a in split), name
        assert all(a.addressable_shards[0].data.shape != a.shape for a in split), name
        sharded, m4 = trainer.run(sharded_ts, uorojax.shard_chunk(xs, mesh), uorojax.shard_chunk(ys, mesh))
        out_split = [a for a, ax in zip(jax.tree.leaves(sharded.carry), jax.tree.leaves(axes)) if ax is not None]
        assert all(len(a.sharding.device_set) == 4 for a in out_split), name
        for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        for a, b in zip(jax.tree.leaves(single.carry), jax.tree.leaves(sharded.carry)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-9)
        print(name, "ok", flush=True)
    """
)
CASES = (
    "per_stream_uoro",
    "shared_uoro_k2",
    "per_stream_tbptt",
    "per_stream_truncated_uoro",
    "per_stream_snap1",
    "shared_rtrl",
)


def test_sharded_streams_match_one_device(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    if jax.device_count() < 4:  # simulate 4 CPU devices, hiding any accelerator
        flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", XLA_FLAGS=flags.strip())
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in CASES:
        assert f"{name} ok" in result.stdout
