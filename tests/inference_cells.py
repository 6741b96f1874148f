"""Cells for the uorojax.models.inference tests: random cells built from blocks that exercise the
primitives the relation analysis has rules for, and a checker that compares the
analysis with the pattern of dense Jacobians."""

import jax
import jax.numpy as jnp
import numpy as np

from uorojax.models.inference import analyse

N = 4  # every block maps vectors of N entries to a vector of N entries


@jax.custom_vjp
def custom_sin(v):
    return jnp.sin(v)


custom_sin.defvjp(lambda v: (jnp.sin(v), v), lambda v, g: (g * jnp.cos(v),))


def _roll(v):
    return jnp.concatenate([v[-1:], v[:-1]])


# name -> (exact, param shapes, fn(p, a, b, tok)); "exact": for generic values the
# relation equals the union of the Jacobian patterns at points with tok = 0, 1, 2.
BLOCKS = {
    "dense": (True, {"W": (N, N)}, lambda p, a, b, tok: p["W"] @ a),
    "dense_T": (True, {"W": (N, N)}, lambda p, a, b, tok: a @ p["W"]),
    "batched_dot": (
        True,
        {"W": (2, 2, 2)},
        lambda p, a, b, tok: jnp.einsum("gij,gj->gi", p["W"], a.reshape(2, 2)).reshape(N),
    ),
    "tensordot": (
        True,
        {"T": (2, 2, N)},
        lambda p, a, b, tok: jnp.tensordot(a.reshape(2, 2), p["T"], axes=([0, 1], [0, 1])),
    ),
    "split_concat": (
        True,
        {},
        lambda p, a, b, tok: jnp.concatenate([a[2:] * b[:2], jnp.tanh(a[:2])]),
    ),
    "split_prim": (
        True,
        {},
        lambda p, a, b, tok: (lambda s: jnp.concatenate([s[1] * s[2], s[3]]))(
            jnp.split(jnp.concatenate([a, b]), 4)
        ),
    ),
    "reshape_T": (True, {"s": (N,)}, lambda p, a, b, tok: a.reshape(2, 2).T.reshape(N) * p["s"]),
    "merge_digits": (
        True,
        {},
        lambda p, a, b, tok: jnp.concatenate([a, b]).reshape(2, N).T.reshape(2 * N)[::2] + b[::-1],
    ),
    "reshape_3d": (
        True,
        {},
        lambda p, a, b, tok: (a.reshape(1, 2, 2, 1) * b.reshape(2, 1, 1, 2)).reshape(N, N).sum(0),
    ),
    "carry_reshape": (
        True,
        {},
        lambda p, a, b, tok: (lambda r: jnp.concatenate([r[0, :2] * r[1, :2], r[:, 2]]))(
            jnp.concatenate([a[:1], b[:3], a[1:3]]).reshape(2, 3)
        ),
    ),
    "take_static": (True, {"s": (N,)}, lambda p, a, b, tok: a[jnp.array([3, 0, 0, 2])] * p["s"]),
    "gather_2d": (
        True,
        {},
        lambda p, a, b, tok: (a[:, None] * b[None, :])[
            jnp.array([0, 2, 3, 1]), jnp.array([1, 1, 0, 3])
        ],
    ),
    "sum": (True, {}, lambda p, a, b, tok: a * jnp.sum(b)),
    "outer": (True, {"s": (N,)}, lambda p, a, b, tok: (a[:, None] * b[None, :]) @ p["s"]),
    "scalar_gain": (True, {"g": ()}, lambda p, a, b, tok: a * p["g"] + b),
    "where": (True, {"w": (N,)}, lambda p, a, b, tok: jnp.where(tok % 2 == 0, a * p["w"], b)),
    "pad_rev_slice": (
        True,
        {},
        lambda p, a, b, tok: jnp.concatenate([jnp.pad(a, (1, 1))[::3], a[::-1][1:3]]) + b,
    ),
    "pad_interior": (
        True,
        {},
        lambda p, a, b, tok: jax.lax.pad(a, 0.0, ((1, -1, 1),))[1:5] + b,
    ),
    "scan_ys": (
        True,
        {"X": (3, N), "w": (N,)},
        lambda p, a, b, tok: (
            jax.lax.scan(lambda c, x: (jnp.tanh(c * p["w"] + x), c * x), a, p["X"])[1][1] * b
        ),
    ),
    "static_dynamic_slice": (
        True,
        {},
        lambda p, a, b, tok: jax.lax.dynamic_slice(jnp.concatenate([a, b]), (2,), (N,)),
    ),
    "softplus": (True, {}, lambda p, a, b, tok: jax.nn.softplus(a) * b),
    "custom_vjp": (True, {}, lambda p, a, b, tok: custom_sin(a) + b),
    "no_derivative": (
        True,
        {},
        lambda p, a, b, tok: a + jax.lax.stop_gradient(b) + jnp.floor(b) + jnp.argmax(b),
    ),
    "clip": (True, {}, lambda p, a, b, tok: jnp.clip(a, -50.0, 50.0) * b),
    "scan_short": (
        True,
        {"X": (3, N), "w": (N,)},
        lambda p, a, b, tok: (lambda c, ys: c + ys.sum(0))(
            *jax.lax.scan(lambda c, x: (jnp.tanh(c * p["w"] + x), c * x), a, p["X"])
        ),
    ),
    "scan_long": (
        True,
        {"w": (N,)},
        lambda p, a, b, tok: jax.lax.scan(
            lambda c, _: (c * p["w"] + 0.5 * _roll(c), None), a, None, length=9
        )[0],
    ),
    "cond": (
        True,
        {"w": (N,)},
        lambda p, a, b, tok: jax.lax.cond(
            tok % 2 == 0, lambda v: v * p["w"], lambda v: _roll(v) + v[0], a
        ),
    ),
    "while": (
        True,
        {"w": (N,)},
        lambda p, a, b, tok: jax.lax.fori_loop(0, tok + 3, lambda k, c: c * p["w"] + _roll(c), a),
    ),
    # widened rules: the relation contains the Jacobian patterns
    "embedding": (False, {"E": (5, N)}, lambda p, a, b, tok: p["E"][tok] * a),
    "take_dynamic": (False, {"E": (5, N)}, lambda p, a, b, tok: jnp.take(p["E"], tok, axis=0) * a),
    "gather_dynamic": (False, {}, lambda p, a, b, tok: a[jnp.stack([tok, tok + 1, 0, tok])] * b),
    "max": (False, {}, lambda p, a, b, tok: a + jnp.max(b)),
    "cumsum": (False, {}, lambda p, a, b, tok: jnp.cumsum(a) * b),
    "sort": (False, {}, lambda p, a, b, tok: jnp.sort(a) + b),
    "dynamic_slice": (
        False,
        {},
        lambda p, a, b, tok: jax.lax.dynamic_slice(jnp.concatenate([a, b]), (tok,), (N,)),
    ),
    "scatter_add": (False, {}, lambda p, a, b, tok: a.at[tok].add(b[0])),
    "convolve": (False, {"k": (3,)}, lambda p, a, b, tok: jnp.convolve(a, p["k"], mode="same")),
}


