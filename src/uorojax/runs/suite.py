"""A suite of runs: each a name, a config file and overrides, run (or resumed, or left
alone when finished) by :func:`uorojax.runs.run` in worker processes, its logged rows
copied to an output folder from which tables and figures are drawn
(:mod:`~uorojax.runs.report`). ``experiments/reproduce.py`` is such a suite.

Layout of the output folder ``out``: ``out/runs/<name>.csv`` (the rows of each run's
``metrics.csv``, the columns ``keep`` names), ``out/quality/<name>.csv`` (its
``quality.csv``, when it measured gradient quality) and ``out/meta.json`` (the machine
and the commands whose runs the folder holds).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

from uorojax.runs import report
from uorojax.training.metric_log import read_rows, write_rows


class Run(NamedTuple):
    """One training run of a suite.

    Attributes:
      name: its name (its workdir's and its rows' file's).
      config: its config file.
      overrides: config overrides (a dict merges into the block it names).
    """

    name: str
    config: str
    overrides: dict


def execute(run: Run, runs_dir: str, out: str, keep: Sequence[str]) -> tuple[str, float]:
    """Runs (or resumes, or leaves alone when finished) one run in ``runs_dir/<name>``
    and copies its rows to ``out``: the columns of ``keep`` and the running losses.
    Returns its name and the seconds it took."""
    from uorojax.runs.config import config_from_file
    from uorojax.runs.runner import run as run_config

    config = config_from_file(run.config, run.overrides)
    config.quiet = True
    workdir = os.path.join(runs_dir, run.name)
    start = time.time()
    run_config(config, workdir)
    rows = read_rows(os.path.join(workdir, "metrics.csv"))
    kept = [k for k in rows[0] if k in keep or k.startswith(("cumulative", "recent"))]
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    rows = [{k: r[k] for k in kept} for r in rows]
    write_rows(os.path.join(out, "runs", f"{run.name}.csv"), rows)
    if os.path.exists(quality := os.path.join(workdir, "quality.csv")):
        os.makedirs(os.path.join(out, "quality"), exist_ok=True)
        shutil.copy(quality, os.path.join(out, "quality", f"{run.name}.csv"))
    return run.name, time.time() - start


def _execute(job: tuple) -> tuple[str, float]:
    return execute(*job)


def execute_all(
    runs: Sequence[Run],
    runs_dir: str,
    out: str,
    keep: Sequence[str],
    workers: int = 1,
    *,
    skip_existing: bool = False,
) -> None:
    """:func:`execute` of every run, ``workers`` at a time (in spawned processes: forking
    a process that initialised JAX can deadlock), printing each one's time; with
    ``skip_existing``, not the runs whose rows ``out`` already holds.

    Example::

      execute_all([Run("a", "configs/anbn.py", {"steps": 1000})], "runs", "out", ("loss",))
    """
    if skip_existing:
        runs = [r for r in runs if not os.path.exists(os.path.join(out, "runs", f"{r.name}.csv"))]
    jobs = [(run, runs_dir, out, tuple(keep)) for run in runs]
    if workers <= 1:
        results = map(_execute, jobs)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_execute, jobs)
    for name, seconds in results:
        print(f"{name}: {seconds:.0f}s", flush=True)


def record_command(out: str, keep_existing: bool) -> None:
    """Writes ``out/meta.json``: the machine and the commands whose runs ``out`` holds
    (and a ``note`` on them, if one was written there). With ``keep_existing`` (a
    command that only adds runs) it adds to what is recorded; otherwise it starts afresh.
    """
    path = os.path.join(out, "meta.json")
    meta = json.load(open(path)) if keep_existing and os.path.exists(path) else {}
    command = "python " + " ".join(sys.argv)
    meta["commands"] = [c for c in meta.get("commands", []) if c != command] + [command]
    meta["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU"
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)


def read_run(out: str, name: str) -> dict | None:
    """The rows ``out`` holds of run ``name`` as arrays (:func:`~uorojax.runs.report.read_run`)."""
    return report.read_run(os.path.join(out, "runs", f"{name}.csv"))


def runs_of(
    out: str, name: Callable[[str, str], str], rows: Sequence[str], columns: Sequence[str]
) -> dict:
    """``{row: {column: data}}`` (:func:`read_run`) of the runs ``name(row, column)``
    that ``out`` holds; rows without any left out.

    Example::

      runs_of("out", lambda cell, m: f"anbn_{cell}_{m}", ["gru"], ["uoro", "tbptt1"])
    """
    found = {r: {c: read_run(out, name(r, c)) for c in columns} for r in rows}
    found = {r: {c: d for c, d in cols.items() if d is not None} for r, cols in found.items()}
    return {r: cols for r, cols in found.items() if cols}
