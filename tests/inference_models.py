"""Plain-JAX, flax.nnx and Equinox cells for the uorojax.models.inference tests, each with the
roles a reader of its code would write down (``Units(layer, axis, groups)``)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from uorojax.models.inference import Feedforward, Units

N, M = 3, 2  # units, inputs


def _normal(seed, shapes):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(0.5 * rng.normal(size=s)) for k, s in shapes.items()}


def sigmoid(z):
    return jax.nn.sigmoid(z)


class Case:
    """A cell ``apply(params, state, x)``, its params, a state, an input and the roles
    of its params leaves (flatten order)."""

    def __init__(self, apply, params, state, x, roles, layers=None):
        self.apply, self.params, self.state, self.x = apply, params, state, x
        self.roles, self.layers = roles, layers


def k_h_rnn():
    """``h' = tanh(K h + U x + b)``: the kernel indexed (unit, input)."""
    params = _normal(0, {"K": (N, N), "U": (N, M), "b": (N,), "V": (2, N)})

    def apply(p, h, x):
        h = jnp.tanh(p["K"] @ h + p["U"] @ x + p["b"])
        return h, p["V"] @ h

    roles = [Units(0, 0), Units(0, 0), None, Units(0, 0)]  # K, U, V, b
    return Case(apply, params, 0.3 * jnp.ones(N), jnp.ones(M), roles)


def dict_state_rnn():
    """The same cell with its state held as a dict."""
    base = k_h_rnn()

    def apply(p, s, x):
        h, out = base.apply(p, s["h"], x)
        return {"h": h}, out

    return Case(apply, base.params, {"h": base.state}, base.x, base.roles)


def _gru_gates(gi, gh, h):
    """flax's and Equinox's GRU: ``n = tanh(i_n + r ⊙ h_n)`` (the reset gate after the
    recurrent kernel)."""
    ir, iz, in_ = jnp.split(gi, 3)
    hr, hz, hn = jnp.split(gh, 3)
    r, z = sigmoid(ir + hr), sigmoid(iz + hz)
    n = jnp.tanh(in_ + r * hn)
    return (1 - z) * n + z * h


def fused_gru_in_out():
    """Gate kernels fused as ``(m, 3n)`` and ``(n, 3n)``, ``x @ W``."""
    params = _normal(1, {"Wh": (N, 3 * N), "Wi": (M, 3 * N), "bh": (3 * N,), "bi": (3 * N,)})

    def apply(p, h, x):
        h = _gru_gates(x @ p["Wi"] + p["bi"], h @ p["Wh"] + p["bh"], h)
        return h, jnp.sum(h)

    roles = [Units(0, 1, 3), Units(0, 1, 3), Units(0, 0, 3), Units(0, 0, 3)]
    return Case(apply, params, 0.2 * jnp.arange(N, dtype=float), jnp.ones(M), roles)


def fused_gru_out_in():
    """Gate kernels fused as ``(3n, m)`` and ``(3n, n)``, ``W @ x``, no recurrent bias."""
    params = _normal(2, {"Wh": (3 * N, N), "Wi": (3 * N, M), "b": (3 * N,)})

    def apply(p, h, x):
        h = _gru_gates(p["Wi"] @ x + p["b"], p["Wh"] @ h, h)
        return h, h

    roles = [Units(0, 0, 3), Units(0, 0, 3), Units(0, 0, 3)]
    return Case(apply, params, 0.2 * jnp.arange(N, dtype=float), jnp.ones(M), roles)


def concat_lstm():
    """An LSTM on ``[x, h] @ K`` with ``K (m + n, 4n)``; its state ``(c, h)`` is one
    layer."""
    params = _normal(3, {"K": (M + N, 4 * N), "b": (4 * N,)})

    def apply(p, state, x):
        c, h = state
        i, f, g, o = jnp.split(jnp.concatenate([x, h]) @ p["K"] + p["b"], 4)
        c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
        h = sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    state = (0.1 * jnp.arange(N, dtype=float), -0.2 * jnp.ones(N))
    return Case(apply, params, state, jnp.ones(M), [Units(0, 1, 4), Units(0, 0, 4)], ((0, 1),))


def peephole_lstm():
    """An LSTM on ``[x, c, h] @ K``: two rows of the vector per unit."""
    params = _normal(11, {"K": (M + 2 * N, 4 * N)})

    def apply(p, state, x):
        c, h = state
        i, f, g, o = jnp.split(jnp.concatenate([x, c, h]) @ p["K"], 4)
        c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
        h = sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    state = (0.1 * jnp.arange(N, dtype=float), -0.2 * jnp.ones(N))
    return Case(apply, params, state, jnp.ones(M), [Units(0, 1, 4)], ((0, 1),))


def two_layer_gru():
    """Two fused GRU layers: layer 1 reads layer 0's new state."""
    p0 = fused_gru_in_out().params
    p1 = _normal(4, {"Wh": (N, 3 * N), "Wi": (N, 3 * N), "bh": (3 * N,), "bi": (3 * N,)})

    def apply(p, state, x):
        h0 = _gru_gates(x @ p[0]["Wi"] + p[0]["bi"], state[0] @ p[0]["Wh"] + p[0]["bh"], state[0])
        h1 = _gru_gates(h0 @ p[1]["Wi"] + p[1]["bi"], state[1] @ p[1]["Wh"] + p[1]["bh"], state[1])
        return (h0, h1), h1

    roles = [Units(layer, a, 3) for layer in (0, 1) for a in (1, 1, 0, 0)]
    state = (0.1 * jnp.ones(N), -0.1 * jnp.arange(N, dtype=float))
    return Case(apply, (p0, p1), state, jnp.ones(M), roles, ((0,), (1,)))


