"""uorojax.models.inference's relation analysis: sound (it contains every Jacobian entry) and,
for generic cells of primitives with exact rules, tight (it equals the Jacobian pattern),
whatever the array sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from inference_cells import BLOCKS, block_cell, compare, random_cell

import uorojax
from uorojax.models.inference import Term, analyse, materialise
from uorojax.models.inference.affine import canonical, restrict
from uorojax.models.inference.rules import reshape, slice_, transform

EXACT = sorted(name for name, (exact, _, _) in BLOCKS.items() if exact)
WIDENED = sorted(name for name, (exact, _, _) in BLOCKS.items() if not exact)


@pytest.mark.parametrize("name", EXACT)
def test_an_exact_rule_gives_the_jacobian_pattern(name):
    """One block per primitive rule (dot with batch and contracting axes, split,
    reshapes that split and merge axes, static gathers, reductions, where, scans,
    cond, while, custom_jvp/custom_vjp, …): at three random points the union of the
    dense Jacobians' patterns equals the relation."""
    cell, params, _ = block_cell(name)
    missing, extra = compare(cell, params, forward=name == "while")
    assert (missing, extra) == (0, 0)


@pytest.mark.parametrize("name", WIDENED)
def test_a_widened_rule_contains_the_jacobian_pattern(name):
    """Dynamic gathers and slices, scatters, cumulative sums, sorts, max reductions and
    primitives without a rule (a convolution) are widened: never narrower."""
    cell, params, _ = block_cell(name)
    missing, extra = compare(cell, params)
    assert missing == 0
    assert extra > 0  # the widening is visible: a narrower rule would be caught above


@pytest.mark.parametrize("seed", range(4))
def test_random_generic_cells_have_exactly_their_jacobian_pattern(seed):
    cell, params, exact = random_cell(seed, EXACT)
    assert exact
    assert compare(cell, params) == (0, 0)


@pytest.mark.parametrize("seed", range(2))
def test_random_cells_with_widened_rules_are_sound(seed):
    cell, params, _ = random_cell(100 + seed, sorted(BLOCKS))
    missing, _ = compare(cell, params)
    assert missing == 0


def test_an_unknown_primitive_mixes_everything():
    """A primitive without a rule: every output entry depends on every entry of every
    source its inputs depend on."""
    prim = jax.extend.core.Primitive("uorojax_test_opaque")
    prim.def_abstract_eval(lambda v: jax.core.ShapedArray(v.shape, v.dtype))

    def cell(params, h, x):
        return prim.bind(h * params["w"]), jnp.zeros(())

    a = analyse(cell, {"w": jnp.ones(3)}, jnp.zeros(3), jnp.zeros(()))
    assert a.pattern(("state", 0), ("state", 0)).all()
    assert a.pattern(("state", 0), ("params", 0)).all()


def test_integer_and_stop_gradient_values_carry_no_relation():
    def cell(params, h, x):
        i = jnp.argmax(h)
        return h * 0 + jax.lax.stop_gradient(params["w"]) + jnp.sign(h) + i, jnp.zeros(())

    a = analyse(cell, {"w": jnp.ones(3)}, jnp.zeros(3), jnp.zeros(()))
    assert not a.pattern(("state", 0), ("params", 0)).any()
    assert np.array_equal(a.pattern(("state", 0), ("state", 0)), np.eye(3, dtype=bool))


def test_the_cost_does_not_depend_on_the_array_sizes():
    """A GRU with 1024 units has the same terms as one with 8."""

    def terms(n):
        model = uorojax.linen_model("gru", n, 2)
        x = jax.ShapeDtypeStruct((5,), jnp.float32)
        params, state = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(5)))
        a = analyse(model.apply, params, state, x)
        return [sorted(len(t.ranges) for rel in info.rels.values() for t in rel) for info in a.outs]

    assert terms(8) == terms(1024)


def test_terms_compose_exactly_through_reshapes_and_strided_slices():
    identity = canonical(Term((6,), (((1,), 0),), (((1,), 0),)), (6,))
    rel = frozenset([identity])
    split = transform(reshape, (2, 3), ((6,), (2, 3)), rel, (6,))
    merged = transform(reshape, (6,), ((2, 3), (6,)), split, (6,))
    assert merged == rel  # a split and a merge give the identity back, term for term
    strided = transform(slice_, (3,), ((0,), (6,), (2,)), rel, (6,))
    assert np.array_equal(materialise(strided, (3,), (6,)), np.eye(6, dtype=bool)[::2])
    assert restrict(identity, 0, 2, 4)[0].ranges == (2,)
