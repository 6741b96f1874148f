"""Reproduces the UORO paper's comparisons and compares the online estimators.

    python experiments/reproduce.py --out docs/results              # everything
    python experiments/reproduce.py --out /tmp/r --quick            # minutes: a smoke run
    python experiments/reproduce.py --out docs/results --part chars --workers 2
    python experiments/reproduce.py --out docs/results --table      # redraw from the CSVs
    python experiments/reproduce.py --demo --out runs/demo          # the README's main job

Every training run is a config (``configs/*.py`` plus overrides) run by the same runner
as ``experiments/run.py`` (``uorojax.experiment.run``), with its seeds trained together
in one compiled program (``num_seeds``). Work directories go to ``--runs`` (resumable:
an interrupted reproduction picks up where it stopped); each run's logged rows are copied
to ``OUT/runs/<name>.csv``, from which the figures, tables and claims are drawn. This
file holds only what is its own: the runs to make, the claims and the figures.

Parts:
  influence  influence balancing: TBPTT(1, 10, 100), exact RTRL and UORO at SGD rates
             1e-5 and 1e-4, 5 seeds: final θ against the fixed point -1/6.
  chars      anbn(1,32) and distant brackets (5,5,1,10), (2,7,3,10), (0,0,10,8); GRU-64
             and LSTM-64, online batch 1, Adam with the paper's schedule, 3 seeds, 10^6
             characters: UORO (T = 1, T = 16, 4 samples) against TBPTT(1, 4, 16), in
             flax's init and in the authors' convention (Torch7 init, ε = 1e-5).
  family     the same two first tasks with SnAp-1 (GRU, LSTM, a Simple cell, an
             element-wise cell where it is exact RTRL) and KF-RTRL (Simple cell), beside
             UORO and TBPTT on the same cells.
  quality    gradient quality against exact RTRL on one small model and segment: bias,
             variance, cosine and norm ratio of every estimator.
  text       character-level text, GRU-64 trained by UORO: the variance of its gradient
             and its cosine with the exact gradient over training.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
INITS = {  # the authors' convention: Torch7 init and ε = 1e-5 (UORO only reads ε)
    "flax": {"init": "flax"},
    "torch7": {"init": "torch7"},
}
AUTHORS_EPS = 1e-5
LEARNS = "below"


def learns_below(task: str) -> float:
    """The loss under which a run has learned a task's long-range part: a quarter of the
    way from the no-long-range-memory floor to the optimum (a model that recalls part of
    what it must carry, not one that only shaves the floor)."""
    _, _, optimum, no_memory = CHAR_TASKS[task]
    return no_memory - 0.25 * (no_memory - optimum)


DEMO_METHODS = ("snap1", "uoro", "tbptt1", "tbptt4")
CHAR_METHODS = ("uoro", "uoro_t16", "uoro_k4", "tbptt1", "tbptt4", "tbptt16")
TORCH7_METHODS = ("uoro", "uoro_t16", "tbptt1", "tbptt4", "tbptt16")
FAMILY_TASKS = ("anbn_1_32", "brackets_5_5_1_10")
FAMILY_RUNS = {  # cell: methods
    "gru": ("snap1",),
    "lstm": ("snap1",),
    "simple": ("kf_rtrl", "snap1", "uoro", "tbptt1", "tbptt16"),
    "elementwise_mgu": ("snap1", "uoro", "tbptt1", "tbptt16"),
}
AUTHORS_LOGS = [  # (cell, method, characters, cumulative, recent low, recent high), §6
    ("gru", "uoro", 360_000, 0.271, 0.22, 0.28),
    ("lstm", "uoro", 240_000, 0.262, 0.19, 0.27),
    ("gru", "uoro_t16", 120_000, 0.285, 0.24, 0.24),
]
IB_RUNS = {  # name: (algorithm, truncation, SGD rate)
    "tbptt1": ("tbptt", 1, 1e-5),
    "tbptt10": ("tbptt", 10, 1e-5),
    "tbptt100": ("tbptt", 100, 1e-5),
    "rtrl": ("rtrl", 1, 1e-5),
    "uoro_lr1e-5": ("uoro", 1, 1e-5),
    "uoro_lr1e-4": ("uoro", 1, 1e-4),
}
KEEP_COLUMNS = ("step", "seed", "bits_per_char", "loss", "theta", "skipped")


class Run(NamedTuple):
    """One training run of the reproduction: a name, a config file and overrides."""

    name: str
    config: str
    overrides: dict


class Budget(NamedTuple):
    char_steps: int
    ib_steps: int
    text_steps: int
    seeds: int
    log_every: int


# ----------------------------------------------------------------------------- runs


def char_runs(budget: Budget, tasks=None, cells=None, inits=None) -> list[Run]:
    runs = []
    for init in inits or INITS:
        for task in tasks or CHAR_TASKS:
            for cell in cells or ("gru", "lstm"):
                for method in CHAR_METHODS if init == "flax" else TORCH7_METHODS:
                    runs.append(_char_run(task, cell, method, init, budget))
    return runs


def family_runs(budget: Budget, tasks=None) -> list[Run]:
    return [
        _char_run(task, cell, method, "flax", budget)
        for task in tasks or FAMILY_TASKS
        for cell, methods in FAMILY_RUNS.items()
        for method in methods
        if not (cell in ("gru", "lstm") and method != "snap1")
    ]


def _char_run(task, cell, method, init, budget: Budget) -> Run:
    config, task_args, _, _ = CHAR_TASKS[task]
    overrides = {
        "task_args": task_args,
        "model": cell,
        "hidden_size": 64,
        "steps": budget.char_steps,
        "num_seeds": budget.seeds,
        "log_every": budget.log_every,
        "checkpoint_every": budget.char_steps,
        "chunk": 2000,
        "nonfinite": "skip",
        **METHODS[method],
        **INITS[init],
    }
    if init == "torch7" and overrides["algorithm"] == "uoro":
        overrides["eps"] = AUTHORS_EPS
    return Run(f"{task}_{cell}_{method}_{init}", f"configs/{config}.py", overrides)


def influence_runs(budget: Budget) -> list[Run]:
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
        )
        for name, (algorithm, truncation, rate) in IB_RUNS.items()
    ]


def execute(job) -> tuple[str, float]:
    """Runs (or resumes, or skips when finished) one run and copies its rows to OUT."""
    run, runs_dir, out = job
    from uorojax import experiment

    config = experiment.config_from_file(os.path.join(ROOT, run.config), run.overrides)
    config.quiet = True
    workdir = os.path.join(runs_dir, run.name)
    start = time.time()
    experiment.run(config, workdir)
    rows = experiment.read_rows(os.path.join(workdir, "metrics.csv"))
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    with open(os.path.join(out, "runs", f"{run.name}.csv"), "w", newline="") as f:
        columns = [
            k for k in rows[0] if k in KEEP_COLUMNS or k.startswith(("cumulative", "recent"))
        ]
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
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
    """A run's rows as arrays per metric, shaped (seeds, log points), or None."""
    rows = read_csv(os.path.join(out, "runs", f"{name}.csv"))
    if rows is None:
        return None
    seeds = sorted({int(r.get("seed") or 0) for r in rows})
    by_seed = {s: [r for r in rows if int(r.get("seed") or 0) == s] for s in seeds}
    length = min(len(v) for v in by_seed.values())
    data = {"step": np.array([int(r["step"]) for r in by_seed[seeds[0]][:length]])}
    for key in rows[0]:
        if key in ("step", "seed"):
            continue
        data[key] = np.array([[float(r[key]) for r in by_seed[s][:length]] for s in seeds])
    return data


