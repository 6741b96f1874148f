"""Cost per token of the estimators on one model, measured in one process.

    python experiments/benchmark.py [--config configs/benchmark.py] [--out FILE.md]
    python experiments/benchmark.py --config.analysis=True   # + kernels, FLOPs, bytes

Model: an LSTM (``--config.cells="('gru',)"`` or any other one-layer model of the model
table, ``uorojax.models.registry.MODELS``: the linen cells, ``"nnx_gru"`` and
``"eqx_gru"`` for the GRU cells of ``flax.nnx`` and Equinox, whose gates are fused in one
kernel, ``"jax_gru"``; or ``"lru_stack"``, 4 layers) with one-hot input over 64 symbols
and a dense readout, next-symbol cross-entropy, Adam. Every method is a registry name with its hyperparameters and
batch mode (``METHODS``), built by ``uorojax.registry.build_estimator`` and run by the same
jitted online trainer (``uorojax.make_trainer``, train state donated) over chunks of a
random stream, the parameters updated after every step (windowed methods: after every
window). A method the cell does not support (KF-RTRL needs a dense Simple cell) is
reported as such.

With ``analysis``, each method's compiled chunk is also read: the kernels one step
launches (fusions, library calls and copies in the scan body, nested loops counted by
their trip counts) and XLA's cost analysis (FLOPs and bytes accessed per step) on the
backend at hand: the proxies for accelerator time on a machine without one.

Two kinds of row split a method's cost into its parts, in the same process: a name
``grads_<method>`` runs the estimator's rule alone, as braintrace's ``etrace_grad`` runs
its learners (``estimator.step`` in a ``lax.scan``, the params fixed over the chunk and
the gradients summed, no optimizer, no guard), and ``adam`` / ``adam_flat`` run the
optimizer alone (Adam updates from a fixed gradient, leaf by leaf or on the raveled
params), so a trainer row is read as rule + optimizer + guard.

A method name ending in ``_per_leaf`` runs the trainer with ``flatten=False``: the
optimizer, the guard's tests and the gradient norm leaf by leaf, as before they ran on
one flat vector, in the same process as the default. A name ending in ``_inferred``
builds the structured estimator with ``structure=None``: the structure inferred from the
model's step, where the default passes the model's own (written by hand for the linen
cells), so the two compiled programs can be compared (``--config.analysis=True``).

Warm-up (compilation) is excluded. The methods take turns, one run of
``chunks_per_run`` chunks each per round, for ``repeats`` rounds; each method's best
round counts, and ``jax.block_until_ready`` runs before every timer stops.

Printed per method: microseconds per token, tokens per second, ratio to a forward-only
scan and to TBPTT(16), and the compiled program's memory (XLA's memory analysis:
arguments + temporaries + outputs - aliased); per size, the process's peak device memory
(GPU) or resident memory (CPU). A second table shows memory against TBPTT's truncation
beside UORO's, which does not depend on any horizon.
"""

from __future__ import annotations

import functools
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
from uorojax.analysis import hlo
from uorojax.estimators import registry
from uorojax.models import registry as model_registry

METHODS = {  # name: (registry method "algorithm:hyperparameter=value,...", batch mode)
    "tbptt1": ("tbptt:truncation=1", "per_stream"),
    "tbptt16": ("tbptt:truncation=16", "per_stream"),
    "uoro_shared": ("uoro", "shared"),
    "uoro_per_stream": ("uoro", "per_stream"),
    "uoro_shared_k4": ("uoro:num_samples=4", "shared"),
    "uoro_t16_shared": ("uoro:truncation=16", "shared"),
    "uoro_t16_per_stream": ("uoro:truncation=16", "per_stream"),
    "snap1": ("snap1", "per_stream"),
    "eprop": ("eprop", "per_stream"),
    "es_d_rtrl": ("es_d_rtrl", "per_stream"),
    "kf_rtrl": ("kf_rtrl", "per_stream"),
    **{f"ok{rank}": (f"ok:rank={rank}", "per_stream") for rank in (1, 2, 4, 8)},
    "rtrl_shared": ("rtrl", "shared"),
}

