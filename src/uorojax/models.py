"""Recurrent models in the ``apply_fn(params, state, x) -> (new_state, output)`` form.

A :class:`Model` pairs ``init(key, example_x) -> (params, state0)`` with ``apply`` and,
where the model provides one, the :class:`~uorojax.structure.Structure` of its recurrent
units (for SnAp-1 and KF-RTRL). The general case is any pure function; this module adds a
plain tanh RNN, adapters for ``flax.linen`` cells (single or stacked, with one-hot or
embedded token input and a dense readout), a cell with an element-wise recurrence, and
adapters for ``flax.nnx`` and Equinox modules, and the step losses the tasks use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from uorojax import checks
from uorojax.lru import LRUCell, lru_param_units
from uorojax.structure import DenseInput, RecurrentKernel, Structure, Units, plain_path

PyTree = Any


class Model(NamedTuple):
    """A recurrent model as two pure functions, and its structure where known.

    Attributes:
      init: ``(key, example_x) -> (params, state0)``.
      apply: ``(params, state, x) -> (new_state, output)`` for one time step.
      structure: the :class:`~uorojax.structure.Structure` of its recurrent units, or
        None (SnAp-1 and KF-RTRL need it; the other estimators do not).
    """

    init: Callable[[jax.Array, Any], tuple[PyTree, PyTree]]
    apply: Callable[[PyTree, PyTree, Any], tuple[PyTree, Any]]
    structure: Structure | None = None


# ----------------------------------------------------------------------------- losses


def softmax_cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Cross-entropy in nats of integer ``label`` under ``logits`` (one step).

    A negative label is an ignored target (``uorojax.tasks.IGNORE_LABEL``, the copy
    task's steps outside recall): its loss is 0 and so is its gradient. For a label in
    ``[0, num_classes)`` this is optax's ``softmax_cross_entropy_with_integer_labels``.

    Example::

      uorojax.softmax_cross_entropy(jnp.zeros(4), -1)  # 0.0
    """
    ignored = label < 0
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(ignored, 0, label))
    return jnp.where(ignored, jnp.zeros_like(loss), loss)


def squared_error(output: jax.Array, target: jax.Array) -> jax.Array:
    """``0.5 * ||output - target||²`` summed over the output."""
    return 0.5 * jnp.sum(jnp.square(output - target))


# ----------------------------------------------------------------------------- tanh RNN


def tanh_rnn(
    hidden_size: int,
    input_size: int,
    output_size: int,
    *,
    vocab_size: int | None = None,
    dtype: Any = jnp.float32,
) -> Model:
    r"""A vanilla RNN: :math:`h_t = \tanh(W h_{t-1} + U x_t + b)`, :math:`o_t = V h_t + c`.

    Params are ``{"W", "U", "b", "V", "c"}``, the state is ``h`` of shape
    ``(hidden_size,)``. Weights are scaled by ``1/sqrt(fan_in)``. With ``vocab_size``,
    inputs are integer tokens, one-hot encoded (``input_size`` must then equal it).

    Example::

      model = uorojax.tanh_rnn(8, 3, 2)
      params, h0 = model.init(jax.random.key(0), jnp.zeros(3))
      h1, out = model.apply(params, h0, jnp.ones(3))
    """

    def apply(params, h, x):
        h = jnp.tanh(params["W"] @ h + params["U"] @ x + params["b"])
        return h, params["V"] @ h + params["c"]

    return _dense_rnn(hidden_size, input_size, output_size, dtype, apply, vocab_size)