def nnx_gru():
    """``flax.nnx.GRUCell`` through ``nnx.split(module, nnx.Param, ...)``; its ``dense_h``
    has no bias."""
    cell = nnx.GRUCell(M, N, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(cell, nnx.Param, ...)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)

    def apply(p, h, x):
        return nnx.merge(graphdef, p, rest)(h, x)

    roles = [Units(0, 1, 3), Units(0, 0, 3), Units(0, 1, 3)]  # dense_h.kernel, dense_i.*
    return Case(apply, params, 0.3 * jnp.ones(N), jnp.ones(M), roles)


def eqx_gru():
    """``equinox.nn.GRUCell`` (called as ``cell(x, h)``, returning only h)."""
    cell = eqx.nn.GRUCell(M, N, key=jax.random.key(0))
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)

    def apply(p, h, x):
        h = eqx.combine(p, static)(x, h)
        return h, h

    roles = [Units(0, 0, 3), Units(0, 0, 3), Units(0, 0, 3), Units(0, 0, 1)]
    return Case(apply, params, 0.3 * jnp.ones(N), jnp.ones(M), roles)


def embedded_rnn():
    """A learned embedding of a token feeding a K @ h cell: Feedforward(0)."""
    base = k_h_rnn()
    params = {**base.params, "E": _normal(5, {"E": (4, M)})["E"]}

    def apply(p, h, tok):
        return base.apply(p, h, p["E"][tok])

    roles = [Feedforward(0), *base.roles]
    return Case(apply, params, base.state, jnp.asarray(1, jnp.int32), roles)


def cho_gru():
    """Cho et al.'s GRU, ``h~ = tanh(W x + Uh (r ⊙ h))``: the reset gate before the
    recurrent kernel."""
    shapes = {"Uh": (N, N), "Ur": (N, N), "Uz": (N, N), "W": (N, M), "Wr": (N, M), "Wz": (N, M)}
    params = _normal(6, shapes)

    def apply(p, h, x):
        r = sigmoid(p["Wr"] @ x + p["Ur"] @ h)
        z = sigmoid(p["Wz"] @ x + p["Uz"] @ h)
        cand = jnp.tanh(p["W"] @ x + p["Uh"] @ (r * h))
        h = (1 - z) * h + z * cand
        return h, h

    return Case(apply, params, 0.3 * jnp.ones(N), jnp.ones(M), None)


def interleaved_gru():
    """Gate columns interleaved, ``W[:, u·3 + g]``."""
    params = _normal(7, {"Wh": (N, 3 * N), "Wi": (M, 3 * N)})

    def apply(p, h, x):
        gi = (x @ p["Wi"]).reshape(N, 3).T.reshape(3 * N)
        gh = (h @ p["Wh"]).reshape(N, 3).T.reshape(3 * N)
        h = _gru_gates(gi, gh, h)
        return h, h

    return Case(apply, params, 0.3 * jnp.ones(N), jnp.ones(M), None)


def scalar_gain_rnn():
    """``h' = g · tanh(K h + U x)`` with one scalar ``g``."""
    params = {**_normal(8, {"K": (N, N), "U": (N, M)}), "g": jnp.asarray(0.9)}

    def apply(p, h, x):
        h = p["g"] * jnp.tanh(p["K"] @ h + p["U"] @ x)
        return h, h

    return Case(apply, params, 0.3 * jnp.ones(N), jnp.ones(M), None)


def state_norm_cell():
    """An element-wise recurrence on a layer norm of the state: units mix outside any
    dense kernel."""
    params = _normal(9, {"U": (N, M), "w": (N,)})

    def apply(p, h, x):
        z = (h - jnp.mean(h)) / jnp.sqrt(jnp.var(h) + 1.0)
        h = jnp.tanh(p["U"] @ x + p["w"] * z)
        return h, h

    return Case(apply, params, 0.3 * jnp.arange(N, dtype=float), jnp.ones(M), None)


def control_flow_rnn():
    """A cell whose non-dense parts run through jit, lax.cond, lax.scan and a custom_jvp
    (softplus), and a fused 3-axis kernel read through a transpose."""
    params = _normal(10, {"K": (N, N), "T": (M, 2, N), "w": (N,)})

    @jax.jit
    def gate(z, x):
        return jax.lax.cond(x[0] > 0, lambda v: v, lambda v: 2.0 * v, z)

    def apply(p, h, x):
        u = jnp.transpose(p["T"], (2, 0, 1)).reshape(N, 2 * M) @ jnp.concatenate([x, -x])
        z = gate(p["K"] @ h + u, x)
        z = jax.lax.scan(lambda c, _: (c * p["w"], None), z, None, length=2)[0]
        h = 0.5 * jax.nn.softplus(z) + 0.1 * jnp.sin(h)
        return h, h

    roles = [Units(0, 0), Units(0, 2), Units(0, 0)]
    return Case(apply, params, 0.3 * jnp.ones(N), jnp.ones(M), roles)


VALID = {
    "control_flow_rnn": control_flow_rnn,
    "k_h_rnn": k_h_rnn,
    "dict_state_rnn": dict_state_rnn,
    "fused_gru_in_out": fused_gru_in_out,
    "fused_gru_out_in": fused_gru_out_in,
    "concat_lstm": concat_lstm,
    "peephole_lstm": peephole_lstm,
    "two_layer_gru": two_layer_gru,
    "nnx_gru": nnx_gru,
    "eqx_gru": eqx_gru,
    "embedded_rnn": embedded_rnn,
}
