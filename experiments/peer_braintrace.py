"""Peer benchmark: braintrace's online learners on the GRU model of the cost benchmark.

braintrace needs Python >= 3.11 and its own JAX, so it runs in a separate environment
(the numbers in docs/performance.md used braintrace 0.2.8 with jax 0.12.0.1)::

    python3.12 -m venv /tmp/btenv && /tmp/btenv/bin/pip install braintrace==0.2.8
    /tmp/btenv/bin/python experiments/peer_braintrace.py

and uorojax's side, on the same model, right after it in the project's environment::

    .venv/bin/python experiments/benchmark.py --config.cells="('gru',)" \\
        --config.methods="('forward','tbptt16','uoro_per_stream','snap1','eprop',\\
        'es_d_rtrl','own_uoro_per_stream','own_snap1','own_eprop','own_es_d_rtrl')" \\
        --config.memory_truncations="()"

Model: GRU with 128 units (``braintrace.nn.GRUCell``), one-hot input over 64 symbols, a
linear readout (``braintrace.nn.Linear``), next-symbol cross-entropy averaged over 32
streams. Each mode runs chunks of 64 steps under ``brainstate.transform.jit``:

* ``forward``: the model over the chunk, no gradient (the reference of "x forward");
* ``uoro_per_stream``: ``compile(model, "uoro", ..., vmap=True)``, one tangent pair per
  stream (uorojax's ``per_stream(uoro)``). As shipped it fails under ``vmap=True``:
  brainstate's per-stream state hook cannot build a typed PRNG key
  (``TypeError: Cannot interpret 'key<fry>' as a data type``). The row
  ``uoro_per_stream_raw_key`` runs the same algorithm with its projection key stored as
  raw ``uint32`` data and wrapped back into a key inside the step
  (:class:`RawKeyUORO`), which changes nothing else;
* ``d_rtrl``: D-RTRL, the diagonal of RTRL's influence per unit: on one layer the rule
  of uorojax's SnAp-1 (``per_stream(snap1)``);
* ``pp_prop``: ES-D-RTRL (``IODimVjpAlgorithm``, decay 0.9), uorojax's ``es_d_rtrl``;
* ``bptt16``: truncated BPTT over windows of 16 steps, ``brainstate.transform.grad`` of
  the window's mean loss through ``brainstate.transform.for_loop``, the state carried
  from window to window (uorojax's ``tbptt16``).

The online learners run ``learner.etrace_grad`` over the chunk (the gradient of every
step, accumulated; no optimizer: uorojax's numbers include an Adam update at every
step). Warm-up (compilation) is excluded; the modes take turns, one run of
``--chunks`` chunks each per round, for ``--rounds`` rounds, and each mode's best round
counts; ``jax.block_until_ready`` runs before every timer stops. This script imports
nothing from uorojax.
"""

import argparse
import platform
import sys
import time

import brainstate
import braintrace
import jax
import jax.numpy as jnp
import numpy as np
from braintrace._algorithm.random_projection_vjp import _KEY as PROJECTION_KEY


class GRUNet(brainstate.nn.Module):
    """A GRU cell and a linear readout: logits over the vocabulary."""

    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.cell = braintrace.nn.GRUCell(vocab, hidden)
        self.out = braintrace.nn.Linear(hidden, vocab)

    def update(self, x):
        return self.out(self.cell(x))


class RawKeyUORO(braintrace.UORO):
    """braintrace's UORO with its carried projection key stored as raw ``uint32`` data
    (``jax.random.key_data``) and wrapped back into a typed key only inside the step, so
    that ``vmap=True`` can create one per stream."""

    def _initial_projection_key(self):
        key = super()._initial_projection_key()
        return (
            jax.random.key_data(key)
            if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
            else key
        )

    def _get_etrace_data(self):
        data = super()._get_etrace_data()
        data[PROJECTION_KEY] = jax.random.wrap_key_data(data[PROJECTION_KEY])
        return data

    def _assign_etrace_data(self, etrace_vals):
        etrace_vals = dict(etrace_vals)
        etrace_vals[PROJECTION_KEY] = jax.random.key_data(etrace_vals[PROJECTION_KEY])
        super()._assign_etrace_data(etrace_vals)


def cross_entropy(logits, y):
    """Mean next-symbol cross-entropy over the streams."""
    logp = jax.nn.log_softmax(logits)
    return jnp.mean(-jnp.take_along_axis(logp, y[..., None], -1))