def leaky_rnn(
    hidden_size: int,
    input_size: int,
    output_size: int,
    *,
    tau: float,
    vocab_size: int | None = None,
    dtype: Any = jnp.float32,
) -> Model:
    r"""Murray's leaky RNN (Murray 2019, "Local online learning in recurrent networks with
    random feedback", eLife).

    .. math::
        u_t = W h_{t-1} + U x_t + b, \qquad
        h_t = (1 - 1/\tau)\, h_{t-1} + (1/\tau) \tanh(u_t), \qquad
        o_t = V h_t + c

    (Murray's readout ``C`` is ``V`` here.) Params, state and structure are those of
    :func:`tanh_rnn`, which is the case ``τ = 1``. RFLO (:func:`~uorojax.rflo`) is
    e-prop on this model.

    Args:
      hidden_size, input_size, output_size: the widths.
      tau: the time constant ``τ >= 1`` in steps.
      vocab_size: if set, inputs are integer tokens, one-hot encoded.
      dtype: of the params and state.

    Returns:
      A :class:`Model` with its :class:`~uorojax.structure.Structure` (the recurrent
      kernel ``W``, ``layer_inputs``).

    Example::

      model = uorojax.leaky_rnn(16, 3, 2, tau=5.0)
      params, h0 = model.init(jax.random.key(0))
    """
    tau = checks.non_negative_float("tau", tau)
    if tau < 1:
        raise checks.ConfigError(f"tau must be >= 1 (a time constant in steps), got {tau}")
    leak = 1.0 - 1.0 / tau

    def apply(params, h, x):
        u = params["W"] @ h + params["U"] @ x + params["b"]
        h = leak * h + jnp.tanh(u) / tau
        return h, params["V"] @ h + params["c"]

    return _dense_rnn(hidden_size, input_size, output_size, dtype, apply, vocab_size)


def _dense_rnn(hidden_size, input_size, output_size, dtype, step, vocab_size) -> Model:
    """The params ``{"W", "U", "b", "V", "c"}``, zero state and structure shared by
    :func:`tanh_rnn` and :func:`leaky_rnn` (one dense recurrent layer, ``W h + U x + b``),
    with the given step on vector inputs (one-hot tokens with ``vocab_size``)."""
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    input_size = checks.positive_int("input_size", input_size)
    output_size = checks.positive_int("output_size", output_size)
    if vocab_size is not None and vocab_size != input_size:
        raise checks.ConfigError(
            f"with vocab_size ({vocab_size}) the input is one-hot: input_size must equal it, "
            f"got {input_size}"
        )

    def encode(x):
        return x if vocab_size is None else jax.nn.one_hot(x, vocab_size, dtype=dtype)

    def apply(params, h, x):
        return step(params, h, encode(x))

    def init(key, example_x=None):
        del example_x
        k = jax.random.split(key, 4)

        def normal(key, shape, fan_in):
            return jax.random.normal(key, shape, dtype) / jnp.sqrt(jnp.asarray(fan_in, dtype))

        params = {
            "W": normal(k[0], (hidden_size, hidden_size), hidden_size),
            "U": normal(k[1], (hidden_size, input_size), input_size),
            "b": jnp.zeros((hidden_size,), dtype),
            "V": normal(k[2], (output_size, hidden_size), hidden_size),
            "c": jnp.zeros((output_size,), dtype),
        }
        return params, jnp.zeros((hidden_size,), dtype)

    def layer_inputs(params, h, x):
        inputs = {"W": h, "U": encode(x), "b": jnp.ones((), h.dtype), "V": None, "c": None}
        return [inputs[name] for name in sorted(params)]

    structure = Structure(
        param_units=lambda path, leaf: (
            Units(0, 0) if path[:1] in (("W",), ("U",), ("b",)) else None
        ),
        state_units=lambda path, leaf: 0,
        recurrent_kernels=(RecurrentKernel(("W",), ("b",), (), "out_in"),),
        layer_inputs=layer_inputs,
    )
    return Model(init, apply, structure)


# ----------------------------------------------------------------------------- flax linen