_CONFIG = config_flags.DEFINE_config_file("config", "configs/benchmark.py", "Benchmark config.")
_OUT = flags.DEFINE_string("out", None, "Also write the tables (markdown) to this file.")
_SIZES = flags.DEFINE_string("sizes", None, "Override sizes, e.g. '128x32,256x64'.")


def build_model(hidden, vocab, cell="lstm"):
    """The benchmark's model: a model of the table with ``hidden`` units and its other
    fields at their defaults (one layer, one-hot input, a dense readout), or
    ``lru_stack``, a deep LRU network (4 layers of width ``hidden`` and state
    ``hidden / 2``, the proportions of Zucchet et al.'s copy setting)."""
    if cell == "lru_stack":
        model = uorojax.lru_stack(4, hidden, hidden // 2, vocab, vocab_size=vocab)
    else:
        model = model_registry.build_model(cell, vocab, hidden_size=hidden)
    params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    return model, params, state0


def make_estimator(method, apply_fn, structure, loss, streams, example):
    """The registry's estimator for a benchmark method (see ``METHODS``; ``tbptt<T>``
    for any other truncation T)."""
    if method in METHODS:
        spec, batch_mode = METHODS[method]
    elif method.startswith("tbptt") and method[len("tbptt") :].isdigit():
        spec, batch_mode = f"tbptt:truncation={method[len('tbptt') :]}", "per_stream"
    else:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    algorithm, hyperparameters = registry.parse_method(spec)
    return registry.build_estimator(
        algorithm,
        apply_fn,
        loss,
        num_streams=streams,
        batch_mode=batch_mode,
        structure=structure,
        example_x=example,
        example_y=example,
        **hyperparameters,
    )


def forward_chunk(model, loss):
    """Forward-only scan of the same model over a chunk (no gradients, no update)."""

    @jax.jit
    def run(params, states, xs, ys):
        def body(s, xy):
            s, out = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, s, xy[0])
            return s, jnp.mean(jax.vmap(loss)(out, xy[1]))

        return jax.lax.scan(body, states, (xs, ys))

    return run


def handwritten_uoro_chunk(model, loss, params):
    """A straightforward shared-tangent UORO written from scratch, as a user would
    (Algorithm 1 with a state backward for δs, Adam, no guards), for comparison.

    The train state is ``(params, opt_state, states, s_tilde, theta_tilde, key)``.
    """
    apply_b, loss_b = uorojax.as_one_system(model.apply, loss)
    opt = optax.adam(1e-3)
    norm = uorojax.tree_norm
    eps = 1e-7

    def step(carry, xy):
        params, opt_state, state, s_tilde, theta_tilde, key = carry
        key, noise_key = jax.random.split(key)
        x, y = xy
        (new_state, out), vjp = jax.vjp(lambda p, s: apply_b(p, s, x), params, state)
        loss_value, d_out = jax.value_and_grad(lambda o: loss_b(o, y))(out)
        d_params, d_state = vjp((jax.tree.map(jnp.zeros_like, new_state), d_out))
        coeff = uorojax.tree_vdot(d_state, s_tilde)
        grads = jax.tree.map(lambda d, t: d + coeff * t, d_params, theta_tilde)
        nu = jax.tree.map(lambda a: jax.random.rademacher(noise_key, a.shape, a.dtype), new_state)
        s_prime = jax.jvp(lambda s: apply_b(params, s, x)[0], (state,), (s_tilde,))[1]
        theta_prime = vjp((nu, jnp.zeros_like(out)))[0]
        rho0 = jnp.sqrt(norm(theta_tilde) / (norm(s_prime) + eps)) + eps
        rho1 = jnp.sqrt(norm(theta_prime) / (norm(nu) + eps)) + eps
        s_tilde = jax.tree.map(lambda a, n: rho0 * a + rho1 * n, s_prime, nu)
        theta_tilde = jax.tree.map(lambda a, b: a / rho0 + b / rho1, theta_tilde, theta_prime)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, new_state, s_tilde, theta_tilde, key), loss_value

    @functools.partial(jax.jit, donate_argnums=0)
    def run(carry, xs, ys):
        return jax.lax.scan(step, carry, (xs, ys))

    def init(states):
        zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
        return (params, opt.init(params), states, zeros(states), zeros(params), jax.random.key(0))

    return run, init


