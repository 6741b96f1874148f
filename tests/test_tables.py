"""The task and model tables a config names: what each entry declares, the copy task's
curriculum hook, the floors, influence balancing through the same interface as the
others, and the linen cells' layouts."""

import math
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import uorojax
from uorojax import ConfigError, tasks
from uorojax.models import registry as models
from uorojax.models.linen_structure import CELL_LAYOUTS, cell_layout
from uorojax.tasks.registry import TASKS, Floors, floors

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "uorojax")


# ----------------------------------------------------------------------------- the copy task


def _chunk(recall_bits, recall_share=0.25, steps=8):
    """A chunk's per-step metrics whose loss per recall step is ``recall_bits``."""
    nats = recall_bits * math.log(2.0) * recall_share  # the mean over all steps
    return {
        "loss": np.full(steps, nats),
        "recall": np.full(steps, recall_share),
        "skipped": np.zeros(steps),
    }


def test_the_copy_curriculum_reads_the_recall_loss_in_bits():
    """0.2 bits per recall step (0.139 nats) is above the 0.15-bit threshold; 0.1 bits
    is below it."""
    hook = TASKS["copy"].curriculum
    stream = tasks.Copy(2, 4, curriculum=True, threshold_bits=0.15)
    hook(stream, _chunk(0.2))
    assert stream.length == 2
    hook(stream, _chunk(0.1))
    assert stream.length == 3


def test_the_copy_curriculum_reports_the_length_the_chunk_was_trained_at():
    hook = TASKS["copy"].curriculum
    stream = tasks.Copy(2, 4, curriculum=True)
    reported = hook(stream, _chunk(0.0))
    assert stream.length == 3  # advanced for the next chunk
    np.testing.assert_array_equal(reported["length"], np.full(8, 2.0))


def test_the_copy_curriculum_skips_the_steps_the_trainer_dropped():
    hook = TASKS["copy"].curriculum
    stream = tasks.Copy(2, 4, curriculum=True)
    metrics = _chunk(0.0)
    metrics["loss"][:4] = 100.0  # dropped steps: their loss does not count
    metrics["skipped"][:4] = 1
    hook(stream, metrics)
    assert stream.length == 3


# ----------------------------------------------------------------------------- floors


@pytest.mark.parametrize(
    "task, args, optimum, no_memory",
    [  # docs/tasks.md
        ("anbn", {"k": 1, "l": 32}, 0.143, 0.286),
        ("distant_brackets", {"min_filler": 5, "max_filler": 5, "save": 1, "alphabet": 10}, 1.661, 1.938),
        ("distant_brackets", {"min_filler": 2, "max_filler": 7, "save": 3, "alphabet": 10}, 1.774, 2.417),
        ("distant_brackets", {"min_filler": 0, "max_filler": 0, "save": 10, "alphabet": 8}, 1.200, 2.400),
        ("delayed_copy", {"delay": 3, "vocab_size": 4}, 0.0, 2.0),
    ],
)  # fmt: skip
def test_the_floors_of_the_character_tasks(task, args, optimum, no_memory):
    found = floors(task, **args)
    assert found.metric == "bits_per_char"
    assert found.optimum == pytest.approx(optimum, abs=5e-4)
    assert found.no_memory == pytest.approx(no_memory, abs=5e-4)


def test_the_copy_task_floors_are_per_recall_step_and_influence_balancing_has_none():
    assert floors("copy", length=5, vocab=8) == Floors("recall_bits_per_char", 0.0, 3.0)
    assert floors("text") == Floors("bits_per_char", None, None)
    assert floors("influence_balancing") is None


def test_no_memory_floor_is_met_by_a_model_that_forgets_the_saved_character():
    """Distant brackets (0, 0, 1, 2): a model that knows everything but the saved
    character guesses its copy: one bit more per record than the optimum."""
    stream = tasks.DistantBrackets(0, 0, 1, 2)
    record = 2 * 1 + 5 + 0
    assert stream.no_memory_bits_per_char - stream.best_bits_per_char == pytest.approx(1 / record)


# ----------------------------------------------------------------------------- influence balancing


