"""The estimator registry: method strings, values read by their annotations (Literal and
Optional included), one block of hyperparameters per estimator, batch modes."""

import inspect
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import flat, regression_stream, tiny_rnn

import uorojax
from uorojax import ConfigError
from uorojax import runs as experiment
from uorojax.estimators import registry
from uorojax.tree import repeat_streams

LOSS = uorojax.squared_error


# ----------------------------------------------------------------------------- method strings


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("uoro", ("uoro", {})),
        ("uoro:", ("uoro", {})),
        ("uoro:truncation=16,num_samples=4", ("uoro", {"truncation": 16, "num_samples": 4})),
        ("uoro:eps=1e-5", ("uoro", {"eps": 1e-5})),
        ("ok:rank=8", ("ok", {"rank": 8})),
        ("tbptt:truncation=4,reduction=mean", ("tbptt", {"truncation": 4, "reduction": "mean"})),
        ("es_d_rtrl:decay=0.5", ("es_d_rtrl", {"decay": 0.5})),
    ],
)
def test_parse_method_reads_values_by_the_constructors_types(spec, expected):
    algorithm, values = registry.parse_method(spec)
    assert (algorithm, values) == expected
    for name, value in values.items():  # the declared type, not the text
        assert type(value) is type(registry.hyperparameter_defaults(algorithm)[name])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bptt", "algorithm must be one of"),
        ("uoro:rank=2", "uoro's hyperparameter must be one of ('truncation', 'eps', 'num_samples'), got 'rank'"),
        ("uoro:truncation=x", "'uoro:truncation=x': truncation must be an int, got 'x'"),
        ("uoro:eps=small", "'uoro:eps=small': eps must be a float, got 'small'"),
        ("rtrl:truncation=2", "rtrl's hyperparameter must be one of (), got 'truncation'"),
    ],
)  # fmt: skip
def test_parse_method_names_what_is_wrong(spec, message):
    with pytest.raises(ConfigError) as info:
        registry.parse_method(spec)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- the converter


