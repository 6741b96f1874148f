"""Hand-written structures of the built-in models, as data, for the tests.

Each :class:`Case` is a built-in model at zero state with a one-hot input (a token), in
float64, and its structure written by hand as tables: a role per params path, a layer
per state path, the recurrent kernels, and, where the model has them, the vectors of
``layer_inputs``/``leaf_inputs`` named by their source (``"x"`` the one-hot input, ``"h"``
the layer's own old state, ``"below"`` the new state of the layer below, ``"1"`` a bias).
:func:`structure` builds the :class:`~uorojax.structure.Structure`; the mutation tests
change one field of the tables at a time. The built-in models will stop carrying their
hand-written structures: these tables are the tests' own copy.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import uorojax
from uorojax.models.structure import (
    DenseInput,
    Feedforward,
    RecurrentKernel,
    Units,
    from_roles,
    plain_path,
)

N, VOCAB, OUT = 3, 4, 2
LINEN = ("simple", "gru", "mgu", "lstm")


class Case(NamedTuple):
    """A model at zero state and one-hot input, and its hand-written structure."""

    apply: Any
    params: Any
    state: Any
    x: Any
    roles: dict  # params path -> role
    layers: dict  # state path -> layer
    kernels: tuple  # RecurrentKernel
    inputs: dict | None  # params path -> (pre-activation, source, layer)
    field: str | None  # "layer_inputs" or "leaf_inputs"


def structure(case: Case):
    """The :class:`~uorojax.structure.Structure` the tables of ``case`` describe."""
    extra = {}
    if case.inputs is not None:
        reader = _reader(case)
        if case.field == "leaf_inputs":
            extra["leaf_inputs"] = reader
        else:
            extra["layer_inputs"] = lambda p, s, x: [
                None if d is None else d.vector for d in reader(p, s, x)
            ]
    return from_roles(case.roles, case.layers, case.kernels, **extra)


def _reader(case: Case):
    layer_state = {}
    for path, layer in case.layers.items():
        layer_state[layer] = path  # the last state leaf of a layer: h (an LSTM's carry is (c, h))

    def vector(source, layer, new_state, params, state, x):
        h = state if layer_state[layer] == () else _get(state, layer_state[layer])
        if source == "1":
            return jnp.ones((), h.dtype)
        if source == "2":  # a mutation: a bias's vector scaled
            return 2 * jnp.ones((), h.dtype)
        if source in ("x", "x_shifted"):
            one_hot = jax.nn.one_hot(x, VOCAB, dtype=h.dtype)
            return jnp.roll(one_hot, 1) if source == "x_shifted" else one_hot
        if source in ("h", "h_shifted"):
            return jnp.roll(h, 1) if source == "h_shifted" else h
        return _get(new_state(), layer_state[layer - 1])  # "below": the layer below's new h

    def read(params, state, x):
        new_state = functools.cache(lambda: _new_state(case.apply)(params, state, x))
        out = []
        for path, _ in jax.tree_util.tree_leaves_with_path(params):
            entry = case.inputs.get(plain_path(path))
            if entry is None:
                out.append(None)
                continue
            name, source, layer = entry
            out.append(DenseInput(name, vector(source, layer, new_state, params, state, x)))
        return out

    return read


@functools.cache
def _new_state(apply):
    """``apply``'s new state, compiled once per model (the readers of its mutations share
    it)."""
    return jax.jit(lambda params, state, x: apply(params, state, x)[0])


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _float64(tree):
    return jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _paths(tree):
    return [plain_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


# ----------------------------------------------------------------------------- dense RNNs


def dense_rnn(leaky: bool = False) -> Case:
    """``tanh_rnn`` (or ``leaky_rnn``): ``h = tanh(W h + U x + b)``, readout ``V h + c``."""
    make = (lambda *a, **k: uorojax.leaky_rnn(*a, tau=3.0, **k)) if leaky else uorojax.tanh_rnn
    model = make(N, VOCAB, OUT, vocab_size=VOCAB, dtype=jnp.float64)
    params, h0 = model.init(jax.random.key(0))
    roles = {
        ("W",): Units(0, 0),
        ("U",): Units(0, 0),
        ("b",): Units(0, 0),
        ("V",): None,
        ("c",): None,
    }
    inputs = {("W",): ("layer", "h", 0), ("U",): ("layer", "x", 0), ("b",): ("layer", "1", 0)}
    kernels = (RecurrentKernel(("W",), ("b",), (), "out_in"),)
    return Case(
        model.apply, params, h0, jnp.asarray(1), roles, {(): 0}, kernels, inputs, "layer_inputs"
    )


# ----------------------------------------------------------------------------- linen cells

# For each cell: its recurrent kernels (kernel module, bias module, carry index or None),
# and the pre-activation each dense module feeds.
LINEN_KERNELS = {
    "simple": [("h", "i", None)],
    "gru": [("hr", "ir", None), ("hz", "iz", None), ("hn", "hn", None)],
    "mgu": [("hf", "if", None), ("hn", "hn", None)],
    "lstm": [(f"h{g}", f"h{g}", 1) for g in "ifgo"],
    "elementwise_mgu": [],
}
LINEN_PREACTIVATIONS = {
    "simple": {"i": "z", "h": "z"},
    "gru": {"ir": "r", "hr": "r", "iz": "z", "hz": "z", "in": "in", "hn": "hn"},
    "mgu": {"if": "f", "hf": "f", "in": "n", "hn": "hn"},
    "lstm": {f"{side}{gate}": gate for side in "ih" for gate in "ifgo"},
}


def linen(cell: str, layers: int = 1, embed_dim: int | None = None) -> Case:
    """``linen_model(cell, 3, 2, num_layers=layers, vocab_size=4, embed_dim=embed_dim)``:
    cells' leaves are ``Units(layer, last axis)``, a learned embedding ``Feedforward(0)``
    (it reaches layer 0 through the input kernels), the readout None; without an
    embedding, every dense module's vector is the one-hot input (``i…``, layer 0), the
    layer below's new h (``i…``, above) or the layer's own h (``h…``)."""
    model = uorojax.linen_model(
        cell, N, OUT, num_layers=layers, vocab_size=VOCAB, embed_dim=embed_dim
    )
    x = jnp.asarray(1)
    params, state = _float64(model.init(jax.random.key(0), x))
    roles = {}
    for path, leaf in zip(_paths(params), jax.tree.leaves(params)):
        layer = int(path[1][len("cells_") :]) if path[1].startswith("cells_") else None
        roles[path] = None if layer is None else Units(layer, leaf.ndim - 1)
        if path[1] == "embed":
            roles[path] = Feedforward(0)
    state_layers = {path: path[0] for path in _paths(state)}
    kernels = tuple(
        RecurrentKernel(
            ("params", f"cells_{layer}", k, "kernel"),
            ("params", f"cells_{layer}", b, "bias"),
            (layer,) if carry is None else (layer, carry),
            "in_out",
        )
        for layer in range(layers)
        for k, b, carry in LINEN_KERNELS[cell]
    )
    inputs = None
    if cell in LINEN_PREACTIVATIONS and embed_dim is None:
        inputs = {}
        for path in roles:
            if roles[path] is None:
                continue
            layer, module = roles[path].layer, path[2]
            if path[-1] == "bias":
                source = "1"
            elif module.startswith("h"):
                source = "h"
            else:
                source = "x" if layer == 0 else "below"
            inputs[path] = (f"{LINEN_PREACTIVATIONS[cell][module]}{layer}", source, layer)
    field = None if inputs is None else "leaf_inputs"
    return Case(model.apply, params, state, x, roles, state_layers, kernels, inputs, field)


# ----------------------------------------------------------------------------- LRU stack


def lru(num_layers: int = 2) -> Case:
    """``lru_stack(num_layers, 4, 3, 2, vocab_size=4)``: ``nu``, ``theta``, ``B`` are
    ``Units(l, 0)``; the encoder ``Feedforward(0)``; layer l's norm ``Feedforward(l)``, its
    ``C``, ``D``, GLU ``Feedforward(l + 1)`` (None on the top layer); the readout None."""
    model = uorojax.lru_stack(num_layers, 4, N, OUT, vocab_size=VOCAB)
    x = jnp.asarray(1)
    params, state = _float64(model.init(jax.random.key(0), x))
    roles = {}
    for path in _paths(params):
        part = path[1]
        if part == "encoder":
            roles[path] = Feedforward(0)
            continue
        if part == "readout":
            roles[path] = None
            continue
        layer = int(part[len("layers_") :])
        above = Feedforward(layer + 1) if layer + 1 < num_layers else None
        if path[2] == "norm":
            roles[path] = Feedforward(layer)
        elif path[2] == "lru" and path[3] in ("nu", "theta", "B_re", "B_im"):
            roles[path] = Units(layer, 0)
        else:
            roles[path] = above
    state_layers = {path: path[0] for path in _paths(state)}
    return Case(model.apply, params, state, x, roles, state_layers, (), None, None)


CASES = {
    "tanh_rnn": dense_rnn,
    "leaky_rnn": lambda: dense_rnn(leaky=True),
    **{f"linen_{cell}_{layers}": (lambda c=cell, n=layers: linen(c, n)) for cell in LINEN for layers in (1, 2)},
    "linen_gru_2_embedded": lambda: linen("gru", 2, embed_dim=2),
    "elementwise_mgu": lambda: linen("elementwise_mgu"),
    "lru_stack": lru,
}  # fmt: skip


# ----------------------------------------------------------------------------- mutations


class Mutation(NamedTuple):
    """One field of a case's tables changed: what, the mutated case, and the names of
    which the error must mention one (any ConfigError when empty)."""

    what: str
    case: Case
    blame: tuple


def _name(path) -> str:
    return "".join(f"[{k!r}]" for k in path)


def _other(values, current, fallback):
    others = [v for v in values if v != current]
    return others[0] if others else fallback


def role_mutations(case: Case) -> list[Mutation]:
    """Every params leaf's layer, axis, role and groups changed, one at a time."""
    shapes = dict(zip(_paths(case.params), (jnp.shape(a) for a in jax.tree.leaves(case.params))))
    present = sorted(set(case.layers.values()))
    out = []
    for path, role in case.roles.items():
        shape, blame = shapes[path], (_name(path),)

        def make(what, new, path=path, blame=blame):
            out.append(
                Mutation(
                    f"{_name(path)} {what}", case._replace(roles={**case.roles, path: new}), blame
                )
            )

        if isinstance(role, Units):
            make("layer", role._replace(layer=_other(present, role.layer, role.layer + 1)))
            make("axis", role._replace(axis=_other(range(len(shape)), role.axis, None)))
            make("groups", role._replace(groups=2))
            make("as Feedforward", Feedforward(role.layer))
            make("as None", None)
        elif isinstance(role, Feedforward):
            make("feeds", Feedforward(_other(present, role.feeds, role.feeds + 1)))
            make("as Units", Units(role.feeds, len(shape) - 1))
            make("as None", None)
        else:
            make("as Units", Units(0, len(shape) - 1))
            make("as Feedforward", Feedforward(0))
    return out


