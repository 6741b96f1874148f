"""What ``uorojax.verify_structure`` costs: checking a hand-written structure against the
model before any gradient.

    python experiments/verify_cost.py

Per model (float32, 64 inputs, the built-in hand-written structure): the first check in a
fresh process (tracing, inference and compiling the model's forward pass and one pullback
included), then a second check of the same model (the compiled programs reused), and the
time of inference alone (``uorojax.infer_structure``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import uorojax

INPUTS = 64


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    print(f"{'model':40s} {'first (s)':>10s} {'again (s)':>10s} {'infer (s)':>10s}")
    for cell, hidden, layers in (("gru", 256, 1), ("lstm", 256, 2), ("gru", 1024, 1)):
        model = uorojax.linen_model(cell, hidden, 10, num_layers=layers)
        x = jnp.zeros(INPUTS, jnp.float32)
        params, state = model.init(jax.random.key(0), x)
        jax.block_until_ready(params)

        def check(model=model, params=params, state=state, x=x):
            uorojax.verify_structure(model.apply, model.structure, params, state, x)

        first, again = seconds(check), seconds(check)
        infer = seconds(lambda: uorojax.infer_structure(model.apply, params, state, x))
        name = f"{cell.upper()}-{hidden}" + (f" x {layers} layers" if layers > 1 else "")
        print(f"{name + f', {INPUTS} inputs':40s} {first:10.2f} {again:10.2f} {infer:10.3f}")


if __name__ == "__main__":
    main()
