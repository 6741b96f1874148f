"""The compiled-program analysis behind the benchmark's kernel and FLOP counts."""

import jax
import jax.numpy as jnp
import pytest

from uorojax.analysis import hlo


def _chunk(length, unroll, inner=0):
    def step(c, _):
        h = jnp.tanh(c @ c)
        if inner:
            h = jax.lax.scan(lambda a, _: (jnp.sin(a @ a), None), h, None, length=inner)[0]
        return h, None

    fn = jax.jit(lambda x: jax.lax.scan(step, x, None, length=length, unroll=unroll)[0])
    return fn.lower(jnp.ones((16, 16), jnp.float32)).compile()


def test_one_step_costs_the_same_whatever_the_unroll():
    one = hlo.analyse(_chunk(8, 1), 8)
    four = hlo.analyse(_chunk(8, 4), 8, unroll=4)
    assert one.flops == pytest.approx(2 * 16**3)  # one 16x16 matmul a step
    assert four.flops == pytest.approx(one.flops)
    assert sum(four.kernels.values()) == pytest.approx(sum(one.kernels.values()), rel=0.5)
    with pytest.raises(ValueError, match="no loop of 8 iterations"):
        hlo.analyse(_chunk(8, 4), 8)


def test_nested_loops_count_by_their_trip_counts():
    flat = hlo.analyse(_chunk(8, 1), 8)
    nested = hlo.analyse(_chunk(8, 1, inner=3), 8)
    assert nested.flops == pytest.approx(4 * flat.flops)  # the outer matmul and 3 inner ones
    assert nested.bytes_accessed > flat.bytes_accessed
    assert hlo.nbytes("(f32[16,16]{1,0}, s32[])") == 16 * 16 * 4 + 4


def test_a_fusion_that_reads_slices_of_an_operand_counts_only_the_slices():
    """A loop adding one row of a (64, 1024) array to a carry reads 1024 floats of it a
    step, not 64 · 1024: the bytes of a sliced operand are those of its slices. (XLA
    hoists the loop-invariant row; the other stays in the loop's fusion with the carry,
    the hoisted row and the result: four vectors.)"""

    def chunk(c, big):
        return jax.lax.scan(lambda c, _: (c + big[3] * 2.0 + big[40], None), c, None, length=4)[0]

    big = jnp.ones((64, 1024))
    compiled = jax.jit(chunk).lower(jnp.ones(1024), big).compile()
    cost = hlo.analyse(compiled, 4)
    assert cost.bytes_accessed < 5 * 1024 * big.dtype.itemsize
