"""Optional peer benchmark: braintrace's UORO on the GRU model of the cost benchmark.

braintrace needs Python >= 3.11 and its own JAX, so it runs in a separate environment:

    python3.12 -m venv /tmp/btenv && /tmp/btenv/bin/pip install braintrace
    /tmp/btenv/bin/python experiments/peer_braintrace.py --steps 32

and uorojax's side, on the same model, in the project's environment:

    .venv/bin/python experiments/benchmark.py --config.cell=gru \
        --config.methods="('forward','uoro_shared','uoro_per_stream')"

Model: GRU with 128 units, one-hot input over 64 symbols, linear readout, next-symbol
cross-entropy, 32 streams. Timed: ``learner.etrace_grad`` over a chunk under
``brainstate.transform.jit``, warm-up excluded, best of 3, ``jax.block_until_ready``.
This script imports nothing from uorojax.
"""

import argparse
import time

import brainstate
import braintrace
import jax
import jax.numpy as jnp
import numpy as np


class GRUNet(brainstate.nn.Module):
    def __init__(self, vocab, hidden):
        super().__init__()
        self.cell = braintrace.nn.GRUCell(vocab, hidden)
        self.out = braintrace.nn.Linear(hidden, vocab)

    def update(self, x):
        return self.out(self.cell(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    xs = jax.nn.one_hot(rng.integers(0, args.vocab, (args.steps, args.streams)), args.vocab)
    ys = jnp.asarray(rng.integers(0, args.vocab, (args.steps, args.streams)))
    tokens = args.steps * args.streams
    print(
        f"braintrace {braintrace.__version__}, jax {jax.__version__}, backend {jax.default_backend()}"
    )
    for mode in ("batched", "vmap"):
        try:
            learner = braintrace.compile(
                GRUNet(args.vocab, args.hidden),
                "uoro",
                xs[0],
                batch_size=args.streams,
                vmap=(mode == "vmap"),
            )

            def step_loss(x, y):
                logp = jax.nn.log_softmax(learner(x))
                return jnp.mean(-jnp.take_along_axis(logp, y[..., None], -1))

            run = brainstate.transform.jit(
                lambda xs, ys: learner.etrace_grad(xs, ys, step_fn=step_loss, return_value=True)
            )
            jax.block_until_ready(run(xs, ys))
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                jax.block_until_ready(run(xs, ys))
                best = min(best, time.perf_counter() - start)
            print(f"{mode}: {best / tokens * 1e6:.1f} us/token ({tokens / best:,.0f} tokens/s)")
        except Exception as err:  # noqa: BLE001 - report the peer's failure, keep going
            print(f"{mode}: failed: {type(err).__name__}: {str(err).splitlines()[0]}")


if __name__ == "__main__":
    main()