def own_loop_chunk(estimator, params, states):
    """The loop a user writes around the public step: ``lax.scan`` over
    ``estimator.step`` with a key split per step and an Adam update (gated on
    ``info.ready`` with ``uorojax.training.when_ready`` for a windowed estimator), no
    guards. The train state is ``(params, opt_state, carry, key)``, donated."""
    opt = uorojax.training.when_ready(optax.adam(1e-3))

    def step(train_state, xy):
        params, opt_state, carry, key = train_state
        key, step_key = jax.random.split(key)
        grads, carry, info = estimator.step(params, carry, *xy, step_key)
        ready = True if estimator.window == 1 else info.ready
        updates, opt_state = opt.update(grads, opt_state, params, ready=ready)
        return (optax.apply_updates(params, updates), opt_state, carry, key), info.loss

    @functools.partial(jax.jit, donate_argnums=0)
    def run(train_state, xs, ys):
        return jax.lax.scan(step, train_state, (xs, ys))

    def init():
        carry = estimator.init_state(params, states)
        return uorojax.training.own_buffers((params, opt.init(params), carry, jax.random.key(0)))

    return run, init


def gradient_sum_chunk(estimator, params, states):
    """The estimator's rule alone, as braintrace's ``etrace_grad`` runs its learners: a
    ``lax.scan`` over ``estimator.step`` with the params fixed over the chunk and the
    gradients summed, no optimizer and no guard; the steps' keys are drawn at once, as the
    trainer draws them. The state is ``(grads, carry, key)``, donated."""

    def step(state, xyk):
        total, carry = state
        grads, carry, info = estimator.step(params, carry, *xyk)
        return (jax.tree.map(jnp.add, total, grads), carry), info.loss

    @functools.partial(jax.jit, donate_argnums=0)
    def run(state, xs, ys):
        *state, key = state
        key, chunk_key = jax.random.split(key)
        keys = jax.random.split(chunk_key, xs.shape[0])  # drawn at once, as the trainer does
        state, losses = jax.lax.scan(step, tuple(state), (xs, ys, keys))
        return (*state, key), losses

    def init():
        zeros = jax.tree.map(jnp.zeros_like, params)
        carry = jax.tree.map(jnp.copy, estimator.init_state(params, states))  # donated
        return uorojax.training.own_buffers((zeros, carry, jax.random.key(0)))

    return run, init


def optimizer_chunk(params, flat: bool):
    """The optimizer alone: Adam updates of the params from a fixed gradient, one a step,
    on the params tree leaf by leaf (``flat=False``, as ``optax`` in a user's loop) or on
    the raveled params (``flat=True``); no guard. The state is ``(params, opt_state)``,
    donated; ``run(state, xs, ys)`` takes a chunk's inputs for its length only."""
    opt = optax.adam(1e-3)
    ravel = (lambda t: ravel_pytree(t)[0]) if flat else (lambda t: t)
    grads = jax.tree.map(lambda a: jnp.full_like(a, 1e-3), ravel(params))

    def step(state, _):
        p, opt_state = state
        updates, opt_state = opt.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), ()

    @functools.partial(jax.jit, donate_argnums=0)
    def run(state, xs, ys):
        del ys
        return jax.lax.scan(step, state, xs)

    def init():
        p = jax.tree.map(jnp.copy, ravel(params))  # donated, not the caller's
        return uorojax.training.own_buffers((p, opt.init(p)))

    return run, init


