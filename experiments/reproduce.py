"""Reproduces the UORO paper's comparisons and compares the online estimators.

    python experiments/reproduce.py --out docs/results              # everything
    python experiments/reproduce.py --out /tmp/r --quick            # minutes: a smoke run
    python experiments/reproduce.py --out docs/results --part chars --workers 2
    python experiments/reproduce.py --out docs/results --table      # redraw from the CSVs
    python experiments/reproduce.py --demo --out runs/demo          # the README's main job

This file is a list of runs, claims and figures. Every run is a config (``configs/*.py``
plus overrides) run by the runner of ``experiments/run.py`` (``uorojax.experiment.run``),
its seeds trained together in one compiled program; the gradient-quality measurements
are the runner's too (``quality_every``). Work directories go to ``--runs`` (resumable);
each run's rows are copied to ``OUT/runs/<name>.csv`` (``quality.csv`` to
``OUT/quality/<name>.csv``), from which the figures, tables and claims are drawn.

Parts:
  influence  influence balancing: TBPTT(1, 10, 100), exact RTRL and UORO at SGD rates
             1e-5 and 1e-4, 5 seeds: final θ against the fixed point -1/6.
  chars      anbn(1,32) and distant brackets (5,5,1,10), (2,7,3,10), (0,0,10,8); GRU-64
             and LSTM-64, online batch 1, Adam with the paper's schedule: UORO (T = 1,
             T = 16, 4 samples) against TBPTT(1, 4, 16), in flax's init and in the
             authors' convention (Torch7 init, ε = 1e-5).
  family     the first two tasks with SnAp-1 (GRU, LSTM, a Simple cell, an element-wise
             cell where it is exact RTRL) and KF-RTRL (Simple cell), beside UORO and TBPTT.
  quality    gradient quality against the exact gradient, at init and trained.
  text       character-level text, GRU-64 trained by UORO: its gradient's variance and
             cosine with the exact gradient over training.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import numpy as np

from uorojax import report
from uorojax.metric_log import read_rows, write_rows
from uorojax.report import Claim, at_step, final, fmt, markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHORS = "the authors' code and logs (github.com/ctallec/uoro)"
CHAR_TASKS = {  # name: (config file, task_args, entropy floors: optimum, no long-range memory)
    "anbn_1_32": ("anbn", {"k": 1, "l": 32}, 0.143, 0.286),
    "brackets_5_5_1_10": ("distant_brackets", {"min_filler": 5, "max_filler": 5, "save": 1, "alphabet": 10}, 1.661, 1.938),
    "brackets_2_7_3_10": ("distant_brackets", {"min_filler": 2, "max_filler": 7, "save": 3, "alphabet": 10}, 1.774, 2.417),
    "brackets_0_0_10_8": ("distant_brackets", {"min_filler": 0, "max_filler": 0, "save": 10, "alphabet": 8}, 1.200, 2.400),
}  # fmt: skip
METHODS = {  # name: config overrides
    "uoro": {"algorithm": "uoro"},
    "uoro_t16": {"algorithm": "uoro", "truncation": 16},
    "uoro_k4": {"algorithm": "uoro", "num_samples": 4},
    "tbptt1": {"algorithm": "tbptt", "truncation": 1},
    "tbptt4": {"algorithm": "tbptt", "truncation": 4},
    "tbptt16": {"algorithm": "tbptt", "truncation": 16},
    "snap1": {"algorithm": "snap1"},
    "kf_rtrl": {"algorithm": "kf_rtrl"},
}
INITS = {"flax": {"init": "flax"}, "torch7": {"init": "torch7", "eps": 1e-5}}  # ε: UORO's
CHAR_METHODS = ("uoro", "uoro_t16", "uoro_k4", "tbptt1", "tbptt4", "tbptt16")
TORCH7_METHODS = ("uoro", "uoro_t16", "tbptt1", "tbptt4", "tbptt16")
DEMO_METHODS = ("snap1", "uoro", "tbptt1", "tbptt4")
FAMILY_TASKS = ("anbn_1_32", "brackets_5_5_1_10")
FAMILY_RUNS = {  # cell: its methods (the GRU's and LSTM's others come from the chars part)
    "gru": ("snap1",),
    "lstm": ("snap1",),
    "simple": ("kf_rtrl", "snap1", "uoro", "tbptt1", "tbptt16"),
    "elementwise_mgu": ("snap1", "uoro", "tbptt1", "tbptt16"),
}
FAMILY_SHOWN = ("snap1", "uoro", "uoro_t16", "tbptt1", "tbptt16", "kf_rtrl")
AUTHORS_LOGS = [  # (cell, method, characters, cumulative, recent low, recent high)
    ("gru", "uoro", 360_000, 0.271, 0.22, 0.28),
    ("lstm", "uoro", 240_000, 0.262, 0.19, 0.27),
    ("gru", "uoro_t16", 120_000, 0.285, 0.24, 0.24),
]
IB_RUNS = {  # name: (algorithm, truncation, SGD rate)
    "tbptt1": ("tbptt", 1, 1e-5), "tbptt10": ("tbptt", 10, 1e-5), "tbptt100": ("tbptt", 100, 1e-5),
    "rtrl": ("rtrl", 1, 1e-5), "uoro_lr1e-5": ("uoro", 1, 1e-5), "uoro_lr1e-4": ("uoro", 1, 1e-4),
}  # fmt: skip
QUALITY_MODELS = {"simple": 32, "gru": 32}  # cell: width, at init and trained by SnAp-1
QUALITY_ESTIMATORS = ("uoro", "uoro:num_samples=4", "uoro:truncation=16", "tbptt:truncation=1",
                      "tbptt:truncation=16", "snap1", "kf_rtrl")  # fmt: skip
QUALITY_FIELDS = ("relative_bias", "relative_variance", "mean_cosine", "mean_norm_ratio")
KEEP_COLUMNS = ("step", "seed", "bits_per_char", "loss", "theta", "skipped")


class Run(NamedTuple):
    """One training run: a name, a config file and overrides."""

    name: str
    config: str
    overrides: dict


class Budget(NamedTuple):
    char_steps: int
    ib_steps: int
    text_steps: int
    seeds: int
    log_every: int
    quality_segment: int = 48
    quality_keys: int = 512
    text_points: int = 10


# ----------------------------------------------------------------------------- runs


def char_run(task, cell, method, init, budget: Budget, **extra) -> Run:
    config, task_args, _, _ = CHAR_TASKS[task]
    overrides = {
        "task_args": task_args, "model": cell, "hidden_size": 64, "steps": budget.char_steps,
        "num_seeds": budget.seeds, "log_every": budget.log_every,
        "checkpoint_every": budget.char_steps, "chunk": 2000, "nonfinite": "skip",
        **METHODS[method], **INITS[init], **extra,
    }  # fmt: skip
    if overrides["algorithm"] != "uoro":
        overrides.pop("eps", None)  # the authors' ε is UORO's
    return Run(f"{task}_{cell}_{method}_{init}", f"configs/{config}.py", overrides)


def influence_runs(budget: Budget, args) -> list[Run]:
    return [
        Run(
            f"influence_{name}",
            "configs/influence_balancing.py",
            {
                "algorithm": algorithm,
                "truncation": truncation,
                "learning_rate": rate,
                "steps": budget.ib_steps,
                "num_seeds": max(budget.seeds, 5),
                "log_every": 100,
                "checkpoint_every": budget.ib_steps,
            },
        )  # fmt: skip
        for name, (algorithm, truncation, rate) in IB_RUNS.items()
    ]


def chars_runs(budget: Budget, args, inits=("flax",)) -> list[Run]:
    return [
        char_run(task, cell, method, init, budget)
        for init in inits if init in (args.inits or INITS)
        for task in args.tasks or CHAR_TASKS
        for cell in args.cells or ("gru", "lstm")
        for method in (CHAR_METHODS if init == "flax" else TORCH7_METHODS)
    ]  # fmt: skip


def family_runs(budget: Budget, args) -> list[Run]:
    tasks = [t for t in args.tasks or FAMILY_TASKS if t in FAMILY_TASKS]
    return [
        char_run(task, cell, method, "flax", budget)
        for task in tasks
        for cell, methods in FAMILY_RUNS.items()
        for method in methods
    ]


def quality_runs(budget: Budget, args) -> list[Run]:
    """Small models trained by SnAp-1 on distant brackets, their gradient quality
    measured at step 0 and at the end."""
    return [
        char_run("brackets_5_5_1_10", cell, "snap1", "flax", budget, hidden_size=width,
                 num_seeds=1, quality_every=budget.char_steps,
                 quality_estimators=QUALITY_ESTIMATORS, quality_segment=budget.quality_segment,
                 quality_keys=budget.quality_keys)._replace(name=f"quality_{cell}_{width}")
        for cell, width in QUALITY_MODELS.items()
    ]  # fmt: skip


def text_runs(budget: Budget, args) -> list[Run]:
    every = budget.text_steps // budget.text_points
    return [Run("text_gru_uoro", "configs/text.py", {
        "steps": budget.text_steps, "log_every": 1000, "chunk": 1000, "nonfinite": "skip",
        "checkpoint_every": budget.text_steps, "quality_every": every,
        "quality_segment": budget.quality_segment, "quality_keys": budget.quality_keys,
    })]  # fmt: skip


PARTS = {
    "influence": influence_runs,
    "chars": chars_runs,
    "family": family_runs,
    "quality": quality_runs,
    "text": text_runs,
    "chars_torch7": lambda budget, args: chars_runs(budget, args, ("torch7",)),
}


def execute(job) -> tuple[str, float]:
    """Runs (or resumes, or skips when finished) one run and copies its rows to OUT."""
    run, runs_dir, out = job
    from uorojax import experiment

    config = experiment.config_from_file(os.path.join(ROOT, run.config), run.overrides)
    config.quiet = True
    workdir = os.path.join(runs_dir, run.name)
    start = time.time()
    experiment.run(config, workdir)
    rows = read_rows(os.path.join(workdir, "metrics.csv"))
    keep = [k for k in rows[0] if k in KEEP_COLUMNS or k.startswith(("cumulative", "recent"))]
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    write_rows(
        os.path.join(out, "runs", f"{run.name}.csv"), [{k: r[k] for k in keep} for r in rows]
    )
    if os.path.exists(os.path.join(workdir, "quality.csv")):
        os.makedirs(os.path.join(out, "quality"), exist_ok=True)
        shutil.copy(
            os.path.join(workdir, "quality.csv"), os.path.join(out, "quality", f"{run.name}.csv")
        )
    return run.name, time.time() - start


def execute_all(runs: list[Run], runs_dir: str, out: str, workers: int) -> None:
    jobs = [(run, runs_dir, out) for run in runs]
    if workers <= 1:
        results = map(execute, jobs)
    else:  # spawned: forking a process that initialised JAX can deadlock
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(execute, jobs)
    for name, seconds in results:
        print(f"{name}: {seconds:.0f}s", flush=True)


# ----------------------------------------------------------------------------- reading


def read_run(out: str, name: str) -> dict | None:
    return report.read_run(os.path.join(out, "runs", f"{name}.csv"))


def read_quality(out: str, name: str) -> list[dict]:
    return read_rows(os.path.join(out, "quality", f"{name}.csv"))


def learns_below(task: str) -> float:
    """The loss under which a run has learned a task's long-range part: a quarter of the
    way from the no-long-range-memory floor to the optimum."""
    _, _, optimum, no_memory = CHAR_TASKS[task]
    return no_memory - 0.25 * (no_memory - optimum)


def curves(out, lines, name, title, heading, panels, task=None, **kwargs):
    """A figure of learning curves (one panel per ``{title: {label: data}}``) with the
    task's entropy floors, and its markdown line."""
    floors = []
    if task:
        _, _, optimum, no_memory = CHAR_TASKS[task]
        floors = [(optimum, f"optimum {optimum:.3f}"), (no_memory, f"no long-range memory {no_memory:.3f}")]  # fmt: skip
    report.band_figure(path := os.path.join(out, f"{name}.png"), title, panels, floors=floors, **kwargs)  # fmt: skip
    lines += report.figure_line(path, heading)


