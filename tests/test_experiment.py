"""Experiment runs: resume equals uninterrupted, reproducibility, crash recovery, configs."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest
from helpers import flat

from uorojax import ConfigError
from uorojax import runs as experiment
from uorojax.training.metric_log import MetricLogger, read_rows

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
    "overrides, stops",
    [
        ({}, (200, 400)),
        ({"algorithm": "tbptt", "tbptt": {"truncation": 4}}, (200, 400)),
        ({"num_streams": 3, "batch_mode": "shared", "uoro": {"num_samples": 2}}, (200, 400)),
        (
            {"algorithm": "uoro", "uoro": {"truncation": 4}, "num_seeds": 2, "steps": 652, "log_every": 7,
             "checkpoint_every": 250, "chunk": 96},
            (132, 476),
        ),
    ],
    ids=["uoro", "tbptt", "shared_streams", "truncated_uoro_seeds_odd_counts"],
)  # fmt: skip
def test_resumed_run_equals_uninterrupted(tmp_path, overrides, stops):
    """Stopped at counts that are not multiples of the chunk, log interval or checkpoint
    spacing, and resumed, a run ends exactly as an uninterrupted one."""
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    experiment.run(small_config(**overrides), whole)
    for stop in stops:  # each rerun continues the last
        experiment.run(small_config(**{**overrides, "steps": stop}), parts)
    experiment.run(small_config(**overrides), parts)
    assert read(f"{whole}/metrics.csv") == read(f"{parts}/metrics.csv")
    ts_whole, _ = experiment.load_train_state(whole)
    ts_parts, _ = experiment.load_train_state(parts)
    steps = small_config(**overrides).steps
    assert int(np.ravel(ts_whole.step)[0]) == int(np.ravel(ts_parts.step)[0]) == steps
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
    from uorojax import runs as experiment
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
        ("uoro", {"truncation": 0}, "truncation must be >= 1"),
        ("hidden_size", 8.5, "'hidden_size' must be int"),
        ("uoro", {"eps": -1.0}, "eps must be finite and >= 0"),
        ("init", "torch", "init must be one of ('flax', 'torch7')"),
        ("uoro", {"num_samples": 0}, "num_samples must be >= 1"),
        ("uoro", {"truncation": 2.5}, "uoro.truncation must be an int, got 2.5"),
        ("uoro", {"rank": 2}, "unknown config field 'uoro.rank'"),
        ("rank", 2, "config field 'rank' moved: use c.ok.rank = 2"),
    ],
)
def test_bad_config_fields_are_named(field, value, message):
    # A config file may build any dict, so start from a plain (not type-safe) one.
    c = ml_collections.ConfigDict({**small_config().to_dict(), field: value})
    with pytest.raises(ConfigError, match=re.escape(message)):
        experiment.build(c)


def test_windowed_counts_that_cannot_work_name_the_nearest_valid_values():
    c = small_config(algorithm="tbptt", tbptt={"truncation": 16}, steps=1000)
    with pytest.raises(
        ConfigError,
        match=r"steps \(1000\) must be a whole number of tbptt windows \(truncation 16\): use 992 or 1008",
    ):
        experiment.build(c)
    plan = experiment.build(
        small_config(algorithm="tbptt", tbptt={"truncation": 16}, steps=992, checkpoint_every=250)
    ).plan
    assert plan.checkpoint_every == 256 and plan.chunk == 96
    assert plan.notices[0].startswith("notice: chunk 100 moved to 96")


@pytest.mark.parametrize("algorithm", ["rtrl", "uoro"])
def test_influence_balancing_converges_to_the_fixed_point(tmp_path, algorithm):
    c = experiment.config_from_file(os.path.join(ROOT, "configs/influence_balancing.py"))
    c.algorithm, c.quiet, c.chunk, c.log_every = algorithm, True, 10_000, 10_000
    c.num_seeds = 2 if algorithm == "uoro" else 1
    summary = experiment.run(c, str(tmp_path / "ib"))
    np.testing.assert_allclose(summary["final_theta"], -1.0 / 6.0, atol=2e-3)
    assert "theta" in summary["final_metrics_last_10pct"]


def test_shadow_rtrl_logs_gradient_agreement(tmp_path):
    cosine = {}
    for algorithm in ("rtrl", "uoro"):
        c = small_config(steps=100, checkpoint_every=100, hidden_size=4, shadow_rtrl=True,
                         algorithm=algorithm)  # fmt: skip
        experiment.run(c, str(tmp_path / algorithm))
        rows = read_rows(str(tmp_path / algorithm / "metrics.csv"))
        cosine[algorithm] = np.array([float(r["shadow_cosine"]) for r in rows])
    np.testing.assert_allclose(cosine["rtrl"], 1.0, rtol=1e-6)  # the exact gradient itself
    assert cosine["uoro"].min() < 0.99  # one noisy estimate is not


def test_the_authors_running_metrics(tmp_path):
    """cumulative = the mean bits/char since the start; recent r ← r(1 − 1/√t) + L_t/√t."""
    c = small_config(steps=300, log_every=1, chunk=64, checkpoint_every=300)
    summary = experiment.run(c, str(tmp_path / "run"))
    rows = read_rows(str(tmp_path / "run" / "metrics.csv"))
    bits = np.array([float(r["bits_per_char"]) for r in rows])
    t = np.arange(1, len(bits) + 1)
    np.testing.assert_allclose(
        [float(r["cumulative_bits_per_char"]) for r in rows], np.cumsum(bits) / t, rtol=1e-6
    )
    recent, expected = 0.0, []
    for step, value in zip(t, bits):
        recent = recent * (1 - 1 / np.sqrt(step)) + value / np.sqrt(step)
        expected.append(recent)
    np.testing.assert_allclose(
        [float(r["recent_bits_per_char"]) for r in rows], expected, rtol=1e-6
    )
    assert summary["final_running_metrics"]["recent_bits_per_char"] == pytest.approx(
        expected[-1], rel=1e-6
    )


# ----------------------------------------------------------------------------- command line


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.lerning_rate=0.1"], "error: unknown config field 'lerning_rate'; did you mean 'learning_rate'?"),
        (["--config.algorithm=tbptt", "--config.tbptt.truncation=16", "--config.steps=1000"], "error: steps (1000) must be a whole number of tbptt windows (truncation 16): use 992 or 1008"),
        (["--config=configs/missing.py"], "error: config file 'configs/missing.py' does not exist"),
    ],
)  # fmt: skip
def test_command_line_errors_are_one_line_with_status_2(tmp_path, args, message):
    result = _cli("--config", "configs/anbn.py", "--workdir", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-2000:]


def test_debug_shows_the_traceback(tmp_path):
    debug = _cli(
        "--config", "configs/anbn.py", "--workdir", str(tmp_path / "run"),
        "--config.lerning_rate=0.1", "--debug",
    )  # fmt: skip
    assert debug.returncode != 0 and "Traceback" in debug.stderr, debug.stderr[-2000:]
    assert "lerning_rate" in debug.stderr


def test_command_line_run_shows_characters_and_steps(tmp_path):
    result = _cli(
        "--config", "configs/anbn.py", "--workdir", str(tmp_path / "run"),
        "--config.steps=200", "--config.num_streams=4", "--config.hidden_size=8",
        "--config.algorithm=uoro", "--config.uoro.truncation=4", "--config.chunk=100",
        "--config.log_every=50",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "800/800" in result.stderr and "char/s" in result.stderr  # 200 steps x 4 streams
    assert "step 200/200" in result.stderr
    assert "bits_per_char=" in result.stdout


SHARDED_SCRIPT = textwrap.dedent(
    """
    import os, sys, jax
    from uorojax import runs as experiment
    from uorojax.training.metric_log import read_rows
    sys.path.insert(0, {tests!r})
    from test_experiment import small_config
    assert jax.device_count() == 4, jax.devices()
    rows = {{}}
    for shard in (True, False):
        c = small_config(num_streams=4, steps=200, shard_streams=shard)
        experiment.run(c, os.path.join(sys.argv[1], str(shard)))
        rows[shard] = read_rows(os.path.join(sys.argv[1], str(shard), "metrics.csv"))
    ts, _ = experiment.load_train_state(os.path.join(sys.argv[1], "True"))
    carried = [a for a in jax.tree.leaves(ts.carry) if a.ndim and a.shape[0] == 4]
    assert rows[True] and len(rows[True]) == len(rows[False])
    for a, b in zip(rows[True], rows[False]):
        for key in a:
            assert abs(float(a[key]) - float(b[key])) <= 1e-5 * (1 + abs(float(b[key]))), (key, a, b)
    print("sharded ok", len(rows[True]))
    """
)


def test_sharded_streams_inside_experiment_run(tmp_path):
    """``experiment.run`` splits the streams over 4 (simulated) devices and logs what one
    device does."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT.format(tests=os.path.join(ROOT, "tests")))
    env = {
        **os.environ,
        "PYTHONPATH": os.path.join(ROOT, "src"),
        "JAX_PLATFORMS": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "XLA_FLAGS": (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
        ).strip(),
    }
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded ok" in result.stdout


def test_skipped_steps_stay_out_of_the_loss_columns_and_running_losses():
    logger = MetricLogger(log_every=4, num_seeds=1, cross_entropy=False)
    loss = np.array([1.0, np.nan, 3.0, 5.0, 2.0, 4.0])
    skipped = np.array([False, True, False, False, False, False])
    rows = logger.add({"loss": loss, "skipped": skipped.astype(np.float32)}, 0)
    assert len(rows) == 1 and float(rows[0]["loss"]) == pytest.approx(3.0)  # (1 + 3 + 5) / 3
    assert float(rows[0]["skipped"]) == pytest.approx(0.25)
    assert float(rows[0]["cumulative_loss"]) == pytest.approx(3.0)
    partial = logger.partial_rows(6)[0]
    assert float(partial["cumulative_loss"]) == pytest.approx(3.0)  # (1 + 3 + 5 + 2 + 4) / 5
    assert np.isfinite(float(partial["recent_loss"]))