@pytest.mark.parametrize(
    "text, annotation, value",
    [
        ("4", int, 4),
        ("4", float, 4.0),
        ("1e-5", float, 1e-5),
        ("true", bool, True),
        ("False", bool, False),
        ("mean", str, "mean"),
        ("mean", Literal["sum", "mean"], "mean"),
        ("2", Literal[1, 2, 4], 2),
        ("none", int | None, None),
        ("None", Literal["a"] | None, None),
        ("4", int | None, 4),
        ("2.5", int | float, 2.5),
        ("3", int | float, 3),
    ],
)
def test_text_is_read_by_its_annotation(text, annotation, value):
    got = registry.parse_value("h", text, annotation)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "value, annotation, expected",
    [
        (1, float, 1.0),
        (2, int, 2),
        (None, int | None, None),
        (3, int | None, 3),
        ("sum", Literal["sum", "mean"], "sum"),
        (True, bool, True),
    ],
)
def test_python_values_are_checked_against_their_annotation(value, annotation, expected):
    got = registry.check_value("h", value, annotation)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "read, value, annotation, message",
    [
        (registry.parse_value, "x", int, "h must be an int, got 'x'"),
        (registry.parse_value, "avg", Literal["sum", "mean"], "h must be one of 'sum', 'mean', got 'avg'"),
        (registry.parse_value, "3", Literal[1, 2], "h must be one of 1, 2, got '3'"),
        (registry.parse_value, "maybe", bool, "h must be a bool, got 'maybe'"),
        (registry.parse_value, "x", int | None, "h must be an int or None, got 'x'"),
        (registry.check_value, 2.5, int, "h must be an int, got 2.5"),
        (registry.check_value, True, int, "h must be an int, got True"),
        (registry.check_value, 1, bool, "h must be a bool, got 1"),
        (registry.check_value, "4", int, "h must be an int, got '4'"),
        (registry.check_value, 1, Literal["1"], "h must be one of '1', got 1"),
        (registry.check_value, None, int, "h must be an int, got None"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_named(read, value, annotation, message):
    with pytest.raises(ConfigError) as info:
        read("h", value, annotation)
    assert str(info.value) == message


def test_an_annotation_the_converter_cannot_read_is_a_declaration_error():
    with pytest.raises(TypeError, match="use int, float, bool, str, a Literal"):
        registry.check_value("h", [1], list)


@pytest.mark.parametrize("algorithm", sorted(registry.ESTIMATORS))
def test_every_default_passes_its_own_annotation(algorithm):
    for h in registry.hyperparameters(algorithm):
        assert registry.check_value(h.name, h.default, h.type) == h.default


# ----------------------------------------------------------------------------- one block each


def _conflicting(apply_fn, loss_fn, *, eps: float = 1e-3, mode: Literal["a", "b"] = "a",
                 width: int | None = None):  # fmt: skip
    """An estimator constructor whose eps default differs from UORO's, with a Literal and
    an optional hyperparameter."""
    return uorojax.rtrl(apply_fn, loss_fn)


@pytest.fixture
def with_conflicting(monkeypatch):
    monkeypatch.setitem(
        registry.ESTIMATORS, "conflicting", registry.EstimatorEntry(_conflicting, ("per_stream",))
    )


def test_a_default_belongs_to_one_estimator(with_conflicting):
    c = experiment.default_config()
    assert c.conflicting.eps == 1e-3 and c.uoro.eps == 1e-7
    assert c.ok.rank == inspect.signature(uorojax.ok).parameters["rank"].default
    for algorithm in registry.ESTIMATORS:
        assert c[algorithm].to_dict() == registry.hyperparameter_defaults(algorithm)


def test_literal_and_optional_hyperparameters_from_strings_and_configs(with_conflicting):
    spec = "conflicting:mode=b,width=none,eps=0.5"
    assert registry.parse_method(spec) == ("conflicting", {"mode": "b", "width": None, "eps": 0.5})
    assert registry.parse_method("conflicting:width=4")[1] == {"width": 4}
    base = {"algorithm": "conflicting", "hidden_size": 4}
    c = experiment.validate_config({**base, "conflicting": {"width": 4, "mode": "b"}})
    assert experiment.hyperparameters_of(c) == {"eps": 1e-3, "mode": "b", "width": 4}
    with pytest.raises(ConfigError, match="conflicting.mode must be one of 'a', 'b', got 'c'"):
        experiment.validate_config({**base, "conflicting": {"mode": "c"}})
    with pytest.raises(ConfigError, match="conflicting.width must be an int or None, got 'x'"):
        experiment.validate_config({**base, "conflicting": {"width": "x"}})


# ----------------------------------------------------------------------------- build_estimator


def test_build_estimator_refuses_a_hyperparameter_it_does_not_take_even_at_a_default():
    model, _, _ = tiny_rnn()
    with pytest.raises(ConfigError, match="rtrl does not take truncation .* hyperparameters are none"):  # fmt: skip
        registry.build_estimator("rtrl", model.apply, LOSS, truncation=1)
    with pytest.raises(ConfigError, match="uoro does not take rank"):
        registry.build_estimator("uoro", model.apply, LOSS, rank=1)


@pytest.mark.parametrize("algorithm", ["tbptt", "uoro"])
def test_a_shared_windowed_estimator_of_several_streams_is_the_batch_as_one_system(algorithm):
    """``build_estimator(..., num_streams=B, batch_mode="shared")`` of a windowed estimator
    sizes its window buffers for the batch: it trains as the estimator built by hand on
    ``as_one_system`` with the batch's example step."""
    model, params, h0 = tiny_rnn()
    xs, ys = regression_stream(12)
    streams = 3
    xb = jnp.stack([xs, 0.5 * xs, -xs], axis=1)
    yb = jnp.stack([ys, ys, 0.1 * ys], axis=1)
    h0s = repeat_streams(h0, streams)
    built = registry.build_estimator(
        algorithm, model.apply, LOSS, num_streams=streams, batch_mode="shared", truncation=3,
        example_x=xs[0], example_y=ys[0],
    )  # fmt: skip
    by_hand = registry.ESTIMATORS[algorithm].constructor(
        *uorojax.as_one_system(model.apply, LOSS), truncation=3,
        example_x=xb[0], example_y=yb[0],
    )  # fmt: skip
    assert built.window == by_hand.window == 3
    results = []
    for est in (built, by_hand):
        trainer = uorojax.make_trainer(est, optax.sgd(0.1))
        ts, metrics = trainer.run(trainer.init(params, h0s, jax.random.key(0)), xb, yb)
        results.append((flat(ts.params), np.asarray(metrics["loss"])))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)
    assert float(np.abs(results[0][0] - flat(params)).max()) > 0  # it trained