def med(data) -> float:
    return float(np.median(final(data)))


# ----------------------------------------------------------------------------- sections


def headline_section(out, lines, claims):
    """SnAp-1 learns distant brackets (5,5,1,10)'s recall online where truncated BPTT, at
    a truncation shorter than the gap, stays at the no-memory floor."""
    task = "brackets_5_5_1_10"
    runs = {m: d for m in DEMO_METHODS if (d := read_run(out, f"{task}_gru_{m}_flax")) is not None}
    if "snap1" not in runs or "tbptt4" not in runs:
        return
    _, _, optimum, no_memory = CHAR_TASKS[task]
    chars = int(runs["snap1"]["step"][-1])
    lines += ["## Headline: long-range structure learned online", ""]
    title = f"Distant brackets (5,5,1,10), GRU-64, online batch 1, {chars:,} chars"
    curves(out, lines, "headline", title, "headline", {"": runs}, task, ylim=(optimum - 0.1, no_memory + 0.5), width=7.0)  # fmt: skip
    lines += [f"The saved character must be recalled 8 steps after it was seen. A model without that memory cannot do better than {no_memory:.3f} bits/char; the optimum is {optimum:.3f}.", ""]  # fmt: skip
    lines += markdown_table(["method", "final bits/char per seed"], [[m, fmt(final(d))] for m, d in runs.items()])  # fmt: skip
    below = learns_below(task)
    text = f"Headline: SnAp-1 learns distant brackets' recall online (below {below:.3f}) where TBPTT(4) does not, after {chars:,} chars"  # fmt: skip
    numbers = ", ".join(f"{m} {med(d):.3f}" for m, d in runs.items())
    claims.insert(0, Claim(text, med(runs["snap1"]) < below <= med(runs["tbptt4"]), numbers))


