"""Float32 checks run by tests/test_float32.py in a process without x64."""


def main():
    """float32 in, float32 out for every estimator through the trainer, and exact RTRL
    against backprop through the sequence within float32 rounding."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import uorojax
    from uorojax.estimators import registry

    assert not jax.config.jax_enable_x64
    jax.config.update("jax_default_matmul_precision", "highest")
    model = uorojax.linen_model("gru", 4, 3, vocab_size=3)
    params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    xs = jnp.array([0, 2, 1, 1, 0, 2, 2, 1], jnp.int32)
    ys = jnp.roll(xs, -1)
    loss = uorojax.softmax_cross_entropy
    for algorithm in registry.ESTIMATORS:
        if algorithm in ("kf_rtrl", "ok"):
            continue  # needs a dense Simple cell; covered by the protocol subset
        est = registry.build_estimator(
            algorithm, model.apply, loss,
            structure=model.structure, example_x=xs[0], example_y=ys[0],
        )  # fmt: skip
        trainer = uorojax.make_trainer(est, optax.sgd(0.1))
        ts, metrics = trainer.run(trainer.init(params, state0, jax.random.key(1)), xs, ys)
        for leaf in jax.tree.leaves((ts.params, ts.carry, metrics["loss"])):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32, (algorithm, leaf.dtype)
        assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    # Exact RTRL against backprop through the sequence, in float32.
    rtrl = uorojax.rtrl(model.apply, loss)
    carry = rtrl.init_state(params, state0)
    for t in range(4):
        grads, carry, _ = rtrl.step(params, carry, xs[t], ys[t], jax.random.key(0))

    def loss_3(p):
        return uorojax.forward_sequence(model.apply, loss, p, state0, xs[:4], ys[:4])[1][3]

    exact = jax.grad(loss_3)(params)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(exact)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    print("float32 ok")


if __name__ == "__main__":
    main()
