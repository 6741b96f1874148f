"""What a new user of the runner meets: the config's spelling (an estimator's
hyperparameters in its own block), errors that speak the interface in use (flags on the
command line, Python in Python), help, the default config from any directory, a failed
run that leaves its workdir as it found it, and the floors in ``metrics.png``."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest
from test_experiment import ROOT, _cli, small_config

from uorojax import ConfigError
from uorojax import runs as experiment
from uorojax.runs import runner
from uorojax.runs.config import RunError, Setting
from uorojax.runs.workdir import _prepare_workdir
from uorojax.training.metric_log import read_rows

TINY = ["--config.steps=100", "--config.hidden_size=4", "--config.chunk=50",
        "--config.log_every=50", "--config.quiet=True"]  # fmt: skip


# ----------------------------------------------------------------------------- spelling


def test_a_setting_is_spelled_for_python_and_for_the_command_line():
    err = RunError("use {} or {}", Setting("ok.rank", 4), Setting("overwrite", True, True))
    assert str(err) == "use c.ok.rank = 4 or overwrite=True"
    assert err.cli() == "use --config.ok.rank=4 or --overwrite"
    assert isinstance(err, ConfigError)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rank": 4}, "config field 'rank' moved: use c.ok.rank = 4"),
        ({"truncation": 16}, "config field 'truncation' moved: use c.uoro.truncation = 16"),
        ({"algorithm": "tbptt", "truncation": 16}, "moved: use c.tbptt.truncation = 16"),
        ({"algorithm": "rtrl", "truncation": 16}, "moved: use c.uoro.truncation = 16 or c.tbptt.truncation = 16"),
        ({"eps": 1e-5, "algorithm": "snap1"}, "moved: use c.uoro.eps = 1e-05, c.kf_rtrl.eps = 1e-05 or c.ok.eps = 1e-05"),
        ({"ok": {"rnak": 4}}, "unknown config field 'ok.rnak'; did you mean 'ok.rank'?"),
        ({"ok": {"rank": 4}}, "c.ok.rank = 4 is set, but the run's estimator is c.algorithm = 'uoro'"),
        ({"model": "leaky_rnn", "num_layers": 2}, "c.model = 'leaky_rnn' does not read c.num_layers = 2 (it reads hidden_size, tau)"),
        ({"model": "lru_stack", "embed_dim": 4}, "c.model = 'lru_stack' does not read c.embed_dim = 4"),
        ({"task": "influence_balancing", "hidden_size": 8}, "c.task = 'influence_balancing' brings its own model: c.hidden_size = 8 does nothing"),
        ({"model": "transformer"}, "model must be one of"),
    ],
)  # fmt: skip
def test_config_errors_in_python_name_the_python_spelling(overrides, message):
    c = ml_collections.ConfigDict({**experiment.default_config().to_dict(), **overrides})
    with pytest.raises(ConfigError) as info:
        experiment.validate_config(c)
    assert message in str(info.value)


def test_an_estimator_block_merges_over_its_defaults_from_a_file_or_overrides():
    path = os.path.join(ROOT, "configs", "anbn.py")
    c = experiment.config_from_file(path, {"algorithm": "ok", "ok": {"rank": 4}})
    c = experiment.validate_config(c)
    assert c.ok.to_dict() == {"rank": 4, "eps": 1e-7}
    assert experiment.hyperparameters_of(c) == {"rank": 4, "eps": 1e-7}
    assert experiment.method_overrides("ok:rank=4") == {"algorithm": "ok", "ok": {"rank": 4}}


def test_switching_a_config_files_model_resets_the_fields_only_its_model_read():
    path = os.path.join(ROOT, "configs", "copy.py")  # a two-layer LRU stack, model_dim 32
    with pytest.raises(ConfigError, match=r"c.model = 'simple' does not read c.model_dim = 32"):
        experiment.validate_config(experiment.config_from_file(path, {"model": "simple"}))
    overrides = experiment.model_overrides("simple", hidden_size=8)
    c = experiment.validate_config(experiment.config_from_file(path, overrides))
    assert (c.model, c.hidden_size, c.num_layers, c.model_dim) == ("simple", 8, 1, 0)


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.rank=4"], "error: config field 'rank' moved: use --config.ok.rank=4"),
        (["--config.algorithm=tbptt", "--config.truncation=8"], "error: config field 'truncation' moved: use --config.tbptt.truncation=8"),
        (["--config.ok.rank=4"], "error: --config.ok.rank=4 is set, but the run's estimator is --config.algorithm=uoro: set --config.algorithm=ok"),
        (["--config.uoro.truncation=x"], "error: flag --config.uoro.truncation=x"),
    ],
)  # fmt: skip
def test_config_errors_on_the_command_line_name_flags(tmp_path, args, message):
    result = _cli("--workdir", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-2000:]


@pytest.mark.parametrize("flag", ["--help", "-h", "--helpfull"])
def test_help_prints_the_flags_and_config_fields_and_exits_0(flag):
    result = _cli(flag)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--workdir" in result.stdout and "--[no]overwrite" in result.stdout
    assert "ok: rank=1, eps=1e-07" in result.stdout and "learning_rate=0.001" in result.stdout


def test_the_default_config_is_found_from_another_directory(tmp_path):
    result = _cli("--workdir", "run", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["config"]["task_args"] == {"k": 1, "l": 32}  # configs/anbn.py


def test_a_run_that_fails_to_build_leaves_no_workdir_and_names_the_model_flag(tmp_path):
    workdir = str(tmp_path / "run")
    failed = _cli("--workdir", workdir, "--config.algorithm=ok", *TINY)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert failed.stderr.strip() == (
        "error: --config.algorithm=ok does not fit --config.model=gru: ok handles a single "
        "dense layer h = σ(W a): params leaves ['params']['cells_0']['hn']['bias'] and "
        "['params']['cells_0']['hr']['kernel'] feed different pre-activations of the units "
        "(gates, as in a GRU or an LSTM); it takes --config.model=simple or "
        "--config.model=leaky_rnn with these settings"
    )
    assert not os.path.exists(workdir)
    again = _cli("--workdir", workdir, "--config.algorithm=snap1", *TINY)
    assert again.returncode == 0, again.stderr[-2000:]


def test_in_python_a_misfit_names_python_settings_and_writes_nothing(tmp_path):
    with pytest.raises(RunError) as info:
        experiment.run(small_config(algorithm="ok", hidden_size=4), str(tmp_path / "run"))
    assert "c.algorithm = 'ok' does not fit c.model = 'gru'" in str(info.value)
    assert "it takes c.model = 'simple' or c.model = 'leaky_rnn'" in str(info.value)
    assert not os.path.exists(tmp_path / "run")


def test_the_refusal_of_another_config_names_overwrite_for_each_interface(tmp_path):
    os.makedirs(tmp_path / "run")
    json.dump({"other": 1}, open(tmp_path / "run" / "config.json", "w"))
    with pytest.raises(RunError) as info:
        _prepare_workdir(str(tmp_path / "run"), experiment.validate_config(small_config()), False)
    assert str(info.value).endswith("use another workdir or overwrite=True")
    assert info.value.cli().endswith("use another workdir or --overwrite")


# ----------------------------------------------------------------------------- failures


def _interrupt(monkeypatch):
    def fail(job, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_log", fail)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_workdir_as_found(
    tmp_path, monkeypatch
):
    new, kept = tmp_path / "new", tmp_path / "kept"
    os.makedirs(kept)
    (kept / "notes.txt").write_text("mine")
    _interrupt(monkeypatch)
    for workdir in (new, kept):
        with pytest.raises(KeyboardInterrupt):
            experiment.run(small_config(steps=100, checkpoint_every=100), str(workdir))
    assert not new.exists()
    assert sorted(os.listdir(kept)) == ["notes.txt"]


def test_a_resumed_run_that_fails_keeps_its_workdir(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    experiment.run(small_config(steps=100, checkpoint_every=100), workdir)
    before = sorted(os.listdir(workdir))
    _interrupt(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(small_config(steps=200, checkpoint_every=100), workdir)
    assert sorted(os.listdir(workdir)) == before


# ----------------------------------------------------------------------------- quality


def test_a_run_measures_its_own_estimator_with_its_block(tmp_path):
    c = small_config(algorithm="tbptt", tbptt={"truncation": 4}, steps=96, chunk=48,
                     checkpoint_every=96, log_every=48, quality_every=48, quality_keys=2,
                     quality_segment=8)  # fmt: skip
    spec = "tbptt:truncation=4,reduction=sum"
    assert experiment.quality_specs(experiment.validate_config(c)) == (spec,)
    experiment.run(c, str(tmp_path / "run"))
    rows = read_rows(str(tmp_path / "run" / "quality.csv"))
    assert [(r["step"], r["estimator"], r["target"]) for r in rows] == [
        (str(step), spec, "window sum") for step in (0, 48, 96)
    ]


# ----------------------------------------------------------------------------- metrics.png


def test_metrics_png_draws_the_optimum_and_the_no_memory_floor(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(
        matplotlib.axes.Axes, "axhline", lambda ax, y, *a, **k: drawn.append(y) or original(ax, y, *a, **k)
    )  # fmt: skip
    summary = experiment.run(small_config(steps=100, checkpoint_every=100), str(tmp_path / "run"))
    floors = summary["floors"]
    assert floors["metric"] == "bits_per_char"
    assert floors["optimum"] == pytest.approx(1 / 11 * 3)  # anbn(1, 8): log2(8) / 11
    assert floors["no_memory"] == pytest.approx(2 * floors["optimum"])
    assert drawn == pytest.approx([floors["optimum"], floors["no_memory"]])
    assert summary["title"] == "anbn(k=1, l=8): uoro, gru-8"


def test_the_readmes_fifteen_lines_are_fifteen_and_learn():
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("## Fifteen lines\n\n```python\n", 1)[1].split("```", 1)[0]
    assert len(block.splitlines()) == 15
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "JAX_ENABLE_X64": "0"}
    result = subprocess.run([sys.executable, "-c", block], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    first, last = (float(v) for v in result.stdout.split("->"))
    claimed = block.rsplit("# ", 1)[1].split("->")
    assert last < first / 2 and float(claimed[0]) == first  # the start is the claimed one