def influence_section(out, lines, claims):
    from uorojax import tasks

    data = {name: read_run(out, f"influence_{name}") for name in IB_RUNS}
    if any(d is None for d in data.values()):
        return
    fixed = tasks.influence_balancing().fixed_point
    plt = report._pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, d in data.items():
        loss = np.clip(np.where(np.isfinite(d["loss"]), d["loss"], np.nan), 1e-12, 1e12)
        report.band(axes[0], d["step"], loss, name)
        report.band(axes[1], d["step"], d["theta"], name, bool(np.all(np.abs(d["theta"]) < 10)))
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss 0.5 (s[0] - 1)² (mean over 100 steps)")
    axes[1].axhline(fixed, color="k", ls="--", lw=1, label="fixed point -1/6")
    axes[1].set_ylabel("θ")
    axes[1].set_ylim(-1.5, 2.0)
    for ax in axes:
        ax.set_xlabel("steps")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    report._save(plt, fig, path := os.path.join(out, "influence_balancing.png"), "Influence balancing (n=23), SGD; median and min-max over seeds")  # fmt: skip
    lines += ["## Influence balancing", "", *report.figure_line(path, "influence balancing")]
    theta = {n: d["theta"][:, -1] for n, d in data.items()}
    loss = {n: d["loss"][:, -1] for n, d in data.items()}
    skipped = {n: d["skipped"].sum(1) * (d["step"][1] - d["step"][0]) for n, d in data.items()}
    rows = [[n, f"{rate:g}", ", ".join(f"{t:.4g}" for t in theta[n]), f"{np.median(loss[n]):.3g}", str(int(np.median(skipped[n])))] for n, (_, _, rate) in IB_RUNS.items()]  # fmt: skip
    lines += markdown_table(["run", "SGD rate", "final θ (per seed)", "final loss (median)", "steps skipped"], rows)  # fmt: skip
    converged = lambda n: bool(np.all(np.abs(theta[n] - fixed) < 1e-2))  # noqa: E731
    diverged = lambda n: bool(
        np.all(
            (np.abs(theta[n] - fixed) > 0.1)
            & ((loss[n] > 1.0) | (skipped[n] > 0) | ~np.isfinite(loss[n]))
        )
    )  # noqa: E731
    claims += [
        Claim("Influence balancing: TBPTT(1) and TBPTT(10) diverge", diverged("tbptt1") and diverged("tbptt10"), f"final θ {theta['tbptt1'][0]:.3g} and {theta['tbptt10'][0]:.3g}; θ* = {fixed:.4f}"),
        Claim("Influence balancing: exact RTRL converges to θ* = -1/6 (SGD 1e-5)", converged("rtrl"), f"final θ {theta['rtrl'][0]:.5f}"),
        Claim("Influence balancing: UORO converges at SGD 1e-5", converged("uoro_lr1e-5"), "final θ " + ", ".join(f"{t:.4f}" for t in theta["uoro_lr1e-5"])),
        Claim("Influence balancing: UORO at SGD 1e-4 can diverge from its variance", not converged("uoro_lr1e-4"), "final θ " + ", ".join(f"{t:.3g}" for t in theta["uoro_lr1e-4"])),
    ]  # fmt: skip