def random_cell(seed, names, n_blocks=5):
    """A cell ``(params, state, x) -> (new_state, output)`` of random blocks: state is two
    vectors of N entries, x is ``{"v": vector, "tok": int}``. Returns the cell, its
    params and whether every block is exact. (No ``while`` block: its Jacobian needs
    forward mode, a custom_vjp's reverse mode.)"""
    names = [n for n in names if n != "while"]
    rng = np.random.default_rng(seed)
    plan, params = [], {}
    for i in range(n_blocks):
        name = names[rng.integers(len(names))]
        a, b = rng.integers(3 + i, size=2)
        plan.append((name, int(a), int(b)))
        for pname, shape in BLOCKS[name][1].items():
            params[f"b{i}_{pname}"] = jnp.asarray(rng.normal(size=shape))

    def cell(params, state, x):
        pool = [state[0], state[1], x["v"]]
        for i, (name, a, b) in enumerate(plan):
            p = {k[len(f"b{i}_") :]: v for k, v in params.items() if k.startswith(f"b{i}_")}
            pool.append(BLOCKS[name][2](p, pool[a], pool[b], x["tok"]))
        return (jnp.tanh(pool[-1]), pool[-2] * pool[1]), jnp.sum(pool[-3])

    exact = all(BLOCKS[name][0] for name, _, _ in plan)
    return cell, params, exact


