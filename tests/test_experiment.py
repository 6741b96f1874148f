"""Experiment runs: resume equals uninterrupted, reproducibility, crash recovery, configs."""

import os
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest
from helpers import flat

from uorojax import ConfigError, experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**overrides):
    c = experiment.default_config()
    c.task = "anbn"
    c.task_args = {"k": 1, "l": 8}
    c.hidden_size = 8
    c.steps = 600
    c.chunk = 100
    c.log_every = 50
    c.checkpoint_every = 200
    c.quiet = True
    for k, v in overrides.items():
        c[k] = v
    return c


def read(path):
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"algorithm": "tbptt", "truncation": 4},
        {"num_streams": 3, "batch_mode": "shared", "num_samples": 2},
    ],
    ids=["uoro", "tbptt", "shared_streams"],
)
def test_resumed_run_equals_uninterrupted(tmp_path, overrides):
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    experiment.run(small_config(**overrides), whole)
    experiment.run(small_config(steps=200, **overrides), parts)
    experiment.run(small_config(steps=400, **overrides), parts)  # rerun: continues
    experiment.run(small_config(**overrides), parts)
    assert read(f"{whole}/metrics.csv") == read(f"{parts}/metrics.csv")
    ts_whole, _ = experiment.load_train_state(whole)
    ts_parts, _ = experiment.load_train_state(parts)
    assert int(ts_whole.step) == int(ts_parts.step) == 600
    for a, b in zip(jax.tree.leaves(ts_whole), jax.tree.leaves(ts_parts)):
        if not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(a, b)
    # Rerunning a finished run does no work and changes nothing.
    experiment.run(small_config(**overrides), parts)
    assert read(f"{whole}/metrics.csv") == read(f"{parts}/metrics.csv")


def test_same_seed_same_results_and_other_seed_differs(tmp_path):
    runs = [str(tmp_path / name) for name in ("a", "b", "c")]
    for path, seed in zip(runs, (0, 0, 1)):
        experiment.run(small_config(seed=seed, steps=200), path)
    assert read(f"{runs[0]}/metrics.csv") == read(f"{runs[1]}/metrics.csv")
    assert read(f"{runs[0]}/metrics.csv") != read(f"{runs[2]}/metrics.csv")
    p0, p1 = (flat(experiment.load_train_state(r)[0].params) for r in runs[:2])
    np.testing.assert_array_equal(p0, p1)
    for name in ("summary.json", "metrics.png", "config.json"):
        assert os.path.exists(f"{runs[0]}/{name}")
    assert any(f.startswith("events") for f in os.listdir(f"{runs[0]}/tb"))


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from orbax.checkpoint._src.path import atomicity
    from uorojax import experiment
    sys.path.insert(0, {tests!r})
    from test_experiment import small_config

    crash_at = int(sys.argv[2])
    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        # Everything is written to the temporary directory; die before the rename.
        if str(self.get_final()).endswith(os.sep + str(crash_at)):
            os._exit(17)
        return await original(self, *args, **kwargs)

    if crash_at:
        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    experiment.run(small_config(), sys.argv[1])
    """
)


def test_killed_while_checkpointing_resumes_from_previous_complete_one(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(tests=os.path.join(ROOT, "tests")))
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    crashed, clean = str(tmp_path / "crashed"), str(tmp_path / "clean")
    first = subprocess.run([sys.executable, script, crashed, "400"], env=env, capture_output=True)
    assert first.returncode == 17, first.stderr.decode()[-2000:]
    assert sorted(os.listdir(f"{crashed}/checkpoints")) != []
    complete = [d for d in os.listdir(f"{crashed}/checkpoints") if d.isdigit()]
    assert complete == ["200"], os.listdir(f"{crashed}/checkpoints")
    for path in (crashed, clean):
        done = subprocess.run([sys.executable, script, path, "0"], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert read(f"{crashed}/metrics.csv") == read(f"{clean}/metrics.csv")
    p_crashed = flat(experiment.load_train_state(crashed)[0].params)
    p_clean = flat(experiment.load_train_state(clean)[0].params)
    np.testing.assert_array_equal(p_crashed, p_clean)


def test_workdir_with_other_config_is_refused_unless_overwrite(tmp_path):
    path = str(tmp_path / "run")
    experiment.run(small_config(steps=100, checkpoint_every=100), path)
    with pytest.raises(ConfigError, match=r"different config \(fields \['hidden_size'\]"):
        experiment.run(small_config(steps=100, checkpoint_every=100, hidden_size=4), path)
    experiment.run(
        small_config(steps=100, checkpoint_every=100, hidden_size=4), path, overwrite=True
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lerning_rate", 0.1, "unknown config field 'lerning_rate'; did you mean 'learning_rate'"),
        ("algorithm", "bptt", "algorithm must be one of"),
        ("truncation", 0, "truncation must be >= 1"),
        ("hidden_size", 8.5, "'hidden_size' must be int"),
        ("eps", -1.0, "eps must be finite and >= 0"),
        ("chunk", 30, "multiple of log_every"),
        ("num_samples", 0, "num_samples must be >= 1"),
    ],
)
def test_bad_config_fields_are_named(field, value, message):
    # A config file may build any dict, so start from a plain (not type-safe) one.
    c = ml_collections.ConfigDict({**small_config().to_dict(), field: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        experiment.validate_config(c)


def test_influence_balancing_logs_theta(tmp_path):
    c = small_config(task="influence_balancing", optimizer="sgd", schedule="constant")
    c.task_args = {}
    c.learning_rate = 1e-5
    summary = experiment.run(c, str(tmp_path / "ib"))
    assert "theta" in summary["final_metrics_last_10pct"]
    assert summary["final_theta"] != 0.5


def test_shadow_rtrl_logs_gradient_agreement(tmp_path):
    c = small_config(steps=100, checkpoint_every=100, hidden_size=4, shadow_rtrl=True)
    final = experiment.run(c, str(tmp_path / "shadow"))["final_metrics_last_10pct"]
    assert -1.0 <= final["shadow_cosine"] <= 1.0 and final["shadow_norm_ratio"] > 0
    assert "shadow_cosine" in read(str(tmp_path / "shadow" / "metrics.csv")).splitlines()[0]