def chars_section(out, lines, claims, init: str):
    convention = "flax's init" if init == "flax" else "the authors' convention (Torch7 init, ε = 1e-5)"  # fmt: skip
    heading = [f"## Character tasks, {convention}", ""]
    for task, (_, _, optimum, no_memory) in CHAR_TASKS.items():
        runs = {cell: {m: d for m in CHAR_METHODS if (d := read_run(out, f"{task}_{cell}_{m}_{init}")) is not None} for cell in ("gru", "lstm")}  # fmt: skip
        if not any(runs.values()):
            continue
        lines += heading + [f"### {task}", ""]
        heading = []
        title = f"{task}, {init} init: online batch 1, Adam γ=1e-3 α=1.5e-2; median and min-max over seeds"  # fmt: skip
        curves(out, lines, f"chars_{task}_{init}", title, task, {f"{c.upper()}-64": r for c, r in runs.items() if r}, task)  # fmt: skip
        lines += [f"Entropy floors: optimum {optimum:.3f}, no long-range memory {no_memory:.3f} bits/char. Final bits/char: mean of the last 10 % of the run, per seed.", ""]  # fmt: skip
        lines += markdown_table(["model", *CHAR_METHODS], [[c, *(fmt(final(r[m])) if m in r else "not run" for m in CHAR_METHODS)] for c, r in runs.items()])  # fmt: skip
        for cell, r in runs.items():
            where = f"{task} {cell.upper()}-64 ({init})"
            for uoro, tbptt in (("uoro", "tbptt1"), ("uoro_t16", "tbptt16")):
                if uoro in r and tbptt in r:
                    claims.append(Claim(f"{where}: {uoro} beats {tbptt} (median at least 0.01 bits/char lower)", med(r[uoro]) < med(r[tbptt]) - 0.01, f"{uoro} {med(r[uoro]):.3f}, {tbptt} {med(r[tbptt]):.3f}"))  # fmt: skip
            for m in ("uoro", "uoro_k4", "uoro_t16"):
                if m in r:
                    claims.append(Claim(f"{where}: {m} learns long-range structure (below {learns_below(task):.3f})", med(r[m]) < learns_below(task), f"{m} {med(r[m]):.3f}; optimum {optimum:.3f}"))  # fmt: skip
    if not heading:
        authors_table(out, lines, claims, init)