def test_influence_balancing_is_built_through_the_task_interface():
    entry = TASKS["influence_balancing"]
    problem = tasks.influence_balancing()
    model = entry.model(n=23, num_positive=10, theta0=0.5)
    stream = tasks.make_stream("influence_balancing", seed=3, num_streams=2)
    x, y = stream.example()
    params, state0 = model.init(jax.random.key(0), x[0])
    assert float(params["theta"]) == 0.5
    np.testing.assert_array_equal(state0, problem.state0)
    state, output = model.apply(params, state0, x[0])
    expected_state, expected = problem.model.apply(problem.params, problem.state0, x[0])
    np.testing.assert_array_equal(state, expected_state)
    assert float(entry.loss(output, y[0])) == float(problem.loss_fn(expected, y[0]))
    assert entry.bits is False and entry.param_metrics["theta"](params) == params["theta"]
    with pytest.raises(ConfigError, match="bad arguments for task 'influence_balancing'"):
        tasks.make_stream("influence_balancing", seed=0, thetao=1.0)
    with pytest.raises(ConfigError, match=r"num_positive must be in \[0, n\]"):
        tasks.make_stream("influence_balancing", seed=0, n=3, num_positive=4)


def test_every_task_declares_a_loss_and_the_symbol_tasks_read_the_configs_model():
    for name, entry in TASKS.items():
        assert callable(entry.loss), name
        assert (entry.model is None) == (name in tasks.SYMBOL_TASKS), name
    assert TASKS["anbn"].loss is uorojax.softmax_cross_entropy
    assert TASKS["influence_balancing"].loss is not uorojax.softmax_cross_entropy


# ----------------------------------------------------------------------------- models


def test_the_model_fields_have_one_default_and_unread_ones_are_named():
    fields = models.model_fields()
    assert fields["hidden_size"] == 64 and fields["tau"] == 1.0
    assert models.unread_fields("leaky_rnn", {"num_layers": 2, "tau": 4.0}) == {"num_layers": 2}
    assert models.unread_fields("lru_stack", {"embed_dim": 4, "init": "flax"}) == {"embed_dim": 4}
    assert models.unread_fields("gru", {"embed_dim": 4, "init": "torch7"}) == {}


def test_conflicting_model_defaults_are_a_declaration_error(monkeypatch):
    entry = models.MODELS["leaky_rnn"]
    monkeypatch.setitem(
        models.MODELS, "wide", models.ModelEntry(entry.build, {**entry.fields, "hidden_size": 128})
    )
    with pytest.raises(TypeError, match="declares hidden_size = 128"):
        models.model_fields()


@pytest.mark.parametrize("name", ["simple", "lstm", "lru_stack", "leaky_rnn"])
def test_a_table_model_reads_symbols_and_predicts_the_next(name):
    model = models.build_model(name, 5, hidden_size=4)
    params, state = model.init(jax.random.key(0), jnp.zeros((), jnp.int32))
    _, logits = model.apply(params, state, jnp.asarray(3))
    assert logits.shape == (5,)


def test_every_linen_cell_has_a_layout_and_a_subclass_has_none():
    for cell in uorojax.models.LINEN_CELLS.values():
        assert type(cell(features=2)) in CELL_LAYOUTS

    class OwnGRU(nn.GRUCell):
        pass

    assert cell_layout(OwnGRU(features=2)) is None
    assert uorojax.from_linen_cells(OwnGRU(features=2), 3).structure is None
    assert cell_layout(nn.MGUCell(features=2, reset_gate=False)).kernels[1] == ("hn", "in", ())


def test_the_torch7_forget_gate_bias_comes_from_the_layout():
    assert cell_layout(nn.LSTMCell(features=2)).forget_gate == "hf"
    assert cell_layout(nn.GRUCell(features=2)).forget_gate is None
    params, _ = uorojax.linen_model("optimized_lstm", 4, 3, vocab_size=3, init="torch7").init(
        jax.random.key(0), jnp.zeros((), jnp.int32)
    )
    np.testing.assert_array_equal(params["params"]["cells_0"]["hf"]["bias"], np.float32(-0.3))


# ----------------------------------------------------------------------------- no dispatch


@pytest.mark.parametrize(
    "folder, pattern",
    [
        ("runs", r"\bhasattr\(|getattr\([^)]*None\)"),
        ("tasks/registry.py", r"\bisinstance\(|\bhasattr\("),
        ("models/registry.py", r"\bisinstance\(|\bhasattr\("),
        ("models/linen_structure.py", r"\bisinstance\(|\bhasattr\("),
        ("runs/build.py", r'== "influence_balancing"|c\.model (==|in) '),
    ],
)
def test_tasks_and_models_are_read_from_their_tables_not_by_type(folder, pattern):
    path = os.path.join(SRC, folder)
    files = [path] if path.endswith(".py") else [os.path.join(path, f) for f in os.listdir(path)]
    for name in (f for f in files if f.endswith(".py")):
        text = open(name).read()
        assert not re.search(pattern, text), (name, re.search(pattern, text).group(0))
