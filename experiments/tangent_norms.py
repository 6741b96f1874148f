"""Tangent-pair norms over a long UORO run (anbn(1,32), GRU-64, float32, Adam + paper schedule).

    python experiments/tangent_norms.py --steps 1000000 [--out docs/results/tangent_norms.csv]

Samples ‖s̃‖, ‖θ̃‖ and the largest |entry| of the pair every ``--every`` steps and prints
their range: the ρ rescaling keeps the pair balanced and bounded, with no float32 overflow.
"""

import argparse
import csv
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import uorojax
from uorojax import tasks


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    stream = tasks.AnBn(1, 32, seed=args.seed)
    model = uorojax.linen_model("gru", 64, stream.vocab_size, vocab_size=stream.vocab_size)
    est = uorojax.uoro(model.apply, uorojax.softmax_cross_entropy)
    trainer = uorojax.make_trainer(
        est, optax.adam(uorojax.paper_schedule(1e-3, 1.5e-2)), cross_entropy=True
    )
    params, state0 = model.init(jax.random.key(args.seed), jnp.zeros((), jnp.int32))
    ts = trainer.init(params, state0, jax.random.key(args.seed), *stream.example())
    rows, start = [], time.time()
    while int(ts.step) < args.steps:
        xs, ys = (jnp.asarray(a) for a in stream.next_chunk(args.every))
        ts, metrics = trainer.run(ts, xs, ys)
        pair = (ts.carry.s_tilde, ts.carry.theta_tilde)
        rows.append(
            {
                "step": int(ts.step),
                "s_tilde_norm": float(uorojax.tree_norm(ts.carry.s_tilde)),
                "theta_tilde_norm": float(uorojax.tree_norm(ts.carry.theta_tilde)),
                "max_abs_entry": float(max(jnp.max(jnp.abs(a)) for a in jax.tree.leaves(pair))),
                "bits_per_char": float(metrics["bits_per_char"].mean()),
            }
        )
    elapsed = time.time() - start
    for name in ("s_tilde_norm", "theta_tilde_norm", "max_abs_entry"):
        v = np.array([r[name] for r in rows])
        print(
            f"{name}: min {v.min():.4g} median {np.median(v):.4g} max {v.max():.4g} final {v[-1]:.4g}"
        )
    print(
        f"all finite: {all(np.isfinite(list(r.values())).all() for r in rows)}; "
        f"skipped steps: {int(ts.num_skipped)}; final bits/char {rows[-1]['bits_per_char']:.3f}; "
        f"{args.steps / elapsed:,.0f} steps/s over {elapsed:.0f}s"
    )
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