def symmetric_uniform(bound: float) -> nn.initializers.Initializer:
    """An initializer drawing uniformly on ``[-bound, bound]``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class ElementwiseMGUCell(nn.RNNCellBase):
    r"""A minimal gated unit whose recurrence is element-wise.

    .. math::
        f = \sigma(W_f x + u_f \odot h + b_f), \quad
        n = \tanh(W_n x + u_n \odot h + b_n), \quad
        h' = f \odot h + (1 - f) \odot n.

    The input maps ``W`` are dense, the recurrent weights ``u`` are vectors: unit i of
    ``h'`` depends on unit i of ``h`` alone, so ``∂h'/∂h`` is diagonal and SnAp-1 on
    this cell is exact RTRL at ``O(|Θ|)`` memory. Units mix across layers when stacked.
    Used like the flax cells (``linen_model("elementwise_mgu", ...)``).

    Attributes:
      features: number of units.
      gate_fn, activation_fn: σ and tanh by default.
      kernel_init: init of the input maps ``W``.
      recurrent_init: init of ``u`` (uniform on [-1, 1] by default).
      bias_init, forget_bias_init: init of ``b_n`` (zeros) and ``b_f`` (ones: the gate
        starts at σ(1) ≈ 0.73, keeping most of the state).
    """

    features: int
    gate_fn: Callable[..., Any] = nn.sigmoid
    activation_fn: Callable[..., Any] = nn.tanh
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    recurrent_init: nn.initializers.Initializer = symmetric_uniform(1.0)
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    forget_bias_init: nn.initializers.Initializer = nn.initializers.ones_init()
    carry_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, inputs):
        h = carry

        def recurrent(name):
            return self.param(name, self.recurrent_init, (self.features,), self.param_dtype)

        def dense(name, bias_init):
            return nn.Dense(
                self.features,
                kernel_init=self.kernel_init,
                bias_init=bias_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(inputs)

        f = self.gate_fn(dense("if", self.forget_bias_init) + recurrent("uf") * h)
        n = self.activation_fn(dense("in", self.bias_init) + recurrent("un") * h)
        new_h = f * h + (1.0 - f) * n
        return new_h, new_h

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        return self.carry_init(rng, (*input_shape[:-1], self.features), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


LINEN_CELLS = {
    "lstm": nn.LSTMCell,
    "optimized_lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
    "simple": nn.SimpleCell,
    "mgu": nn.MGUCell,
    "elementwise_mgu": ElementwiseMGUCell,
    "lru": LRUCell,
}


class RecurrentStack(nn.Module):
    """Stacked linen RNN cells between an input encoding and a dense readout.

    Attributes:
      cells: the cells, bottom first (``nn.LSTMCell(features=64)``, ...).
      num_outputs: width of the dense readout.
      vocab_size: if set, inputs are integer tokens in ``[0, vocab_size)``, one-hot
        encoded (or embedded when ``embed_dim`` is set).
      embed_dim: width of a learned embedding of the tokens.
    """

    cells: Sequence[nn.RNNCellBase]
    num_outputs: int
    vocab_size: int | None = None
    embed_dim: int | None = None

    def encode(self, x):
        if self.embed_dim is not None:
            return nn.Embed(self.vocab_size, self.embed_dim, name="embed")(x)
        if self.vocab_size is not None:
            return jax.nn.one_hot(x, self.vocab_size, dtype=self.cells[0].param_dtype)
        return x

    @nn.compact
    def __call__(self, carry, x):
        h = self.encode(x)
        new_carry = []
        for cell, c in zip(self.cells, carry):
            c, h = cell(c, h)
            new_carry.append(c)
        return tuple(new_carry), nn.Dense(self.num_outputs, name="readout")(h)


def _cell_kernels(cell: nn.RNNCellBase, layer: int) -> tuple[RecurrentKernel, ...] | None:
    """The recurrent kernels of one supported linen cell (None for another cell)."""
    base = ("params", f"cells_{layer}")

    def kernel(name, bias, state=()):
        return RecurrentKernel(
            (*base, name, "kernel"), (*base, bias, "bias"), (layer, *state), "in_out"
        )

    if isinstance(cell, (nn.LSTMCell, nn.OptimizedLSTMCell)):  # carry (c, h): h is [1]
        return tuple(kernel(f"h{g}", f"h{g}", (1,)) for g in "ifgo")
    if isinstance(cell, nn.GRUCell):
        return (kernel("hr", "ir"), kernel("hz", "iz"), kernel("hn", "hn"))
    if isinstance(cell, nn.SimpleCell):
        return (kernel("h", "i"),)
    if isinstance(cell, nn.MGUCell):
        return (kernel("hf", "if"), kernel("hn", "hn" if cell.reset_gate else "in"))
    if isinstance(cell, (ElementwiseMGUCell, LRUCell)):
        return ()
    return None


def _cell_preactivations(cell: nn.RNNCellBase) -> dict[str, str] | None:
    """For each dense module of one supported linen cell, the pre-activation it adds
    into (None for another cell, or one whose recurrence is not a dense kernel)."""
    if isinstance(cell, (nn.LSTMCell, nn.OptimizedLSTMCell)):
        return {f"{side}{gate}": gate for side in "ih" for gate in "ifgo"}
    if isinstance(cell, nn.GRUCell):  # n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        return {"ir": "r", "hr": "r", "iz": "z", "hz": "z", "in": "in", "hn": "hn"}
    if isinstance(cell, nn.SimpleCell):
        return {"i": "z", "h": "z"}
    if isinstance(cell, nn.MGUCell):
        return {"if": "f", "hf": "f", "in": "n", "hn": "hn" if cell.reset_gate else "n"}
    return None


def _stack_structure(cells, vocab_size, embed_dim) -> Structure | None:
    """The recurrent units of a :class:`RecurrentStack` (None if a cell is unknown)."""
    kernels = [_cell_kernels(cell, layer) for layer, cell in enumerate(cells)]
    if any(k is None for k in kernels):
        return None

    def param_units(path, leaf):
        if len(path) > 1 and str(path[1]).startswith("cells_"):
            layer = int(path[1][len("cells_") :])
            if isinstance(cells[layer], LRUCell):  # C, D feed the layer above, if any
                return lru_param_units(
                    path[2], layer, layer + 1 if layer + 1 < len(cells) else None
                )
            return Units(layer, jnp.ndim(leaf) - 1)
        if len(path) > 1 and path[1] == "embed":
            return Units(0, None)  # the embedding row of a token reaches every unit
        return None

    def encode(x):
        return jax.nn.one_hot(x, vocab_size) if vocab_size is not None else x

    leaf_inputs = None
    preactivations = _cell_preactivations(cells[0])
    if len(cells) == 1 and preactivations is not None and embed_dim is None:

        def leaf_inputs(params, state, x):  # dense module "i…" reads x, "h…" reads h
            h = jax.tree.leaves(state[0])[-1]  # an LSTM's carry is (c, h)
            vectors = {"h": h, "i": encode(x).astype(h.dtype)}
            out = []
            for path, _ in jax.tree_util.tree_leaves_with_path(params):
                keys = plain_path(path)
                if keys[1] != "cells_0":
                    out.append(None)
                    continue
                vector = jnp.ones((), h.dtype) if keys[-1] == "bias" else vectors[keys[2][0]]
                out.append(DenseInput(preactivations[keys[2]], vector))
            return out

    layer_inputs = None
    if leaf_inputs is not None and isinstance(cells[0], nn.SimpleCell):

        def layer_inputs(params, state, x):  # h = σ(x W_i + b_i + h W_h): one pre-activation
            return [None if d is None else d.vector for d in leaf_inputs(params, state, x)]

    return Structure(
        param_units=param_units,
        state_units=lambda path, leaf: path[0],
        recurrent_kernels=tuple(k for layer in kernels for k in layer),
        layer_inputs=layer_inputs,
        leaf_inputs=leaf_inputs,
    )


def torch7_init(params: PyTree, key: jax.Array, cells: Sequence[nn.RNNCellBase]) -> PyTree:
    """Re-initialises a :class:`RecurrentStack`'s params as the UORO authors' Torch7 code.

    Every dense kernel and its bias are drawn uniformly on ``±1/sqrt(fan_in)``, with
    ``fan_in`` the kernel's input width (Torch7's ``nn.Linear`` default); a learned
    embedding from N(0, 1); the forget-gate bias of LSTM cells is set to -0.3. Other
    leaves (an element-wise cell's recurrent vectors) keep their flax init.
    """
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params)
    keys = dict(zip(sorted(flat), jax.random.split(key, len(flat))))
    new = dict(flat)
    for path, leaf in flat.items():
        if path[-1] == "kernel":
            bound = 1.0 / jnp.sqrt(jnp.asarray(leaf.shape[0], leaf.dtype))
            new[path] = jax.random.uniform(keys[path], leaf.shape, leaf.dtype, -bound, bound)
            bias_path = (*path[:-1], "bias")
            if bias_path in flat:
                bias = flat[bias_path]
                new[bias_path] = jax.random.uniform(
                    keys[bias_path], bias.shape, bias.dtype, -bound, bound
                )
        elif path[-1] == "embedding":
            new[path] = jax.random.normal(keys[path], leaf.shape, leaf.dtype)
    for layer, cell in enumerate(cells):
        if isinstance(cell, (nn.LSTMCell, nn.OptimizedLSTMCell)):
            path = ("params", f"cells_{layer}", "hf", "bias")
            new[path] = jnp.full_like(flat[path], -0.3)
    return traverse_util.unflatten_dict(new)


INITS = ("flax", "torch7")


def from_linen_cells(
    cells: nn.RNNCellBase | Sequence[nn.RNNCellBase],
    num_outputs: int,
    *,
    vocab_size: int | None = None,
    embed_dim: int | None = None,
    init: str = "flax",
) -> Model:
    """Builds a :class:`Model` from one or several ``flax.linen`` RNN cells.

    The state is a tuple with one carry per layer (for LSTM cells each carry is the
    ``(c, h)`` pair). Inputs are float vectors, or integer tokens when ``vocab_size`` is
    given (one-hot, or a learned embedding of width ``embed_dim``). For the cells listed
    in ``LINEN_CELLS`` the model comes with its :class:`~uorojax.structure.Structure`.

    Args:
      cells: an unbound linen cell such as ``nn.GRUCell(features=64)``, or a sequence of
        them for a stack (LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell, MGUCell,
        ElementwiseMGUCell, LRUCell, or any other linen cell, without a structure).
      num_outputs: width of the dense readout (the vocabulary size for next-token
        prediction).
      vocab_size: number of input tokens, if inputs are integer tokens.
      embed_dim: embedding width; one-hot encoding when None.
      init: ``"flax"`` (the cells' own initialisers) or ``"torch7"`` (the UORO
        authors' convention, see :func:`torch7_init`).

    Returns:
      A :class:`Model`; ``init(key, example_x)`` returns ``(params, state0)`` with zero
      carries.

    Example::

      model = uorojax.from_linen_cells(nn.GRUCell(features=64), 10, vocab_size=10)
      params, state0 = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    """
    if isinstance(cells, nn.Module):
        cells = [cells]
    cells = tuple(cells)
    if not cells:
        raise checks.ConfigError("from_linen_cells needs at least one cell")
    for cell in cells:
        if not isinstance(cell, nn.RNNCellBase):
            raise TypeError(f"expected a flax.linen RNN cell, got {type(cell).__name__}")
    if embed_dim is not None and vocab_size is None:
        raise checks.ConfigError("embed_dim needs vocab_size")
    checks.one_of("init", init, INITS)
    module = RecurrentStack(cells, num_outputs, vocab_size, embed_dim)

    def input_width(example_x) -> int:
        if embed_dim is not None:
            return embed_dim
        if vocab_size is not None:
            return vocab_size
        return jnp.shape(example_x)[-1]

    def init_fn(key, example_x):
        carry_key, param_key = jax.random.split(key)
        width, carries = input_width(example_x), []
        for cell in cells:
            carries.append(cell.initialize_carry(carry_key, (width,)))
            width = cell.features
        state0 = tuple(carries)
        params = module.init(param_key, state0, example_x)
        if init == "torch7":
            params = torch7_init(params, param_key, cells)
        return params, state0

    return Model(init_fn, module.apply, _stack_structure(cells, vocab_size, embed_dim))


def linen_model(
    cell: str,
    hidden_size: int,
    num_outputs: int,
    *,
    num_layers: int = 1,
    vocab_size: int | None = None,
    embed_dim: int | None = None,
    init: str = "flax",
) -> Model:
    """A stack of ``num_layers`` linen cells named by ``cell`` (see ``LINEN_CELLS``).

    Convenience over :func:`from_linen_cells` for configs: ``linen_model("gru", 64, 10,
    vocab_size=10)``. For ``"lru"`` (:class:`~uorojax.LRUCell`) ``hidden_size`` is the
    number of complex units ``d_state``, and each layer's output keeps the width of the
    input (one-hot: ``vocab_size``).
    """
    checks.one_of("cell", cell, tuple(LINEN_CELLS))
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    num_layers = checks.positive_int("num_layers", num_layers)
    cells = [LINEN_CELLS[cell](features=hidden_size) for _ in range(num_layers)]
    return from_linen_cells(
        cells, num_outputs, vocab_size=vocab_size, embed_dim=embed_dim, init=init
    )


# ----------------------------------------------------------------------------- flat params


def ravel_params(apply_fn: Callable, params: PyTree) -> tuple[Callable, jax.Array, Callable]:
    """The same model over one flat parameter vector instead of a tree.

    Every estimator and optimizer then works on one buffer: the tangent update, the
    norms, the finiteness test and the optimizer step are one kernel each instead of one
    per parameter leaf (a flax LSTM has 14 leaves). The model reads its leaves as slices
    of the vector; parameter cotangents are concatenated into it. See
    docs/performance.md for when that pays (shared tangents, small steps, GPUs) and when
    it does not (per-stream tangents on a CPU, where the concatenation of B cotangents
    costs more than the kernels it saves). SnAp-1 and KF-RTRL read the params' tree and
    need the tree form.

    Args:
      apply_fn: ``(params, state, x) -> (new_state, output)``.
      params: the parameter tree.

    Returns:
      ``(flat_apply_fn, flat_params, unravel)``: ``unravel(flat_params)`` gives the tree
      back (for checkpoints, metrics and the final model).

    Example::

      apply_flat, theta, unravel = uorojax.ravel_params(model.apply, params)
      est = uorojax.uoro(*uorojax.as_one_system(apply_flat, loss_fn))
    """
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)

    def flat_apply(flat_params, state, x):
        return apply_fn(unravel(flat_params), state, x)

    return flat_apply, flat, unravel


# ----------------------------------------------------------------------------- nnx, equinox


def from_nnx(module: Any, initial_state: PyTree) -> tuple[PyTree, PyTree, Callable]:
    """Adapts a ``flax.nnx`` module whose ``__call__(state, x)`` returns ``(state, output)``.

    The module is split into its static graph, its ``nnx.Param`` leaves (the params that
    estimators differentiate) and any other variables (held fixed), then merged back on
    every step, so the returned ``apply_fn`` is pure.

    Args:
      module: an nnx module, for example an ``nnx.GRUCell`` or a user module that wraps
        a cell and a readout.
      initial_state: the module's initial recurrent state (``cell.initialize_carry``).

    Returns:
      ``(params, state0, apply_fn)``.

    Example::

      cell = nnx.GRUCell(3, 8, rngs=nnx.Rngs(0))
      params, h0, apply_fn = uorojax.from_nnx(cell, cell.initialize_carry((3,), nnx.Rngs(1)))
    """
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply_fn(params, state, x):
        return nnx.merge(graphdef, params, rest)(state, x)

    return params, initial_state, apply_fn


def from_equinox(module: Any, initial_state: PyTree) -> tuple[PyTree, PyTree, Callable]:
    """Adapts an Equinox module whose ``__call__(state, x)`` returns ``(state, output)``.

    The module is partitioned into its floating-point arrays (the params that
    estimators differentiate) and everything else (held fixed), then combined back on
    every step, so the returned ``apply_fn`` is pure. Needs ``equinox`` installed.

    Args:
      module: an ``equinox.Module``.
      initial_state: the module's initial recurrent state.

    Returns:
      ``(params, state0, apply_fn)``; ``params`` is a module-shaped pytree.

    Example::

      params, h0, apply_fn = uorojax.from_equinox(MyRNN(key), jnp.zeros(8))
    """
    import equinox as eqx

    params, static = eqx.partition(module, eqx.is_inexact_array)

    def apply_fn(params, state, x):
        return eqx.combine(params, static)(state, x)

    return params, initial_state, apply_fn