def authors_table(out, lines, claims, init):
    lines += [f"### Against the authors' logs (anbn(1,32), {init} init)", "", f"The committed logs of {AUTHORS} at the same character counts, with both of their metrics in bits/char; ours per seed.", ""]  # fmt: skip
    rows = []
    for cell, method, chars, cumulative, low, high in AUTHORS_LOGS:
        d = read_run(out, f"anbn_1_32_{cell}_{method}_{init}")
        if d is None or (cum := at_step(d, "cumulative_bits_per_char", chars)) is None:
            continue
        rec = at_step(d, "recent_bits_per_char", chars)
        recent = f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"
        rows.append([f"{cell.upper()}-64 {method}", f"{chars:,}", f"{cumulative:.3f}", fmt(cum), recent, fmt(rec)])  # fmt: skip
        claims.append(Claim(f"anbn(1,32) {cell.upper()}-64 {method} ({init}) at {chars:,} chars: cumulative loss at or below the authors' {cumulative:.3f} (+0.01)",
                            float(np.median(cum)) <= cumulative + 0.01, f"median cumulative {np.median(cum):.3f}, recent {np.median(rec):.3f}"))  # fmt: skip
    lines += markdown_table(["run", "characters", "authors' cumulative", "ours", "authors' recent", "ours"], rows)  # fmt: skip


