"""Runs of several processes: two local processes (CPU, gloo collectives) log what one
process logs, resume after a stop and after a process was killed mid-checkpoint as an
uninterrupted run, and refuse mismatched configs on every process without hanging."""

import ast
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from uorojax import ConfigError, tasks
from uorojax import runs as experiment
from uorojax.runs import runner
from uorojax.training import distributed
from uorojax.training.metric_log import read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "experiments", "run.py")
TIMEOUT = 240  # seconds for one launch of both processes: a hang fails, it does not block
ARGS = [
    "--config", os.path.join(ROOT, "configs", "anbn.py"),
    "--config.task_args.l=8", "--config.model=simple", "--config.hidden_size=4",
    "--config.num_streams=4", "--config.chunk=20", "--config.log_every=10",
    "--config.checkpoint_every=20", "--config.quiet=True",
]  # fmt: skip

# experiments/run.py, with every file this process creates or writes in the workdir
# outside checkpoints/ printed at exit; with CRASH_AT, process 0 dies while committing the
# checkpoint of that step (every process has written its part into orbax's temporary
# directory, which is never renamed).
WRAPPER = textwrap.dedent(
    """
    import atexit, builtins, os, runpy, sys
    from orbax.checkpoint._src.path import atomicity

    workdir = os.path.abspath(sys.argv[sys.argv.index("--workdir") + 1])
    written = set()

    def note(path):
        path = os.path.abspath(os.fspath(path))
        if path.startswith(workdir) and not path.startswith(os.path.join(workdir, "checkpoints")):
            written.add(os.path.relpath(path, workdir))

    original_open, original_makedirs = builtins.open, os.makedirs

    def recording_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            note(file)
        return original_open(file, mode, *args, **kwargs)

    def recording_makedirs(name, *args, **kwargs):
        if not os.path.isdir(name):
            note(name)
        return original_makedirs(name, *args, **kwargs)

    builtins.open, os.makedirs = recording_open, recording_makedirs
    atexit.register(lambda: print("written:", sorted(written), flush=True))

    crash_at = os.environ.get("CRASH_AT")
    original_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if str(self.get_final()).endswith(os.sep + crash_at):
            os._exit(17)
        return await original_finalize(self, *args, **kwargs)

    if crash_at and "--process_id=0" in sys.argv:
        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    sys.argv = [{run!r}] + sys.argv[1:]
    runpy.run_path({run!r}, run_name="__main__")
    """
)


def _written(result):
    """The files a process of a WRAPPER launch wrote outside checkpoints/."""
    line = [x for x in result.stdout.splitlines() if x.startswith("written: ")][-1]
    return set(ast.literal_eval(line[len("written: ") :]))


def _env(tmp, **extra):
    return {
        "PYTHONPATH": os.path.join(ROOT, "src"),
        "JAX_PLATFORMS": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "XLA_FLAGS": "",  # one CPU device per process
        # The launches compile the same programs: a persistent cache saves the repeats.
        "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **extra,
    }


def _two(tmp, workdir, *args, env=None, process_args=None):
    wrapper = tmp / "wrapper.py"
    if not wrapper.exists():
        wrapper.write_text(WRAPPER.format(run=RUN))
    return distributed.launch_local(
        [str(wrapper), *ARGS, "--workdir", str(workdir), *args],
        2,
        timeout=TIMEOUT,
        env=_env(tmp, **(env or {})),
        cwd=ROOT,
        process_args=process_args,
    )


def _ok(results):
    for index, r in enumerate(results):
        assert r.returncode == 0 and not r.killed, f"process {index}: {r.stderr[-3000:]}"


def _columns(workdir):
    rows = read_rows(os.path.join(workdir, "metrics.csv"))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.mark.slow  # two processes end to end: `make test-slow`, run by CI