def state_mutations(case: Case) -> list[Mutation]:
    """Every state leaf's layer changed."""
    present = sorted(set(case.layers.values()))
    return [
        Mutation(
            f"state {_name(path)} layer",
            case._replace(layers={**case.layers, path: _other(present, layer, layer + 1)}),
            (),
        )
        for path, layer in case.layers.items()
    ]


def kernel_mutations(case: Case) -> list[Mutation]:
    """Every recurrent kernel dropped, or its kernel, bias, state or layout changed (a
    bias into another pre-activation)."""
    shapes = dict(zip(_paths(case.params), (jnp.shape(a) for a in jax.tree.leaves(case.params))))
    inputs = case.inputs or {}
    out = []
    for i, rk in enumerate(case.kernels):
        layer = case.roles[rk.kernel].layer
        same_layer = [p for p, r in case.roles.items() if isinstance(r, Units) and r.layer == layer]
        matrices = [p for p in same_layer if len(shapes[p]) == 2 and p != rk.kernel]
        matrices.sort(key=lambda p: shapes[p] != shapes[rk.kernel])  # square ones first
        pre = inputs.get(rk.bias, (None,))[0]
        biases = [p for p in same_layer if len(shapes[p]) == 1 and p != rk.bias
                  and (pre is None or inputs.get(p, (None,))[0] != pre)]  # fmt: skip
        states = [p for p in case.layers if p != rk.state]
        changed = {
            "kernel": matrices[0] if matrices else ("nowhere",),
            "bias": biases[0] if biases else ("nowhere",),
            "state": states[0] if states else (*rk.state, 0),
            "layout": "in_out" if rk.layout == "out_in" else "out_in",
        }
        rest = case.kernels[:i] + case.kernels[i + 1 :]
        blame = (_name(rk.kernel),)
        out.append(
            Mutation(f"kernel {_name(rk.kernel)} dropped", case._replace(kernels=rest), blame)
        )
        for field, value in changed.items():
            kernels = case.kernels[:i] + (rk._replace(**{field: value}),) + case.kernels[i + 1 :]
            names = blame + ((_name(value),) if field == "kernel" else ())
            out.append(
                Mutation(
                    f"kernel {_name(rk.kernel)} {field}", case._replace(kernels=kernels), names
                )
            )
    return out


SHIFTED = {"1": "2", "x": "x_shifted", "h": "h_shifted", "below": "h"}


def input_mutations(case: Case) -> list[Mutation]:
    """Every leaf input's vector changed (another vector of its shape, a bias's 1 scaled
    to 2, layer l's input read from its own old state instead of the new state below),
    and its pre-activation renamed to another one of its layer."""
    if case.inputs is None:
        return []
    out = []
    for path, (pre, source, layer) in case.inputs.items():
        names = sorted({p for p, _, lay in case.inputs.values() if lay == layer} - {pre})
        blame = (_name(path),)
        new = {**case.inputs, path: (pre, SHIFTED[source], layer)}
        out.append(Mutation(f"{_name(path)} vector {source}", case._replace(inputs=new), blame))
        if names:
            new = {**case.inputs, path: (names[0], source, layer)}
            out.append(Mutation(f"{_name(path)} pre-activation", case._replace(inputs=new), blame))
    return out


def mutations(case: Case) -> list[Mutation]:
    """Every single-field mutation of a case's structure."""
    return (
        role_mutations(case)
        + state_mutations(case)
        + kernel_mutations(case)
        + input_mutations(case)
    )