def family_section(out, lines, claims):
    heading = ["## The estimator family: learning curves", ""]
    for task in FAMILY_TASKS:
        cells = {c: {m: d for m in FAMILY_SHOWN if (d := read_run(out, f"{task}_{c}_{m}_flax")) is not None} for c in FAMILY_RUNS}  # fmt: skip
        cells = {c: r for c, r in cells.items() if r}
        if not cells:
            continue
        _, _, optimum, no_memory = CHAR_TASKS[task]
        lines += heading + [f"### {task}", ""]
        heading = []
        curves(out, lines, f"family_{task}", f"{task}: online estimators, batch 1; median and min-max over seeds", task,
               {f"{c}-64": r for c, r in cells.items()}, task, ylim=(optimum - 0.1, no_memory + 0.6), width=4.6)  # fmt: skip
        methods = sorted({m for r in cells.values() for m in r})
        lines += markdown_table(["cell", *methods], [[c, *(fmt(final(r[m])) if m in r else "" for m in methods)] for c, r in cells.items()])  # fmt: skip
        lines += [f"Entropy floors: optimum {optimum:.3f}, no long-range memory {no_memory:.3f}.", ""]  # fmt: skip
        for cell, r in cells.items():
            for m in ("snap1", "kf_rtrl"):
                if m in r and "uoro" in r:
                    tb = f", TBPTT(16) {med(r['tbptt16']):.3f}" if "tbptt16" in r else ""
                    claims.append(Claim(f"{task} {cell}-64: {m} beats UORO (median at least 0.01 bits/char lower)", med(r[m]) < med(r["uoro"]) - 0.01, f"{m} {med(r[m]):.3f}, UORO {med(r['uoro']):.3f}{tb}"))  # fmt: skip
                if m in r:
                    claims.append(Claim(f"{task} {cell}-64: {m} learns long-range structure (below {learns_below(task):.3f})", med(r[m]) < learns_below(task), f"{m} {med(r[m]):.3f}"))  # fmt: skip


