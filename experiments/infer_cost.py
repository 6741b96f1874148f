"""What ``uorojax.models.inference.infer`` costs: time and memory to read a model's structure.

    python experiments/infer_cost.py

Each model is described by ``jax.ShapeDtypeStruct`` leaves only (``jax.eval_shape`` of
its init): nothing is allocated or computed on arrays of the model's size, and the
analysis is symbolic, so its time should not grow with the width. Per model: the first
call (tracing the model included), then the best of ``repeats`` calls, each with the
relation cache emptied (``uorojax.models.inference.rules.transform``), so they redo the whole
analysis. Memory: the peak of Python allocations during one call (``tracemalloc``) and
the process's peak resident memory (``resource``) at the end.
"""

from __future__ import annotations

import resource
import time
import tracemalloc

import jax
import jax.numpy as jnp

import uorojax
from uorojax.models.inference import infer
from uorojax.models.inference.rules import transform

INPUTS = 64


def linen(cell, hidden, layers=1):
    model = uorojax.linen_model(cell, hidden, 10, num_layers=layers)
    params, state = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(INPUTS)))
    return model.apply, params, state, jax.ShapeDtypeStruct((INPUTS,), jnp.float32)


def lru(layers, d_model, d_state):
    model = uorojax.lru_stack(layers, d_model, d_state, 10)
    params, state = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(d_model)))
    return model.apply, params, state, jax.ShapeDtypeStruct((d_model,), jnp.float32)


MODELS = {
    "GRU-8, 64 inputs": lambda: linen("gru", 8),
    "GRU-256, 64 inputs": lambda: linen("gru", 256),
    "GRU-1024, 64 inputs": lambda: linen("gru", 1024),
    "LSTM-1024 x 2 layers, 64 inputs": lambda: linen("lstm", 1024, 2),
    "LRU stack, 4 layers, d_model 256, d_state 256": lambda: lru(4, 256, 256),
}


def measure(make, repeats=3):
    args = make()
    transform.cache_clear()
    start = time.perf_counter()
    infer(*args)
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        transform.cache_clear()
        start = time.perf_counter()
        program = infer(*args)
        best = min(best, time.perf_counter() - start)
    transform.cache_clear()
    tracemalloc.start()
    infer(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return first, best, peak, program


def main():
    measure(lambda: linen("simple", 2))  # JAX's own first-use costs, not reported
    print(f"{'model':48s} {'first (s)':>9s} {'best (s)':>9s} {'peak alloc':>11s} layers uses")
    for name, make in MODELS.items():
        first, best, peak, program = measure(make)
        layers, uses = len(program.layers), len(program.dense_uses)
        print(f"{name:48s} {first:9.3f} {best:9.3f} {peak / 2**20:7.1f} MiB {layers:6d} {uses:4d}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"process peak resident memory (JAX and the models included): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