def block_cell(name):
    """A cell of one block, reading both state leaves."""
    exact, shapes, fn = BLOCKS[name]
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(size=s)) for k, s in shapes.items()}

    def cell(params, state, x):
        out = fn(params, state[0], state[1] + x["v"], x["tok"])
        return (out, state[1] * out), jnp.sum(out)

    return cell, params, exact


def example_state():
    return (jnp.zeros(N), jnp.zeros(N))


def example_x(tok=0):
    return {"v": jnp.zeros(N), "tok": jnp.asarray(tok, jnp.int32)}


def jacobian_patterns(cell, params, state, points=3, seed=1, forward=False):
    """The union over ``points`` random points (x["tok"] = 0, 1, 2, …) of the non-zero
    patterns of d(new state leaves, output leaves)/d(params leaves, state leaves, x["v"])."""
    p_leaves, p_def = jax.tree.flatten(params)
    s_leaves, s_def = jax.tree.flatten(state)

    def f(p_leaves, s_leaves, v, tok):
        new_state, out = cell(
            jax.tree.unflatten(p_def, p_leaves),
            jax.tree.unflatten(s_def, s_leaves),
            {"v": v, "tok": tok},
        )
        return jax.tree.leaves(new_state) + jax.tree.leaves(out)

    jac = jax.jit((jax.jacfwd if forward else jax.jacrev)(f, argnums=(0, 1, 2)))
    rng = np.random.default_rng(seed)
    union = None
    for k in range(points):
        ps = [jnp.asarray(rng.normal(size=np.shape(leaf))) for leaf in p_leaves]
        ss = [jnp.asarray(rng.normal(size=np.shape(leaf))) for leaf in s_leaves]
        v = jnp.asarray(rng.normal(size=N))
        rows = jac(ps, ss, v, jnp.asarray(k, jnp.int32))
        pats = [[np.asarray(d) != 0 for d in (*r[0], *r[1], r[2])] for r in rows]
        union = (
            pats
            if union is None
            else [[u | q for u, q in zip(ur, qr)] for ur, qr in zip(union, pats)]
        )
    return union


def analysed_patterns(cell, params, state):
    """The analysis' patterns, laid out like :func:`jacobian_patterns`."""
    a = analyse(cell, params, state, example_x())
    n_p, n_s = len(jax.tree.leaves(params)), len(jax.tree.leaves(state))
    outs = [("state", k) for k in range(n_s)] + [("output", 0)]
    srcs = [("params", j) for j in range(n_p)] + [("state", k) for k in range(n_s)] + [("x", 1)]
    return [[a.pattern(o, s) for s in srcs] for o in outs]


def compare(cell, params, state=None, forward=False):
    """``(missing, extra)``: Jacobian entries the relation lacks (unsound), and relation
    entries no Jacobian showed (loose). ``forward``: Jacobians by ``jax.jacfwd`` (a
    while loop with a dynamic trip count), else ``jax.jacrev`` (a custom_vjp)."""
    state = example_state() if state is None else state
    jac = jacobian_patterns(cell, params, state, forward=forward)
    rel = analysed_patterns(cell, params, state)
    missing = sum(int((j & ~r).sum()) for jr, rr in zip(jac, rel) for j, r in zip(jr, rr))
    extra = sum(int((r & ~j).sum()) for jr, rr in zip(jac, rel) for j, r in zip(jr, rr))
    return missing, extra