def quality_section(out, lines, claims):
    groups = {}
    for cell, width in QUALITY_MODELS.items():
        for r in read_quality(out, f"quality_{cell}_{width}"):
            when = (
                "at init" if r["step"] == "0" else f"trained by SnAp-1 ({int(r['step']):,} chars)"
            )
            groups.setdefault(f"{cell}-{width} {when}, brackets_5_5_1_10", []).append(r)
    if not groups:
        return
    lines += ["## Gradient quality against the exact gradient", "",
              "Held-out segments of distant brackets (5,5,1,10), params frozen, many keys per estimator, from the model's state at that step: "
              "per-step estimators against the exact dL_t/dθ, windowed ones against the exact gradient of the window's summed loss (with the full history), "
              "averaged over the steps where the estimator emits a gradient (after the first). The relative bias of the mean over keys falls like "
              "1/sqrt(keys) for an unbiased estimator; for TBPTT and SnAp-1 it is their bias.", ""]  # fmt: skip
    header = ["model", "estimator", "target", "relative bias of the mean", "relative variance of one estimate", "mean cosine", "mean norm ratio"]  # fmt: skip
    lines += markdown_table(header, [[g, r["estimator"], r["target"], *(f"{float(r[f]):.3g}" for f in QUALITY_FIELDS[:2]), *(f"{float(r[f]):.3f}" for f in QUALITY_FIELDS[2:])] for g, rows in groups.items() for r in rows])  # fmt: skip
    report.bar_figure(path := os.path.join(out, "gradient_quality.png"), "Gradient quality against the exact gradient (frozen params, many keys)", groups,
                      {"mean_cosine": "mean cosine with the exact gradient", "relative_variance": "relative variance of one estimate\n(deterministic: drawn at 1e-6)"})  # fmt: skip
    lines += report.figure_line(path, "gradient quality")
    for group, rows in groups.items():
        cosine = {r["estimator"]: float(r["mean_cosine"]) for r in rows}
        for m in ("kf_rtrl", "snap1", "uoro:num_samples=4"):
            if m in cosine and "uoro" in cosine:
                claims.append(Claim(f"Gradient quality, {group}: {m}'s mean cosine with the exact gradient beats UORO's", cosine[m] > cosine["uoro"], f"{m} {cosine[m]:.3f}, UORO {cosine['uoro']:.3f}"))  # fmt: skip


def text_section(out, lines, claims):
    rows, logged = read_quality(out, "text_gru_uoro"), read_run(out, "text_gru_uoro")
    if not rows or logged is None:
        return
    steps = [int(r["step"]) for r in rows]
    every = steps[1] - steps[0]
    bits = [float(np.mean(logged["bits_per_char"][0][(logged["step"] > s - every) & (logged["step"] <= s)])) if s else float("nan") for s in steps]  # fmt: skip
    variance = np.array([float(r["last_relative_variance"]) for r in rows])
    cosine = [float(r["last_mean_cosine"]) for r in rows]
    plt = report._pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    x = [s / 1000 for s in steps]
    axes[0].plot(x, variance, "o-")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("relative variance E‖g - E g‖² / ‖g*‖²")
    axes[1].plot(x, cosine, "o-", label="after a segment")
    axes[1].plot(
        x, [float(r["first_mean_cosine"]) for r in rows], "s--", label="first step (exact)"
    )
    axes[1].set_ylabel("mean cosine(g, g*)")
    axes[1].legend(fontsize=7)
    axes[2].plot(x[1:], bits[1:], "o-")
    axes[2].set_ylabel("training bits per character")
    for ax in axes:
        ax.set_xlabel("thousands of characters trained")
        ax.grid(alpha=0.3)
    report._save(plt, fig, path := os.path.join(out, "text_gradient_quality.png"), "Character-level text (Python help texts), GRU-64, UORO: one gradient estimate")  # fmt: skip
    lines += ["## Character-level text: UORO's gradient variance and cosine", "", *report.figure_line(path, "text")]  # fmt: skip
    header = ["characters trained", "relative variance", "mean cosine", "mean norm ratio", "bits/char (last interval)"]  # fmt: skip
    lines += markdown_table(header, [[f"{s:,}", f"{v:.3g}", f"{c:.3f}", f"{float(r['last_mean_norm_ratio']):.3g}", f"{b:.3f}"] for s, v, c, r, b in zip(steps, variance, cosine, rows, bits)])  # fmt: skip
    half = (len(variance) - 1) // 2
    early, late = np.median(variance[1 : 1 + half]), np.median(variance[1 + half :])
    claims.append(Claim("Text GRU-64: UORO's gradient variance does not grow during training (second half within 10x of the first)", bool(np.all(np.isfinite(variance)) and late <= 10 * early), f"median {early:.3g} then {late:.3g}"))  # fmt: skip
    claims.append(Claim("Text GRU-64: a single UORO estimate is positively aligned with the exact gradient", bool(np.mean(cosine) > 0), f"mean cosine {np.mean(cosine):.3f}"))  # fmt: skip


