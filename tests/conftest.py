"""Test setup: float64 everywhere, so exactness tests compare to 1e-10, and full-precision
matmuls, so they hold on GPUs too (TF32 would round float32 products to 10 bits).

Set ``UOROJAX_TEST_X64=0`` to run without float64 (``tests/test_float32.py`` does, in a
subprocess, for a float32 subset).
"""

import os
import tempfile

# The tests compile many small programs once each, and compiling them dominates the
# suite's time: LLVM's cheaper code generation and XLA's classic fusion emitters halve
# it and change no result beyond the float tolerances the tests use; a bit-exact test
# compares two runs of one program (set before the backend starts; subprocesses inherit).
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
        "--xla_cpu_use_fusion_emitters=false",
    ]
).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", os.environ.get("UOROJAX_TEST_X64", "1") != "0")
jax.config.update("jax_default_matmul_precision", "highest")

# One compilation cache for the session (and the subprocesses the tests start): the
# runner's tests compile the same programs in many runs; a cached one is loaded, not
# compiled again. Results do not depend on it.
_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "uorojax-test-jax-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