def final(data: dict, key: str = "bits_per_char") -> np.ndarray:
    """Per seed, the mean of the last 10 % of the logged points."""
    tail = max(1, data[key].shape[1] // 10)
    return data[key][:, -tail:].mean(1)


def at_step(data: dict, key: str, step: int) -> np.ndarray | None:
    """Per seed, the value logged at ``step`` (None if not logged)."""
    where = np.nonzero(data["step"] == step)[0]
    return None if len(where) == 0 else data[key][:, where[0]]


def fmt(values) -> str:
    return " / ".join(f"{v:.3f}" for v in np.atleast_1d(values))


# ----------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, x, runs, label, band=True, **kwargs):
    runs = np.asarray(runs)
    (line,) = ax.plot(
        x, np.median(runs, axis=0), label=f"{label} (n={runs.shape[0]})", lw=1.3, **kwargs
    )
    if band and runs.shape[0] > 1:
        ax.fill_between(x, runs.min(0), runs.max(0), color=line.get_color(), alpha=0.2, lw=0)


def _save(plt, fig, out, name, title, lines, heading):
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{name}.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    lines += [f"![{heading}]({name}.png)", ""]


def _floors(ax, task):
    _, _, optimum, no_memory = CHAR_TASKS[task]
    ax.axhline(optimum, color="k", ls="--", lw=1, label=f"optimum {optimum:.3f}")
    ax.axhline(no_memory, color="0.4", ls=":", lw=1, label=f"no long-range memory {no_memory:.3f}")


# ----------------------------------------------------------------------------- sections


def influence_section(out, lines, claims):
    from uorojax import tasks

    data = {name: read_run(out, f"influence_{name}") for name in IB_RUNS}
    if any(d is None for d in data.values()):
        return
    fixed = tasks.influence_balancing().fixed_point
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, d in data.items():
        loss = np.clip(np.where(np.isfinite(d["loss"]), d["loss"], np.nan), 1e-12, 1e12)
        _band(axes[0], d["step"], loss, name)
        _band(axes[1], d["step"], d["theta"], name, band=bool(np.all(np.abs(d["theta"]) < 10)))
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss 0.5 (s[0] - 1)² (mean over 100 steps)")
    axes[1].axhline(fixed, color="k", ls="--", lw=1, label="fixed point -1/6")
    axes[1].set_ylabel("θ")
    axes[1].set_ylim(-1.5, 2.0)
    for ax in axes:
        ax.set_xlabel("steps")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    lines += ["## Influence balancing", ""]
    _save(
        plt,
        fig,
        out,
        "influence_balancing",
        "Influence balancing (n=23), SGD; median and min-max over seeds",
        lines,
        "influence balancing",
    )
    lines += [
        "| run | SGD rate | final θ (per seed) | final loss (median) | steps skipped |",
        "|---|---|---|---|---|",
    ]
    theta = {n: d["theta"][:, -1] for n, d in data.items()}
    loss = {n: d["loss"][:, -1] for n, d in data.items()}
    skipped = {n: d["skipped"].sum(1) * (d["step"][1] - d["step"][0]) for n, d in data.items()}
    for name, (_, _, rate) in IB_RUNS.items():
        lines.append(
            f"| {name} | {rate:g} | {', '.join(f'{t:.4g}' for t in theta[name])} | "
            f"{np.median(loss[name]):.3g} | {int(np.median(skipped[name]))} |"
        )
    lines.append("")
    converged = lambda n: bool(np.all(np.abs(theta[n] - fixed) < 1e-2))  # noqa: E731
    diverged = lambda n: bool(
        np.all(
            (np.abs(theta[n] - fixed) > 0.1)
            & ((loss[n] > 1.0) | (skipped[n] > 0) | ~np.isfinite(loss[n]))
        )
    )  # noqa: E731,E501
    claims += [
        ("Influence balancing: TBPTT(1) and TBPTT(10) diverge", diverged("tbptt1") and diverged("tbptt10"), f"final θ {theta['tbptt1'][0]:.3g} and {theta['tbptt10'][0]:.3g}; θ* = {fixed:.4f}"),
        ("Influence balancing: exact RTRL converges to θ* = -1/6 (SGD 1e-5)", converged("rtrl"), f"final θ {theta['rtrl'][0]:.5f}"),
        ("Influence balancing: UORO converges at SGD 1e-5", converged("uoro_lr1e-5"), "final θ " + ", ".join(f"{t:.4f}" for t in theta["uoro_lr1e-5"])),
        ("Influence balancing: UORO at SGD 1e-4 can diverge from its variance", not converged("uoro_lr1e-4"), "final θ " + ", ".join(f"{t:.3g}" for t in theta["uoro_lr1e-4"])),
    ]  # fmt: skip


def chars_section(out, lines, claims, init: str):
    present = False
    for task, (_, _, optimum, no_memory) in CHAR_TASKS.items():
        runs = {
            (cell, m): read_run(out, f"{task}_{cell}_{m}_{init}")
            for cell in ("gru", "lstm")
            for m in CHAR_METHODS
        }
        runs = {k: v for k, v in runs.items() if v is not None}
        if not runs:
            continue
        if not present:
            convention = (
                "flax's init"
                if init == "flax"
                else "the authors' convention (Torch7 init, ε = 1e-5)"
            )
            lines += [f"## Character tasks, {convention}", ""]
            present = True
        plt = _plt()
        cells = [c for c in ("gru", "lstm") if any(k[0] == c for k in runs)]
        fig, axes = plt.subplots(
            1, len(cells), figsize=(6 * len(cells), 4.2), sharey=True, squeeze=False
        )
        axes = axes[0]
        for ax, cell in zip(axes, cells):
            for m in CHAR_METHODS:
                if (cell, m) in runs:
                    d = runs[(cell, m)]
                    _band(ax, d["step"], d["bits_per_char"], m)
            _floors(ax, task)
            ax.set_xscale("log")
            ax.set_xlabel("characters seen")
            ax.set_title(f"{cell.upper()}-64", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
        axes[0].set_ylabel("bits per character (mean over a log interval)")
        lines += [f"### {task}", ""]
        _save(
            plt,
            fig,
            out,
            f"chars_{task}_{init}",
            f"{task}, {init} init: online batch 1, Adam γ=1e-3 α=1.5e-2; median and min-max over seeds",
            lines,
            task,
        )
        lines += [
            f"Entropy floors: optimum {optimum:.3f}, no long-range memory {no_memory:.3f} bits/char. "
            "Final bits/char: mean of the last 10 % of the run, per seed.",
            "",
            "| model | " + " | ".join(CHAR_METHODS) + " |",
            "|---|" + "---|" * len(CHAR_METHODS),
        ]
        for cell in ("gru", "lstm"):
            cells = [
                fmt(final(runs[(cell, m)])) if (cell, m) in runs else "not run"
                for m in CHAR_METHODS
            ]
            lines.append(f"| {cell} | " + " | ".join(cells) + " |")
        lines.append("")
        for cell in ("gru", "lstm"):
            med = {
                m: float(np.median(final(runs[(cell, m)])))
                for m in CHAR_METHODS
                if (cell, m) in runs
            }
            where = f"{task} {cell.upper()}-64 ({init})"
            for uoro, tbptt in (("uoro", "tbptt1"), ("uoro_t16", "tbptt16")):
                if uoro in med and tbptt in med:
                    claims.append(
                        (
                            f"{where}: {uoro} beats {tbptt} (median at least 0.01 bits/char lower)",
                            med[uoro] < med[tbptt] - 0.01,
                            f"{uoro} {med[uoro]:.3f}, {tbptt} {med[tbptt]:.3f}",
                        )
                    )
            for m in ("uoro", "uoro_k4", "uoro_t16"):
                if m in med:
                    claims.append(
                        (
                            f"{where}: {m} learns long-range structure ({LEARNS} {learns_below(task):.3f})",
                            med[m] < learns_below(task),
                            f"{m} {med[m]:.3f}; optimum {optimum:.3f}",
                        )
                    )
    if init and present:
        authors_table(out, lines, claims, init)


def authors_table(out, lines, claims, init):
    lines += [
        f"### Against the authors' logs (anbn(1,32), {init} init)",
        "",
        "The authors' committed logs (field notes §6) at the same character counts, with both of their metrics in bits/char; ours per seed.",
        "",
        "| run | characters | authors' cumulative | ours | authors' recent | ours |",
        "|---|---|---|---|---|---|",
    ]
    for cell, method, chars, cumulative, low, high in AUTHORS_LOGS:
        d = read_run(out, f"anbn_1_32_{cell}_{method}_{init}")
        if d is None:
            continue
        cum, rec = (
            at_step(d, "cumulative_bits_per_char", chars),
            at_step(d, "recent_bits_per_char", chars),
        )
        if cum is None:
            continue
        recent = f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"
        lines.append(
            f"| {cell.upper()}-64 {method} | {chars:,} | {cumulative:.3f} | {fmt(cum)} | {recent} | {fmt(rec)} |"
        )
        claims.append((
            f"anbn(1,32) {cell.upper()}-64 {method} ({init}) at {chars:,} chars: cumulative loss at or below the authors' {cumulative:.3f} (+0.01)",
            float(np.median(cum)) <= cumulative + 0.01,
            f"median cumulative {np.median(cum):.3f}, recent {np.median(rec):.3f}",
        ))  # fmt: skip
    lines.append("")


def family_section(out, lines, claims):
    cells = [(cell, m) for cell, methods in FAMILY_RUNS.items() for m in methods]
    names = {task: {} for task in FAMILY_TASKS}
    for task in FAMILY_TASKS:
        for cell, m in cells:
            if cell in ("gru", "lstm"):
                for m2 in ("snap1", "uoro", "uoro_t16", "tbptt1", "tbptt16"):
                    d = read_run(out, f"{task}_{cell}_{m2}_flax")
                    if d is not None:
                        names[task][(cell, m2)] = d
            else:
                d = read_run(out, f"{task}_{cell}_{m}_flax")
                if d is not None:
                    names[task][(cell, m)] = d
    if not any(names.values()):
        return
    lines += ["## The estimator family: learning curves", ""]
    plt = _plt()
    for task, runs in names.items():
        if not runs:
            continue
        _, _, optimum, no_memory = CHAR_TASKS[task]
        cell_list = [c for c in FAMILY_RUNS if any(k[0] == c for k in runs)]
        fig, axes = plt.subplots(
            1, len(cell_list), figsize=(4.6 * len(cell_list), 4.2), sharey=True, squeeze=False
        )
        for ax, cell in zip(axes[0], cell_list):
            for (c, m), d in sorted(runs.items()):
                if c == cell:
                    _band(ax, d["step"], d["bits_per_char"], m)
            _floors(ax, task)
            ax.set_xscale("log")
            ax.set_xlabel("characters seen")
            ax.set_title(f"{cell}-64", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("bits per character")
        axes[0][0].set_ylim(optimum - 0.1, no_memory + 0.6)  # a diverging seed's spike off-scale
        lines += [f"### {task}", ""]
        _save(
            plt,
            fig,
            out,
            f"family_{task}",
            f"{task}: online estimators, batch 1; median and min-max over seeds",
            lines,
            task,
        )
        methods = sorted({m for _, m in runs})
        lines += ["| cell | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for cell in cell_list:
            row = [fmt(final(runs[(cell, m)])) if (cell, m) in runs else "" for m in methods]
            lines.append(f"| {cell} | " + " | ".join(row) + " |")
        lines += [
            "",
            f"Entropy floors: optimum {optimum:.3f}, no long-range memory {no_memory:.3f}.",
            "",
        ]
        for cell in cell_list:
            med = {m: float(np.median(final(runs[(cell, m)]))) for c, m in runs if c == cell}
            for m in ("snap1", "kf_rtrl"):
                if m in med and "uoro" in med:
                    claims.append(
                        (
                            f"{task} {cell}-64: {m} beats UORO (median at least 0.01 bits/char lower)",
                            med[m] < med["uoro"] - 0.01,
                            f"{m} {med[m]:.3f}, UORO {med['uoro']:.3f}"
                            + (f", TBPTT(16) {med['tbptt16']:.3f}" if "tbptt16" in med else ""),
                        )
                    )  # noqa: E501
                if m in med:
                    claims.append(
                        (
                            f"{task} {cell}-64: {m} learns long-range structure ({LEARNS} {learns_below(task):.3f})",
                            med[m] < learns_below(task),
                            f"{m} {med[m]:.3f}",
                        )
                    )


def read_csv(path: str) -> list[dict] | None:
    """The rows of a CSV file, or None if it has none (or does not exist)."""
    from uorojax.experiment import read_rows

    return read_rows(path) or None


def quality_section(out, lines, claims):
    rows = read_csv(os.path.join(out, "gradient_quality.csv"))
    if rows is None:
        return
    meta = json.load(open(os.path.join(out, "gradient_quality.json")))
    lines += [
        "## Gradient quality against exact RTRL",
        "",
        meta["description"],
        "",
        "| model | estimator | target | relative bias of the mean | relative variance of one estimate | mean cosine | mean norm ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['estimator']} | {r['target']} | {float(r['relative_bias']):.3g} | "
            f"{float(r['relative_variance']):.3g} | {float(r['mean_cosine']):.3f} | {float(r['mean_norm_ratio']):.3f} |"
        )
    lines.append("")
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 6), squeeze=False)
    for j, model in enumerate(models):
        sub = [r for r in rows if r["model"] == model]
        names = [r["estimator"] for r in sub]
        axes[0][j].bar(names, [float(r["mean_cosine"]) for r in sub], color="tab:blue")
        axes[1][j].bar(
            names, [max(float(r["relative_variance"]), 1e-6) for r in sub], color="tab:orange"
        )
        axes[1][j].set_yscale("log")
        axes[0][j].set_title("\n".join(textwrap.wrap(model, 32)), fontsize=8)
        for ax in axes[:, j]:
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
            ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("mean cosine with the exact gradient")
    axes[1][0].set_ylabel("relative variance of one estimate\n(deterministic: drawn at 1e-6)")
    _save(
        plt,
        fig,
        out,
        "gradient_quality",
        "Gradient quality against exact RTRL (frozen params, many keys)",
        lines,
        "gradient quality",
    )
    by = {(r["model"], r["estimator"]): r for r in rows}
    for model in models:
        for m in ("kf_rtrl", "snap1", "uoro_k4"):
            if (model, m) in by and (model, "uoro") in by:
                a, b = (
                    float(by[(model, m)]["mean_cosine"]),
                    float(by[(model, "uoro")]["mean_cosine"]),
                )
                claims.append(
                    (
                        f"Gradient quality, {model}: {m}'s mean cosine with the exact gradient beats UORO's",
                        a > b,
                        f"{m} {a:.3f}, UORO {b:.3f}",
                    )
                )


def text_section(out, lines, claims):
    rows = read_csv(os.path.join(out, "text_gradient_quality.csv"))
    if rows is None:
        return
    plt = _plt()
    step = [int(r["step"]) / 1000 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(step, [float(r["relative_variance"]) for r in rows], "o-")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("relative variance E‖g - E g‖² / ‖g*‖²")
    axes[1].plot(step, [float(r["mean_cosine"]) for r in rows], "o-", label="after a segment")
    axes[1].plot(
        step, [float(r["mean_cosine_first_step"]) for r in rows], "s--", label="first step (exact)"
    )
    axes[1].set_ylabel("mean cosine(g, g*)")
    axes[1].legend(fontsize=7)
    axes[2].plot(step[1:], [float(r["bits_per_char"]) for r in rows[1:]], "o-")
    axes[2].set_ylabel("training bits per character")
    for ax in axes:
        ax.set_xlabel("thousands of characters trained")
        ax.grid(alpha=0.3)
    lines += ["## Character-level text: UORO's gradient variance and cosine", ""]
    _save(
        plt,
        fig,
        out,
        "text_gradient_quality",
        "Character-level text (Python help texts), GRU-64, UORO: one gradient estimate",
        lines,
        "text",
    )
    lines += [
        "| characters trained | relative variance | mean cosine | mean norm ratio | bits/char (last interval) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {int(r['step']):,} | {float(r['relative_variance']):.3g} | {float(r['mean_cosine']):.3f} | {float(r['mean_norm_ratio']):.3g} | {float(r['bits_per_char']):.3f} |"
        )
    lines.append("")
    var = np.array([float(r["relative_variance"]) for r in rows[1:]])
    half = len(var) // 2
    early, late = np.median(var[:half]), np.median(var[half:])
    claims.append(
        (
            "Text GRU-64: UORO's gradient variance does not grow during training (second half within 10x of the first)",
            bool(np.all(np.isfinite(var)) and late <= 10 * early),
            f"median {early:.3g} then {late:.3g}",
        )
    )  # noqa: E501
    cos = [float(r["mean_cosine"]) for r in rows]
    claims.append(
        (
            "Text GRU-64: a single UORO estimate is positively aligned with the exact gradient",
            bool(np.mean(cos) > 0),
            f"mean cosine {np.mean(cos):.3f}",
        )
    )  # noqa: E501


def headline_section(out, lines, claims):
    """The demo's headline: an online method that learns the long-range part of distant
    brackets (5,5,1,10) where truncated BPTT, at a truncation shorter than the gap,
    stays at the no-memory floor."""
    task, cell = "brackets_5_5_1_10", "gru"
    runs = {m: read_run(out, f"{task}_{cell}_{m}_flax") for m in DEMO_METHODS}
    runs = {m: d for m, d in runs.items() if d is not None}
    if "snap1" not in runs or "tbptt4" not in runs:
        return
    _, _, optimum, no_memory = CHAR_TASKS[task]
    med = {m: float(np.median(final(d))) for m, d in runs.items()}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m, d in runs.items():
        _band(ax, d["step"], d["bits_per_char"], m)
    _floors(ax, task)
    ax.set_xlabel("characters seen")
    ax.set_ylabel("bits per character")
    ax.set_ylim(optimum - 0.1, no_memory + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    chars = int(runs["snap1"]["step"][-1])
    lines += ["## Headline: long-range structure learned online", ""]
    _save(
        plt,
        fig,
        out,
        "headline",
        f"Distant brackets (5,5,1,10), GRU-64, online batch 1, {chars:,} chars",
        lines,
        "headline",
    )
    lines += (
        [
            "The saved character must be recalled 8 steps after it was seen. A model without "
            f"that memory cannot do better than {no_memory:.3f} bits/char; the optimum is {optimum:.3f}.",
            "",
            "| method | final bits/char per seed |",
            "|---|---|",
        ]
        + [f"| {m} | {fmt(final(d))} |" for m, d in runs.items()]
        + [""]
    )
    learned = med["snap1"] < learns_below(task)
    missed = med["tbptt4"] >= learns_below(task)
    claims.insert(0, (
        f"Headline: SnAp-1 learns distant brackets' recall online ({LEARNS} {learns_below(task):.3f}) where TBPTT(4) does not, after {chars:,} chars",
        learned and missed,
        ", ".join(f"{m} {v:.3f}" for m, v in med.items()),
    ))  # fmt: skip


def write_results(out: str) -> str:
    lines, claims = [], []
    headline_section(out, lines, claims)
    influence_section(out, lines, claims)
    for init in INITS:
        chars_section(out, lines, claims, init)
    family_section(out, lines, claims)
    quality_section(out, lines, claims)
    text_section(out, lines, claims)
    head = ["# Reproducing Tallec & Ollivier (2017), and the estimators after UORO", ""]
    meta_path = os.path.join(out, "meta.json")
    if os.path.exists(meta_path):
        meta = json.load(open(meta_path))
        head += [f"Produced by `{meta['command']}` on {meta['machine']}.", ""]
    table = [
        "## Claims",
        "",
        "A run *learns long-range structure* when its final loss (median over seeds) is below "
        "the task's no-long-range-memory floor by at least a quarter of the floor's gap to the "
        "optimum (field notes §6): it recalls part of what the task asks it to carry, rather "
        "than shaving the floor.",
        "",
        "| claim | reproduced | numbers |",
        "|---|---|---|",
    ]
    table += [f"| {c} | {'yes' if ok else '**no**'} | {n} |" for c, ok, n in claims]
    table.append("")
    discussion = os.path.join(out, "discussion.md")
    if os.path.exists(discussion):
        table += [open(discussion).read().strip(), ""]
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(head + table + lines))
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- analyses


QUALITY_METHODS = {  # name: (registry algorithm, options), from METHODS
    name: (METHODS[name]["algorithm"], {k: v for k, v in METHODS[name].items() if k != "algorithm"})
    for name in ("uoro", "uoro_k4", "uoro_t16", "tbptt1", "tbptt16", "snap1", "kf_rtrl")
}


def quality_models(runs_dir: str, segment: int):
    """(label, model, params, state, xs, ys): small models at init on distant brackets,
    and the GRU-64s that UORO trained in the chars part (seed 0, its final state), on a
    held-out segment of their task."""
    import jax
    import jax.numpy as jnp

    import uorojax
    from uorojax import experiment, tasks
    from uorojax.tree import first

    stream = tasks.DistantBrackets(5, 5, 1, 10, seed=0)
    xs, ys = (jnp.asarray(a) for a in stream.next_chunk(segment))
    for cell in ("simple", "gru"):
        model = uorojax.linen_model(cell, 32, stream.vocab_size, vocab_size=stream.vocab_size)
        params, state0 = model.init(jax.random.key(0), xs[0])
        yield f"{cell}-32 at init, brackets_5_5_1_10", model, params, state0, xs, ys
    for task in FAMILY_TASKS:
        workdir = os.path.join(runs_dir, f"{task}_gru_uoro_flax")
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):
            continue
        ts, exp = experiment.load_train_state(workdir)
        config, task_args = CHAR_TASKS[task][:2]
        probe = tasks.make_stream(exp.config.task, seed=1000, **task_args)
        xs, ys = (jnp.asarray(a) for a in probe.next_chunk(segment))
        vocab = probe.vocab_size
        model = uorojax.linen_model("gru", 64, vocab, vocab_size=vocab)
        label = f"gru-64 trained by UORO, {task} ({int(np.ravel(ts.step)[0]):,} chars)"
        yield label, model, first(ts.params), first(ts.carry.state), xs, ys


def run_quality(out: str, runs_dir: str, segment: int, num_keys: int) -> None:
    """Gradient quality of every estimator against exact RTRL (``quality_models``)."""
    import jax

    import uorojax
    from uorojax import diagnostics, registry

    loss = uorojax.softmax_cross_entropy
    rows = []
    for label, model, params, state0, xs, ys in quality_models(runs_dir, segment):
        for name, (algorithm, options) in QUALITY_METHODS.items():
            est = registry.build_estimator(
                algorithm,
                model.apply,
                loss,
                options=registry.Options(
                    structure=model.structure, example_x=xs[0], example_y=ys[0], **options
                ),
            )
            try:  # an estimator refuses a model it cannot take (KF-RTRL: one dense layer)
                est.init_state(params, state0)
            except uorojax.ConfigError:
                continue
            stats = diagnostics.gradient_statistics(
                est, model.apply, loss, params, state0, xs, ys, jax.random.key(1), num_keys=num_keys
            )
            ends = diagnostics.emitted_steps(est, segment)[1:]  # skip the first (exact) one
            rows.append({
                "model": label,
                "estimator": name,
                "target": "window sum" if est.window > 1 else "step",
                **{f: float(np.mean(np.asarray(getattr(stats, f))[ends])) for f in ("relative_bias", "relative_variance", "mean_cosine", "mean_norm_ratio")},
            })  # fmt: skip
            print(rows[-1], flush=True)
    with open(os.path.join(out, "gradient_quality.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out, "gradient_quality.json"), "w") as f:
        json.dump({"description": (
            f"Segments of {segment} characters, params frozen, {num_keys} keys per estimator: "
            "small models at init on distant brackets (5,5,1,10) from the zero state, and the "
            "GRU-64s trained by UORO in the chars part (seed 0) from their final state on a "
            "held-out segment of their task. Every statistic is averaged over the steps where "
            "the estimator emits a gradient (after the first): per-step estimators against the "
            "exact dL_t/dθ, windowed ones against the exact gradient of the window's summed "
            "loss (with the full history). The relative bias of the mean over keys falls like "
            "1/sqrt(keys) for an unbiased estimator; for TBPTT and SnAp-1 it is their bias."
        )}, f)  # fmt: skip


def run_text(out: str, runs_dir: str, steps: int, points: int, segment: int, num_keys: int) -> None:
    """UORO's gradient quality on text over training (GRU-64): the runner trains the
    model in stages (each rerun resumes it), and between stages the diagnostics measure
    one gradient estimate against the exact one on a held-out segment."""
    import jax
    import jax.numpy as jnp

    import uorojax
    from uorojax import diagnostics, experiment, tasks

    config = experiment.config_from_file(
        os.path.join(ROOT, "configs/text.py"),
        {"steps": steps, "log_every": 1000, "chunk": 1000, "nonfinite": "skip", "quiet": True,
         "checkpoint_every": max(1000, steps // points)},
    )  # fmt: skip
    workdir = os.path.join(runs_dir, "text_gru_uoro")
    probe = tasks.CharText(seed=1000)
    rows, every = [], steps // points
    for done in range(0, steps + 1, every):
        if done:
            config.steps = done
            experiment.run(config, workdir)  # resumes the previous stage
            ts, exp = experiment.load_train_state(workdir)
            logged = experiment.read_rows(os.path.join(workdir, "metrics.csv"))
            interval = [
                float(r["bits_per_char"]) for r in logged if done - every < int(r["step"]) <= done
            ]
            params, state = ts.params, ts.carry.state
        else:
            exp = experiment.build(config)
            params, state = exp.init_model(config.seed)
            interval = [float("nan")]
        est = uorojax.uoro(exp.apply_fn, exp.loss_fn)  # one stream, as the runner trains it
        xs, ys = (jnp.asarray(a) for a in probe.next_chunk(segment))
        stats = diagnostics.gradient_statistics(
            est,
            exp.apply_fn,
            exp.loss_fn,
            params,
            state,
            xs,
            ys,
            jax.random.key(done),
            num_keys=num_keys,
        )
        rows.append({
            "step": done,
            "relative_variance": float(stats.relative_variance[-1]),
            "mean_cosine": float(stats.mean_cosine[-1]),
            "mean_norm_ratio": float(stats.mean_norm_ratio[-1]),
            "relative_bias_of_mean": float(stats.relative_bias[-1]),
            "mean_cosine_first_step": float(stats.mean_cosine[0]),
            "bits_per_char": float(np.mean(interval)),
        })  # fmt: skip
        print(f"text step {done}: {rows[-1]}", flush=True)
    with open(os.path.join(out, "text_gradient_quality.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- demo


def run_demo(out: str, runs_dir: str, workers: int) -> None:
    """The README's main job: see ``demo_runs``; writes results.md and figures."""
    execute_all(demo_runs(), runs_dir, out, workers)
    write_results(out)


def demo_runs() -> list[Run]:
    budget = Budget(char_steps=100_000, ib_steps=30_000, text_steps=0, seeds=2, log_every=2000)
    runs = influence_runs(budget)
    runs += [_char_run("brackets_5_5_1_10", "gru", m, "flax", budget) for m in DEMO_METHODS]
    return runs


# ----------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="docs/results")
    parser.add_argument(
        "--runs",
        default=None,
        help="work directories of the runs (runs/reproduce; OUT/workdirs with --demo)",
    )
    parser.add_argument(
        "--part", action="append", choices=["influence", "chars", "family", "quality", "text"]
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    parser.add_argument("--table", action="store_true", help="only redraw figures and tables")
    parser.add_argument(
        "--demo", action="store_true", help="the README's main job (about two minutes)"
    )
    parser.add_argument("--char-steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", nargs="*", choices=sorted(CHAR_TASKS))
    parser.add_argument("--cells", nargs="*", choices=["gru", "lstm"])
    parser.add_argument("--inits", nargs="*", choices=sorted(INITS))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.demo:
        run_demo(args.out, args.runs or os.path.join(args.out, "workdirs"), args.workers)
        return
    args.runs = args.runs or "runs/reproduce"
    if args.table:
        write_results(args.out)
        return
    budget = Budget(args.char_steps, 100_000, 200_000, args.seeds, 10_000)
    if args.quick:
        budget = Budget(20_000, 20_000, 4_000, 2, 2_000)
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(
            {
                "command": "python " + " ".join(sys.argv),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU",
            },
            f,
        )  # noqa: E501
    parts = args.part or ["influence", "chars", "family", "quality", "text"]
    runs = []  # the main results first: flax's init, then the family, then the authors' init
    inits = args.inits or list(INITS)
    if "influence" in parts:
        runs += influence_runs(budget)
    if "chars" in parts and "flax" in inits:
        runs += char_runs(budget, args.tasks, args.cells, ["flax"])
    if "family" in parts:
        runs += family_runs(budget, args.tasks and [t for t in args.tasks if t in FAMILY_TASKS])
    if "chars" in parts and "torch7" in inits:
        runs += char_runs(budget, args.tasks, args.cells, ["torch7"])
    execute_all(runs, args.runs, args.out, args.workers)
    if "quality" in parts:
        run_quality(
            args.out,
            args.runs,
            segment=48 if not args.quick else 32,
            num_keys=512 if not args.quick else 32,
        )
    if "text" in parts:
        quick = args.quick
        run_text(
            args.out,
            args.runs,
            budget.text_steps,
            points=2 if quick else 10,
            segment=20 if quick else 200,
            num_keys=20 if quick else 200,
        )
    write_results(args.out)


if __name__ == "__main__":
    main()