def test_two_processes_killed_mid_checkpoint_resume_and_log_what_one_logs(tmp_path):
    """One multi-process run, kept small: two processes are stopped by a kill of process
    0 while committing the checkpoint of step 40 (the last), resume from step 20, and end
    with the rows and params of one process run straight through (to float32 summation
    order). The single-process kill and resume are in test_experiment."""
    steps = "--config.steps=40"
    # One process, started as always (no flags, no cluster).
    one = tmp_path / "one"
    single = subprocess.run(
        [sys.executable, RUN, *ARGS, "--workdir", str(one), steps],
        env={**os.environ, **_env(tmp_path)}, cwd=ROOT, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    two = tmp_path / "two"
    killed = _two(tmp_path, two, steps, env={"CRASH_AT": "40"})
    assert killed[0].returncode == 17, killed[0].stderr[-3000:]
    assert killed[1].returncode != 0  # it cannot finish alone
    left = os.listdir(two / "checkpoints")
    assert sorted(d for d in left if d.isdigit()) == ["20"], left
    assert any(d.startswith("40") and not d.isdigit() for d in left), left  # the torn one
    results = _two(tmp_path, two, steps)
    _ok(results)

    a, b = _columns(one), _columns(two)
    assert a.keys() == b.keys() and len(a["step"]) == len(b["step"]) == 4
    np.testing.assert_array_equal(a["step"], b["step"])
    for name in ("loss", "bits_per_char", "cumulative_bits_per_char", "recent_bits_per_char"):
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, err_msg=name)
    # A checkpoint written by two processes reads on one, with the same params.
    params_one = experiment.load_train_state(str(one))[0].params
    params_two = experiment.load_train_state(str(two))[0].params
    for x, y in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two)):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
    # Process 0 alone writes the logs and prints the final metrics.
    assert "bits_per_char=" in results[0].stdout and "bits_per_char=" not in results[1].stdout
    assert _written(results[1]) == set(), _written(results[1])
    wrote = _written(results[0])
    assert {"config.json", "summary.json", "metrics.png"} <= wrote, wrote
    for prefix in ("metrics.csv", "tb"):
        assert any(name.startswith(prefix) for name in wrote), wrote


def test_processes_started_with_different_configs_all_fail_with_the_same_named_error(tmp_path):
    results = _two(tmp_path, tmp_path / "run", process_args=[[], ["--config.hidden_size=5"]])
    for index, r in enumerate(results):
        assert not r.killed, f"process {index} hung: {r.stderr[-3000:]}"
        assert r.returncode == 2, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(
            "error: the processes were started with different configs: process 1's fields "
            "['hidden_size'] differ from process 0's"
        ), r.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(tasks.SYMBOL_TASKS))
def test_a_block_of_streams_continues_the_same_streams_as_the_whole_batch(name):
    """Stream b is seeded (seed, b) whichever process feeds it: two blocks side by side
    are the whole batch, chunk after chunk."""
    whole = tasks.make_stream(name, seed=3, num_streams=4)
    blocks = [tasks.make_stream(name, seed=3, num_streams=2, first_stream=f) for f in (0, 2)]
    for length in (7, 30):
        xs, ys = whole.next_chunk(length)
        parts = [block.next_chunk(length) for block in blocks]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts], axis=1), xs)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts], axis=1), ys)
    with pytest.raises(ConfigError, match="first_stream must be >= 0"):
        tasks.make_stream(name, seed=3, num_streams=2, first_stream=-1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_streams": 3}, "num_streams (3) must be a multiple of the number of processes (2)"),
        ({"num_streams": 4, "num_seeds": 2}, "num_seeds (2) > 1 runs on one process"),
        ({"num_streams": 4, "shard_streams": False}, "shard_streams=False keeps the streams"),
    ],
)
def test_what_two_processes_cannot_split_is_named(monkeypatch, overrides, message):
    c = experiment.validate_config({**experiment.default_config().to_dict(), **overrides})
    experiment.check_processes(c)  # one process takes it
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        experiment.check_processes(c)


def test_a_checkpoint_of_another_process_count_is_refused():
    meta = {"streams_by_process": [[{}], [{}]]}
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\); resume the run with 2"):
        runner._own_stream_states(meta, "runs/x")