def own_window_loop_chunk(estimator, params, states):
    """The loop a user writes around a windowed estimator's whole-window path: a
    ``lax.scan`` over the chunk's windows, one ``uorojax.run_window`` and one Adam update
    each (the pattern of docs/performance.md, "Windowed estimators in one's own loop"),
    no guards. The train state is ``(params, opt_state, carry, key)``, donated."""
    opt, window = optax.adam(1e-3), estimator.window

    def one_window(train_state, xyk):
        params, opt_state, carry = train_state
        grads, carry, info = uorojax.run_window(estimator, params, carry, *xyk)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, carry), info.loss

    @functools.partial(jax.jit, donate_argnums=0)
    def run(train_state, xs, ys):
        *state, key = train_state
        key, chunk_key = jax.random.split(key)
        keys = jax.random.split(chunk_key, xs.shape[0])
        windows = lambda a: a.reshape(-1, window, *a.shape[1:])  # noqa: E731
        state, losses = jax.lax.scan(one_window, tuple(state), (windows(xs), windows(ys), windows(keys)))  # fmt: skip
        return (*state, key), losses

    def init():
        carry = estimator.init_state(params, states)
        return uorojax.training.own_buffers((params, opt.init(params), carry, jax.random.key(0)))

    return run, init


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


LOOPS = {  # method prefix: the loop it runs the estimator in (longest prefix first)
    "grads_": gradient_sum_chunk,  # the rule alone: gradients summed, params fixed
    "own_windows_": own_window_loop_chunk,  # a user's own scan over whole windows
    "own_": own_loop_chunk,  # a user's own scan over single steps
}


def compiled_chunk(run, init_state, xs, ys, window=1, unroll=1):
    """``prepare``'s result for a chunk ``run(state, xs, ys)`` whose state
    ``init_state()`` builds (compiled from its shapes alone)."""
    compiled = run.lower(jax.eval_shape(init_state), xs, ys).compile()
    return compiled, lambda: (init_state(), xs, ys), memory_bytes(compiled), window, unroll


def prepare(method, hidden, streams, cfg, unroll, cell):
    """Compiles one method's chunk; returns ``(compiled, make_args, compiled memory,
    window, scan unroll)``: the loop the chunk runs is ``chunk / window`` iterations of
    ``scan unroll`` bodies (the forward and hand-written scans are not unrolled).

    Nothing large is allocated here: the train state's shapes come from
    ``jax.eval_shape``, and ``make_args`` builds the arguments. The train state is
    donated, as a training loop would do, so XLA updates it in place.
    """
    model, params, state0 = build_model(hidden, cfg.vocab, cell)
    loss = uorojax.softmax_cross_entropy
    states = uorojax.tree.repeat_streams(state0, streams)
    rng = np.random.default_rng(cfg.seed)
    xs = jnp.asarray(rng.integers(0, cfg.vocab, (cfg.chunk, streams)), jnp.int32)
    ys = jnp.asarray(rng.integers(0, cfg.vocab, (cfg.chunk, streams)), jnp.int32)
    if method == "forward":
        compiled = forward_chunk(model, loss).lower(params, states, xs, ys).compile()
        return compiled, lambda: (params, states, xs, ys), memory_bytes(compiled), 1, 1
    if method == "handwritten_uoro":
        run, init_carry = handwritten_uoro_chunk(model, loss, params)
        return compiled_chunk(run, lambda: init_carry(states), xs, ys)
    if method in ("adam", "adam_flat"):  # the optimizer alone, leaf by leaf or flat
        return compiled_chunk(*optimizer_chunk(params, flat=method == "adam_flat"), xs, ys)
    apply_fn, structure, example = model.apply, model.structure, jnp.zeros((), jnp.int32)
    for prefix, make_loop in LOOPS.items():  # the estimator in a loop other than the trainer
        if method.startswith(prefix):
            estimator = make_estimator(method.removeprefix(prefix), apply_fn, structure, loss, streams, example)  # fmt: skip
            window = estimator.window if prefix == "own_windows_" else 1
            return compiled_chunk(*make_loop(estimator, params, states), xs, ys, window)
    if method.endswith("_inferred"):  # the structure inferred, not the model's own
        method, structure = method.removesuffix("_inferred"), None
    per_leaf = method.endswith("_per_leaf")  # make_trainer(flatten=False)
    method = method.removesuffix("_per_leaf")
    if cfg.flat_params:  # one flat parameter vector (structured estimators need the tree)
        apply_fn, params, _ = uorojax.ravel_params(model.apply, params)
        structure = None
    estimator = make_estimator(method, apply_fn, structure, loss, streams, example)
    flatten = False if per_leaf else "auto"
    trainer = uorojax.make_trainer(
        estimator, optax.adam(1e-3), unroll=unroll, donate=True, flatten=flatten
    )

    def init():
        return trainer.init(params, states, jax.random.key(0, impl=cfg.key_impl))

    return compiled_chunk(trainer.run_chunk, init, xs, ys, estimator.window, unroll)


