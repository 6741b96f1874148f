"""Test setup: float64 everywhere, so exactness tests compare to 1e-10, and full-precision
matmuls, so they hold on GPUs too (TF32 would round float32 products to 10 bits).

Set ``UOROJAX_TEST_X64=0`` to run without float64 (``tests/test_float32.py`` does, in a
subprocess, for a float32 subset).
"""

import os

import jax

jax.config.update("jax_enable_x64", os.environ.get("UOROJAX_TEST_X64", "1") != "0")
jax.config.update("jax_default_matmul_precision", "highest")
