"""Cost benchmark: LSTM, one-hot input over 64 symbols, dense readout, cross-entropy, Adam."""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    # Cells of uorojax.models.LINEN_CELLS, each benchmarked in turn ("simple" for KF-RTRL,
    # "optimized_lstm" for the fused-gate LSTM, "gru" for the braintrace comparison).
    c.cells = ("lstm",)
    c.vocab = 64
    # (hidden, streams) per backend.
    c.cpu_sizes = ((128, 32),)
    c.gpu_sizes = ((256, 64), (1024, 256), (1024, 1024))
    c.methods = (
        "forward",
        "tbptt1",
        "tbptt16",
        "uoro_shared",
        "uoro_per_stream",
        "uoro_shared_k4",
        "handwritten_uoro",
        "uoro_t16_shared",
        "snap1",
        "eprop",
        "es_d_rtrl",
        "kf_rtrl",
        "rtrl_shared",
        "own_tbptt16",
        "own_windows_tbptt16",
        "own_uoro_per_stream",
        "own_snap1",
    )  # names of experiments/benchmark.py's METHODS, "forward", "handwritten_uoro",
    # "own_<method>" (the same estimator in a user's own lax.scan and optax update),
    # "own_windows_<method>" (a windowed one's own scan over windows, run_window each),
    # "grads_<method>" (the rule alone: gradients summed with the params fixed, no
    # optimizer, as braintrace's etrace_grad), "adam" and "adam_flat" (the optimizer alone)
    # Print each compiled chunk's kernels per step, FLOPs and bytes per step.
    c.analysis = False
    # Params as one flat vector (uorojax.ravel_params) for every method that takes it,
    # and the PRNG implementation of the trainer's key ("threefry2x32", "rbg",
    # "unsafe_rbg"): the two levers on kernels per step (docs/performance.md).
    c.flat_params = False
    c.key_impl = "threefry2x32"
    c.chunk = 64  # steps per compiled chunk (a multiple of 16)
    # Each method runs chunks_per_run chunks per round, for `repeats` rounds, and its
    # best round counts: on a 2-core machine whose load varies, more and longer rounds
    # give steadier ratios (about 90 s here).
    c.chunks_per_run = 8
    c.repeats = 10
    # Steps per iteration of the trainer's scan (make_trainer's unroll), for every method.
    c.cpu_unroll = 1
    c.gpu_unroll = 4
    # Exact RTRL runs only where its Jacobian (|S|·|Θ| floats) fits under this: its cost
    # grows like |Θ| JVPs a step, so a GRU-128 with 32 streams (1.3 GB) would take hours.
    c.rtrl_max_bytes = 256 * 1024**2
    # Memory against sequence length: TBPTT truncations compared with UORO (() skips it).
    c.memory_truncations = (1, 4, 16, 64, 256)
    c.seed = 0
    return c