class Runner:
    """Runs one prepared method chunk after chunk, keeping its train state."""

    def __init__(self, method, compiled, make_args):
        self.method, self.compiled, self.args = method, compiled, make_args()

    def __call__(self):
        if self.method == "forward":
            return self.compiled(*self.args)  # nothing carried: the same inputs each time
        ts, metrics = self.compiled(*self.args)  # a train state, donated to the next call
        self.args = (ts, *self.args[1:])
        return ts, metrics


def peak_memory() -> int | None:
    """The process's peak so far: device bytes on GPU, resident bytes on CPU."""
    if jax.default_backend() == "gpu":
        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def time_all(runners: dict, cfg) -> dict:
    """Best seconds per chunk of every method. The methods take turns, one run of
    ``chunks_per_run`` chunks each per round, for ``repeats`` rounds: a slow spell of
    the machine then hits every method, not just one, and the ratios stay fair."""
    for run in runners.values():
        jax.block_until_ready(run())  # warm-up
    best = {method: float("inf") for method in runners}
    for _ in range(cfg.repeats):
        for method, run in runners.items():
            start = time.perf_counter()
            for _ in range(cfg.chunks_per_run):
                out = run()
            jax.block_until_ready(out)
            best[method] = min(best[method], (time.perf_counter() - start) / cfg.chunks_per_run)
    return best


def rtrl_too_big(hidden, streams, cfg, cell) -> str | None:
    """Why exact RTRL is skipped at this size (its Jacobian is over the limit), or None."""
    model, params, state0 = build_model(hidden, cfg.vocab, cell)
    state_size = ravel_pytree(state0)[0].size * streams
    num_params = ravel_pytree(params)[0].size
    if state_size * num_params * 4 <= cfg.rtrl_max_bytes:
        return None
    return (
        f"skipped: its Jacobian ({state_size:,} x {num_params:,} floats) is over "
        f"{fmt_bytes(cfg.rtrl_max_bytes)}"
    )


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


