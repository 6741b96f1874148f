"""Cost per token of the estimators on one model, measured in one process.

    python experiments/benchmark.py [--config configs/benchmark.py] [--out FILE.md]

Model: LSTM (``--config.cell=gru`` for a GRU) with one-hot input over 64 symbols and a dense readout, next-symbol
cross-entropy, Adam. Every method runs the same jitted online trainer
(``uorojax.make_trainer``) over chunks of a random stream, parameters updated after every
step (TBPTT: after every window). Warm-up (compilation) is excluded, each timing is the
best of ``repeats`` runs, and ``jax.block_until_ready`` runs before every timer stops.

Printed per method: microseconds per token, tokens per second, ratio to a forward-only
scan and to TBPTT(16), the compiled program's memory (XLA's memory analysis: arguments +
temporaries + outputs) and, on GPU, the device's peak bytes in use. A second table shows
memory against TBPTT's truncation beside UORO's, which does not depend on any horizon.
"""

from __future__ import annotations

import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from jax.flatten_util import ravel_pytree
from ml_collections import config_flags

import uorojax

_CONFIG = config_flags.DEFINE_config_file("config", "configs/benchmark.py", "Benchmark config.")
_OUT = flags.DEFINE_string("out", None, "Also write the tables (markdown) to this file.")
_SIZES = flags.DEFINE_string("sizes", None, "Override sizes, e.g. '128x32,256x64'.")


def build_model(hidden, vocab, cell="lstm"):
    model = uorojax.linen_model(cell, hidden, vocab, vocab_size=vocab)
    params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    return model, params, state0


def make_estimator(method, model, loss):
    if method.startswith("tbptt"):
        return uorojax.per_stream(uorojax.tbptt(model.apply, loss, int(method[5:])))
    if method == "uoro_per_stream":
        return uorojax.per_stream(uorojax.uoro(model.apply, loss))
    if method.startswith("uoro_shared"):
        k = int(method.split("_k")[1]) if "_k" in method else 1
        return uorojax.uoro(*uorojax.as_one_system(model.apply, loss), num_samples=k)
    if method == "rtrl_shared":
        return uorojax.rtrl(*uorojax.as_one_system(model.apply, loss))
    raise ValueError(f"unknown method {method!r}")


def forward_chunk(model, loss):
    """Forward-only scan of the same model over a chunk (no gradients, no update)."""

    @jax.jit
    def run(params, states, xs, ys):
        def body(s, xy):
            s, out = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, s, xy[0])
            return s, jnp.mean(jax.vmap(loss)(out, xy[1]))

        return jax.lax.scan(body, states, (xs, ys))

    return run


def memory_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def time_method(method, hidden, streams, cfg):
    """Returns (seconds per chunk, compiled memory bytes, peak device bytes or None)."""
    model, params, state0 = build_model(hidden, cfg.vocab, cfg.cell)
    loss = uorojax.softmax_cross_entropy
    states = jax.tree.map(lambda a: jnp.broadcast_to(a, (streams, *a.shape)), state0)
    rng = np.random.default_rng(cfg.seed)
    xs = jnp.asarray(rng.integers(0, cfg.vocab, (cfg.chunk, streams)), jnp.int32)
    ys = jnp.asarray(rng.integers(0, cfg.vocab, (cfg.chunk, streams)), jnp.int32)
    if method == "forward":
        run = forward_chunk(model, loss)
        args = (params, states, xs, ys)
        call = lambda: run(*args)  # noqa: E731
    else:
        trainer = uorojax.make_trainer(make_estimator(method, model, loss), optax.adam(1e-3))
        ts = trainer.init(params, states, jax.random.key(0), xs[0], ys[0])
        run, args = trainer.run_chunk, (ts, xs, ys)
        holder = {"ts": ts}

        def call():
            holder["ts"], metrics = run(holder["ts"], xs, ys)
            return holder["ts"], metrics

    compiled = run.lower(*args).compile()
    mem = memory_bytes(compiled)
    jax.block_until_ready(call())  # warm-up
    best = float("inf")
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        for _ in range(cfg.chunks_per_run):
            out = call()
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / cfg.chunks_per_run)
    peak = None
    stats = jax.devices()[0].memory_stats() if jax.default_backend() == "gpu" else None
    if stats:
        peak = stats.get("peak_bytes_in_use")
    return best, mem, peak