SECTIONS = (headline_section, influence_section, lambda *a: chars_section(*a, "flax"),
            lambda *a: chars_section(*a, "torch7"), family_section, quality_section, text_section)  # fmt: skip


def write_results(out: str) -> str:
    lines, claims = [], []
    for section in SECTIONS:
        section(out, lines, claims)
    head = ["# Reproducing Tallec & Ollivier (2017), and the estimators after UORO", ""]
    if os.path.exists(meta := os.path.join(out, "meta.json")):
        meta = json.load(open(meta))
        head += [f"Produced by `{meta['command']}` on {meta['machine']}.", ""]
    summary = [
        "## Claims", "",
        "A run *learns long-range structure* when its final loss (median over seeds) is below the task's "
        "no-long-range-memory floor by at least a quarter of the floor's gap to the optimum (the floors are "
        "derived in docs/tasks.md): it recalls part of what the task asks it to carry, rather than shaving the floor.", "",
        *report.claims_table(claims),
    ]  # fmt: skip
    if os.path.exists(discussion := os.path.join(out, "discussion.md")):
        summary += [open(discussion).read().strip(), ""]
    with open(path := os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(head + summary + lines))
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--runs", default=None, help="work directories (runs/reproduce; OUT/workdirs with --demo)")  # fmt: skip
    parser.add_argument("--part", action="append", choices=["influence", "chars", "family", "quality", "text"])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    parser.add_argument("--table", action="store_true", help="only redraw figures and tables")
    parser.add_argument("--demo", action="store_true", help="the README's main job (about two minutes)")  # fmt: skip
    parser.add_argument("--char-steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", nargs="*", choices=sorted(CHAR_TASKS))
    parser.add_argument("--cells", nargs="*", choices=["gru", "lstm"])
    parser.add_argument("--inits", nargs="*", choices=sorted(INITS))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    args.runs = args.runs or (os.path.join(args.out, "workdirs") if args.demo else "runs/reproduce")
    if args.demo:  # the README's main job: the headline and influence balancing
        budget = Budget(100_000, 30_000, 0, 2, 2000)
        runs = influence_runs(budget, args) + [char_run("brackets_5_5_1_10", "gru", m, "flax", budget) for m in DEMO_METHODS]  # fmt: skip
    elif args.table:
        runs = []
    else:
        budget = Budget(args.char_steps, 100_000, 200_000, args.seeds, 10_000)
        if args.quick:
            budget = Budget(20_000, 20_000, 4_000, 2, 2_000, 32, 32, 2)
        with open(os.path.join(args.out, "meta.json"), "w") as f:
            machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU"
            json.dump({"command": "python " + " ".join(sys.argv), "machine": machine}, f)
        parts = args.part or ["influence", "chars", "family", "quality", "text"]
        if "chars" in parts:  # flax's init first, the authors' convention last
            parts = [*parts, "chars_torch7"]
        runs = [run for part in parts for run in PARTS[part](budget, args)]
    execute_all(runs, args.runs, args.out, args.workers)
    write_results(args.out)


if __name__ == "__main__":
    main()