def bench_size(hidden, streams, cfg, unroll, cell, lines):
    """Times every method at one size, in one process, taking turns (see ``time_all``)."""
    tokens = cfg.chunk * streams
    runners, memory, notes, analyses = {}, {}, {}, {}
    for method in cfg.methods:
        if method == "rtrl_shared" and (why := rtrl_too_big(hidden, streams, cfg, cell)):
            notes[method] = why
            continue
        try:
            compiled, make_args, memory[method], window, scan_unroll = prepare(
                method, hidden, streams, cfg, unroll, cell
            )
        except uorojax.ConfigError as err:  # the method does not support this cell
            notes[method] = f"n/a: {str(err).split('. ')[0][:120]}"
            continue
        except Exception as err:  # noqa: BLE001 - report and go on (e.g. out of memory)
            notes[method] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:100]}"
            continue
        runners[method] = Runner(method, compiled, make_args)
        if cfg.analysis:
            analyses[method] = (hlo.analyse(compiled, cfg.chunk // window, scan_unroll), window)
    seconds = time_all(runners, cfg)
    peak = peak_memory()
    for method, sec in seconds.items():
        print(f"  {method}: {sec / tokens * 1e6:.3f} us/token", flush=True)
    fwd, ref = seconds.get("forward"), seconds.get("tbptt16")
    ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"  # noqa: E731
    peak_name = "device memory" if jax.default_backend() == "gpu" else "resident memory"
    lines += [
        f"### {cell.upper()} hidden {hidden}, {streams} streams, chunk {cfg.chunk}, "
        f"scan unroll {unroll}, {'flat' if cfg.flat_params else 'tree'} params, "
        f"{cfg.key_impl} keys",
        "",
        "| method | us/token | tokens/s | x forward | x TBPTT(16) | compiled memory |",
        "|---|---|---|---|---|---|",
    ]
    for method in cfg.methods:
        if method not in seconds:
            lines.append(f"| {method} | {notes.get(method, 'not run')} | | | | |")
            continue
        sec = seconds[method]
        lines.append(
            f"| {method} | {sec / tokens * 1e6:.3f} | {tokens / sec:,.0f} | {ratio(sec, fwd)} | "
            f"{ratio(sec, ref)} | {fmt_bytes(memory[method])} |"
        )
    lines += ["", f"Peak {peak_name} of the process, all methods alive: {fmt_bytes(peak)}.", ""]
    if analyses:
        analysis_table(analyses, lines)
    return seconds


def analysis_table(analyses: dict, lines: list) -> None:
    """Kernels, FLOPs and bytes per stream step of each compiled chunk (``hlo.analyse``)."""
    lines += [
        f"Compiled chunk per stream step ({jax.default_backend()} backend; a windowed method's "
        "loop body is one window, divided by its length):",
        "",
        "| method | kernels per step | of which fusions / library calls / copies | GFLOP per step | MB accessed per step |",
        "|---|---|---|---|---|",
    ]
    for method, (a, window) in analyses.items():
        fusions = a.kernels.get("fusion", 0)
        library = sum(a.kernels.get(op, 0) for op in ("custom-call", "dot", "convolution"))
        copies = sum(n for op, n in a.kernels.items() if op.startswith("copy"))
        total = sum(a.kernels.values())
        lines.append(
            f"| {method} | {total / window:.1f} | {fusions / window:.1f} / {library / window:.1f} "
            f"/ {copies / window:.1f} | {a.flops / window / 1e9:.4g} | "
            f"{a.bytes_accessed / window / 1e6:.4g} |"
        )
        print(f"  {method}: {total / window:.1f} kernels/step {dict(a.kernels)}", flush=True)
    lines.append("")


def memory_vs_horizon(hidden, streams, cfg, cell, lines):
    model, params, state0 = build_model(hidden, cfg.vocab, cell)
    loss = uorojax.softmax_cross_entropy
    states = uorojax.tree.repeat_streams(state0, streams)
    chunk = max(*cfg.memory_truncations, 16)  # whole windows for truncated UORO (T = 16) too
    xs = jnp.zeros((chunk, streams), jnp.int32)
    lines += [
        f"### Compiled memory against horizon ({cell.upper()} {hidden}, {streams} streams, chunk {chunk})",
        "",
        "| method | compiled memory |",
        "|---|---|",
    ]
    methods = [f"tbptt{k}" for k in cfg.memory_truncations]
    methods += ["uoro_shared", "uoro_per_stream", "uoro_t16_shared", "snap1"]
    for method in methods:
        estimator = make_estimator(method, model.apply, model.structure, loss, streams, xs[0, 0])
        trainer = uorojax.make_trainer(estimator, optax.adam(1e-3), donate=True)
        init = lambda: trainer.init(params, states, jax.random.key(0))  # noqa: E731,B023
        mem = memory_bytes(trainer.run_chunk.lower(jax.eval_shape(init), xs, xs).compile())
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

    def save():  # after every table, so an interrupted run keeps what it measured
        if _OUT.value:
            with open(_OUT.value, "w") as f:
                f.write("\n".join(lines) + "\n")

    unroll = cfg.gpu_unroll if jax.default_backend() == "gpu" else cfg.cpu_unroll
    for cell in cfg.cells:
        for hidden, streams in sizes:
            print(f"{cell.upper()} {hidden} x {streams} streams", flush=True)
            bench_size(hidden, streams, cfg, unroll, cell, lines)
            save()
    if cfg.memory_truncations:  # () skips the memory-against-horizon table
        hidden, streams = sizes[0]
        memory_vs_horizon(hidden, streams, cfg, cfg.cells[0], lines)
        save()
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
