"""The model table: what a config's ``model`` names, as
:data:`~uorojax.estimators.registry.ESTIMATORS` is for its ``algorithm``.

Every model is a :class:`ModelEntry`: a builder of a next-symbol model over a task's
vocabulary, and the config fields it reads with their defaults. A run's config holds
the fields of every entry (one default per name); a field the chosen model does not
read must keep its default, so that nothing is set that silently does nothing. A new
model is one builder and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from uorojax import checks
from uorojax.models.dense import leaky_rnn
from uorojax.models.library_cells import eqx_gru, jax_gru, nnx_gru
from uorojax.models.linen import LINEN_CELLS, linen_model
from uorojax.models.lru_stack import lru_stack
from uorojax.models.model import Model


class ModelEntry(NamedTuple):
    """One model a config can name.

    Attributes:
      build: ``(vocab_size, **fields) -> Model``: reads integer symbols in
        ``[0, vocab_size)`` and predicts the next one (``vocab_size`` logits).
      fields: the config fields it reads, with their defaults (what ``build`` takes).
    """

    build: Callable[..., Model]
    fields: dict[str, Any]


_LAYERS = {"hidden_size": 64, "num_layers": 1}  # units (LRU: complex state units) per layer


def _linen(cell: str) -> Callable[..., Model]:
    def build(vocab_size, *, hidden_size, num_layers, embed_dim, init):
        return linen_model(
            cell,
            hidden_size,
            vocab_size,
            num_layers=num_layers,
            vocab_size=vocab_size,
            embed_dim=embed_dim or None,  # 0: one-hot input
            init=init,
        )

    return build


def _lru_stack(vocab_size, *, hidden_size, num_layers, model_dim) -> Model:
    d_model = model_dim or hidden_size  # 0: the width of the state
    return lru_stack(num_layers, d_model, hidden_size, vocab_size, vocab_size=vocab_size)


def _library_gru(build: Callable[[int, int], Model]) -> Callable[..., Model]:
    def gru(vocab_size, *, hidden_size):  # one layer, one-hot input, no structure written
        return build(hidden_size, vocab_size)

    return gru


def _jax_gru(vocab_size, *, hidden_size, num_layers) -> Model:  # one-hot input
    return jax_gru(hidden_size, vocab_size, num_layers=num_layers)


def _leaky_rnn(vocab_size, *, hidden_size, tau) -> Model:  # one layer
    return leaky_rnn(hidden_size, vocab_size, vocab_size, tau=tau, vocab_size=vocab_size)


MODELS: dict[str, ModelEntry] = {
    **{
        cell: ModelEntry(_linen(cell), {**_LAYERS, "embed_dim": 0, "init": "flax"})
        for cell in LINEN_CELLS
    },
    "lru_stack": ModelEntry(_lru_stack, {**_LAYERS, "model_dim": 0}),
    "leaky_rnn": ModelEntry(_leaky_rnn, {"hidden_size": _LAYERS["hidden_size"], "tau": 1.0}),
    "nnx_gru": ModelEntry(_library_gru(nnx_gru), {"hidden_size": _LAYERS["hidden_size"]}),
    "eqx_gru": ModelEntry(_library_gru(eqx_gru), {"hidden_size": _LAYERS["hidden_size"]}),
    "jax_gru": ModelEntry(_jax_gru, dict(_LAYERS)),
}
"""A config's ``model`` -> its :class:`ModelEntry`: the ``flax.linen`` cells of
:data:`~uorojax.models.LINEN_CELLS` (one-hot or embedded input, ``init`` flax or the
UORO authors' torch7), a deep LRU stack (``model_dim``: its residual width, 0 for
``hidden_size``), Murray's leaky RNN (``tau``: its time constant in steps), and the GRU
cells of ``flax.nnx`` and Equinox (``nnx_gru``, ``eqx_gru``) and a GRU stack in plain
JAX (``jax_gru``): one-hot input, their structure inferred
(:mod:`~uorojax.models.library_cells`)."""


def model_fields() -> dict[str, Any]:
    """Every field a model of :data:`MODELS` reads, with its default (what a config
    holds).

    Raises:
      TypeError: if two models declare one field with different defaults.
    """
    fields: dict[str, Any] = {}
    for name, entry in MODELS.items():
        for field, default in entry.fields.items():
            if fields.setdefault(field, default) != default:
                raise TypeError(
                    f"model {name!r} declares {field} = {default!r}, another "
                    f"{fields[field]!r}: a config field has one default"
                )
    return fields


def build_model(name: str, vocab_size: int, **fields: Any) -> Model:
    """The model ``name`` of :data:`MODELS` over ``vocab_size`` symbols, from the fields
    it reads (the others are ignored: :func:`unread_fields` names those that are set).

    Example::

      model = uorojax.models.registry.build_model("gru", 10, hidden_size=32)
    """
    entry = MODELS[checks.one_of("model", name, tuple(MODELS))]
    return entry.build(vocab_size, **{**entry.fields, **_known(entry, fields)})


def _known(entry: ModelEntry, fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k in entry.fields}


def unread_fields(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``fields`` that model ``name`` does not read but that differ from
    their defaults (:func:`model_fields`).

    Example::

      unread_fields("leaky_rnn", {"num_layers": 2, "tau": 4.0})  # {'num_layers': 2}
    """
    entry = MODELS[checks.one_of("model", name, tuple(MODELS))]
    defaults = model_fields()
    return {k: v for k, v in fields.items() if k not in entry.fields and v != defaults.get(k, v)}
