"""Test setup: float64 everywhere, so exactness tests compare to 1e-10."""

import jax

jax.config.update("jax_enable_x64", True)