def rtrl_fits(hidden, streams, cfg) -> bool:
    model, params, state0 = build_model(hidden, cfg.vocab, cfg.cell)
    state_size = ravel_pytree(state0)[0].size * streams
    return state_size * ravel_pytree(params)[0].size * 4 <= cfg.rtrl_max_bytes


def fmt_bytes(n):
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def machine() -> str:
    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    import os

    return (
        f"backend {jax.default_backend()} ({dev.device_kind}), {cpu}, {os.cpu_count()} CPU cores; "
        f"python {sys.version.split()[0]}, jax {jax.__version__}, optax {optax.__version__}"
    )


def bench_size(hidden, streams, cfg, lines):
    tokens = cfg.chunk * streams
    results = {}
    for method in cfg.methods:
        if method == "rtrl_shared" and not rtrl_fits(hidden, streams, cfg):
            print(f"  {method}: skipped (|S|·|Θ| over {fmt_bytes(cfg.rtrl_max_bytes)})", flush=True)
            continue
        seconds, mem, peak = time_method(method, hidden, streams, cfg)
        results[method] = (seconds, mem, peak)
        print(f"  {method}: {seconds / tokens * 1e6:.3f} us/token", flush=True)
    fwd = results["forward"][0]
    ref = results.get("tbptt16", (None,))[0]
    lines += [
        f"### {cfg.cell.upper()} hidden {hidden}, {streams} streams, chunk {cfg.chunk}",
        "",
        "| method | us/token | tokens/s | x forward | x TBPTT(16) | compiled memory | peak device memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, (seconds, mem, peak) in results.items():
        us = seconds / tokens * 1e6
        lines.append(
            f"| {method} | {us:.3f} | {tokens / seconds:,.0f} | {seconds / fwd:.2f} | "
            f"{seconds / ref:.2f} | {fmt_bytes(mem)} | {fmt_bytes(peak)} |"
            if ref
            else f"| {method} | {us:.3f} | {tokens / seconds:,.0f} | {seconds / fwd:.2f} | n/a | "
            f"{fmt_bytes(mem)} | {fmt_bytes(peak)} |"
        )
    lines.append("")
    return results


def memory_vs_horizon(hidden, streams, cfg, lines):
    model, params, state0 = build_model(hidden, cfg.vocab, cfg.cell)
    loss = uorojax.softmax_cross_entropy
    states = jax.tree.map(lambda a: jnp.broadcast_to(a, (streams, *a.shape)), state0)
    chunk = max(cfg.memory_truncations)
    xs = jnp.zeros((chunk, streams), jnp.int32)
    lines += [
        f"### Compiled memory against horizon ({cfg.cell.upper()} {hidden}, {streams} streams, chunk {chunk})",
        "",
        "| method | compiled memory |",
        "|---|---|",
    ]
    for method in [f"tbptt{k}" for k in cfg.memory_truncations] + [
        "uoro_shared",
        "uoro_per_stream",
    ]:
        trainer = uorojax.make_trainer(make_estimator(method, model, loss), optax.adam(1e-3))
        ts = trainer.init(params, states, jax.random.key(0), xs[0], xs[0])
        mem = memory_bytes(trainer.run_chunk.lower(ts, xs, xs).compile())
        lines.append(f"| {method} | {fmt_bytes(mem)} |")
        print(f"  memory {method}: {fmt_bytes(mem)}", flush=True)
    lines.append("")


def main(argv):
    del argv
    cfg = _CONFIG.value
    sizes = cfg.gpu_sizes if jax.default_backend() == "gpu" else cfg.cpu_sizes
    if _SIZES.value:
        sizes = [tuple(int(v) for v in s.split("x")) for s in _SIZES.value.split(",")]
    lines = ["## Benchmark", "", f"Machine: {machine()}", ""]
    print(lines[2], flush=True)
    for hidden, streams in sizes:
        print(f"{cfg.cell.upper()} {hidden} x {streams} streams", flush=True)
        bench_size(hidden, streams, cfg, lines)
    hidden, streams = sizes[0]
    memory_vs_horizon(hidden, streams, cfg, lines)
    text = "\n".join(lines)
    print(text)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