def online_runner(algorithm, args, xs, ys, *, vmap=False, **options):
    """``run(xs, ys)``: one chunk of ``learner.etrace_grad`` for a braintrace algorithm
    (a name or a class), vmapped over the streams (``vmap=True``: a trace per stream)."""
    learner = braintrace.compile(
        GRUNet(args.vocab, args.hidden),
        algorithm,
        xs[0],
        batch_size=args.streams,
        vmap=vmap,
        **options,
    )

    def step_loss(x, y):
        return cross_entropy(learner(x), y)

    return brainstate.transform.jit(
        lambda xs, ys: learner.etrace_grad(xs, ys, step_fn=step_loss, return_value=True)
    )


def forward_runner(args, xs, ys):
    """``run(xs, ys)``: the model over one chunk, no gradient."""
    model = GRUNet(args.vocab, args.hidden)
    brainstate.nn.init_all_states(model, batch_size=args.streams)

    def chunk(xs, ys):
        return brainstate.transform.for_loop(lambda x, y: cross_entropy(model(x), y), xs, ys)

    return brainstate.transform.jit(chunk)


def bptt_runner(args, xs, ys, truncation: int):
    """``run(xs, ys)``: truncated BPTT over the chunk's windows of ``truncation`` steps,
    one gradient a window, the state carried across windows."""
    model = GRUNet(args.vocab, args.hidden)
    brainstate.nn.init_all_states(model, batch_size=args.streams)
    params = model.states(brainstate.ParamState)

    def window_loss(wx, wy):
        losses = brainstate.transform.for_loop(lambda x, y: cross_entropy(model(x), y), wx, wy)
        return jnp.mean(losses)

    window_grad = brainstate.transform.grad(window_loss, params, return_value=True)

    def chunk(xs, ys):
        split = lambda a: a.reshape(-1, truncation, *a.shape[1:])  # noqa: E731
        return brainstate.transform.for_loop(window_grad, split(xs), split(ys))

    return brainstate.transform.jit(chunk)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=4, help="chunks per mode per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--decay", type=float, default=0.9, help="pp_prop's decay")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    symbols = rng.integers(0, args.vocab, (args.chunk, args.streams))
    xs = jax.nn.one_hot(symbols, args.vocab)
    ys = jnp.asarray(rng.integers(0, args.vocab, (args.chunk, args.streams)))
    tokens = args.chunk * args.streams
    print(
        f"braintrace {braintrace.__version__}, brainstate {brainstate.__version__}, "
        f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}; "
        f"GRU-{args.hidden}, one-hot {args.vocab}, {args.streams} streams, "
        f"chunks of {args.chunk} steps",
        flush=True,
    )
    builders = {
        "forward": lambda: forward_runner(args, xs, ys),
        "bptt16": lambda: bptt_runner(args, xs, ys, 16),
        "uoro_per_stream": lambda: online_runner("uoro", args, xs, ys, vmap=True),
        "uoro_per_stream_raw_key": lambda: online_runner(RawKeyUORO, args, xs, ys, vmap=True),
        "d_rtrl": lambda: online_runner("d_rtrl", args, xs, ys),
        "pp_prop": lambda: online_runner("pp_prop", args, xs, ys, decay_or_rank=args.decay),
    }
    runners, failures = {}, {}
    for mode, build in builders.items():
        try:
            run = build()
            jax.block_until_ready(run(xs, ys))  # compile and warm up
            runners[mode] = run
        except Exception as err:  # noqa: BLE001 - report the peer's failure, keep going
            failures[mode] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
            print(f"{mode}: {failures[mode]}", flush=True)
    best = {mode: float("inf") for mode in runners}
    for _ in range(args.rounds):
        for mode, run in runners.items():
            start = time.perf_counter()
            for _ in range(args.chunks):
                out = run(xs, ys)
            jax.block_until_ready(out)
            best[mode] = min(best[mode], (time.perf_counter() - start) / args.chunks)
    forward = best.get("forward")
    print("\n| braintrace mode | us/token | x forward |\n|---|---|---|")
    for mode in builders:
        if mode in failures:
            print(f"| {mode} | {failures[mode]} | |")
            continue
        ratio = f"{best[mode] / forward:.2f}" if forward else "n/a"
        print(f"| {mode} | {best[mode] / tokens * 1e6:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
