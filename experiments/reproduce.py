"""Reproduces the UORO paper's comparisons and compares the online estimators.

    python experiments/reproduce.py --out docs/results              # everything
    python experiments/reproduce.py --out /tmp/r --quick            # minutes: a smoke run
    python experiments/reproduce.py --out docs/results --part chars --workers 2
    python experiments/reproduce.py --out docs/results --table      # redraw from the CSVs
    python experiments/reproduce.py --demo --out runs/demo          # the README's main job

This file is a list of runs, claims and figures. Every run is a config (``configs/*.py``
plus overrides) run by the runner of ``experiments/run.py`` (``uorojax.runs.run``),
its seeds trained together in one compiled program; gradient quality is the runner's
measurement too (``quality_every``). Work directories go to ``--runs`` (resumable); each
run's rows are copied to ``OUT/runs/<name>.csv`` (``quality.csv`` to
``OUT/quality/<name>.csv``), from which the figures, tables and claims are drawn.

Parts:
  influence  influence balancing: TBPTT(1, 10, 100), exact RTRL and UORO at SGD rates
             1e-5 and 1e-4: final θ against the fixed point -1/6.
  chars      anbn(1,32) and distant brackets (5,5,1,10), (2,7,3,10), (0,0,10,8); GRU-64
             and LSTM-64, online batch 1, Adam with the paper's schedule: UORO (T = 1,
             T = 16, 4 samples) against TBPTT(1, 4, 16), in flax's init and in the
             authors' convention (Torch7 init, ε = 1e-5).
  family     the first two tasks with the estimators after UORO: SnAp-1, KF-RTRL, OK,
             e-prop and ES-D-RTRL on Simple, GRU, LSTM and element-wise cells, and SnAp-1
             on one- and two-layer LRUs.
  copy       the copy task: a deep LRU trained by SnAp-1, UORO and TBPTT at a fixed
             length; and the length each estimator reaches with the curriculum.
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

from uorojax.runs import report
from uorojax.runs.report import Claim, at_step, final, fmt, markdown_table
from uorojax.training.metric_log import read_rows, write_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHORS = "the authors' code and logs (github.com/ctallec/uoro)"
TASKS = {  # name: (config file, task_args, entropy floors: optimum, no long-range memory)
    "anbn_1_32": ("anbn", {"k": 1, "l": 32}, 0.143, 0.286),
    "brackets_5_5_1_10": ("distant_brackets", {"min_filler": 5, "max_filler": 5, "save": 1, "alphabet": 10}, 1.661, 1.938),
    "brackets_2_7_3_10": ("distant_brackets", {"min_filler": 2, "max_filler": 7, "save": 3, "alphabet": 10}, 1.774, 2.417),
    "brackets_0_0_10_8": ("distant_brackets", {"min_filler": 0, "max_filler": 0, "save": 10, "alphabet": 8}, 1.200, 2.400),
    "copy_5_4": ("copy", {"length": 5, "vocab": 4, "curriculum": False}, 0.0, 2.0),  # per recall step
    "copy_10_8": ("copy", {"length": 10, "vocab": 8, "curriculum": False}, 0.0, 3.0),
    "copy_curriculum": ("copy", {"length": 1, "vocab": 4, "curriculum": True}, 0.0, 2.0),
}  # fmt: skip
CHAR_TASKS = tuple(TASKS)[:4]
METHODS = {  # name: config overrides
    "uoro": {"algorithm": "uoro"}, "uoro_t16": {"algorithm": "uoro", "truncation": 16},
    "uoro_k4": {"algorithm": "uoro", "num_samples": 4},
    **{f"tbptt{t}": {"algorithm": "tbptt", "truncation": t} for t in (1, 4, 16, 32)},
    **{name: {"algorithm": name} for name in ("snap1", "kf_rtrl", "eprop", "rflo", "es_d_rtrl")},
    **{f"ok{r}": {"algorithm": "ok", "rank": r} for r in (1, 2, 4, 8)},
}  # fmt: skip
MODELS = {  # name: config overrides
    **{cell: {"model": cell, "hidden_size": 64, "num_layers": 1} for cell in ("gru", "lstm", "simple", "elementwise_mgu")},
    "lru": {"model": "lru", "hidden_size": 64, "num_layers": 1},  # one LRU layer, 64 complex units
    "leaky": {"model": "leaky_rnn", "hidden_size": 64, "num_layers": 1, "tau": 4.0},  # Murray's, for RFLO
    "lru_stack1": {"model": "lru_stack", "num_layers": 1, "hidden_size": 32, "model_dim": 32},
    "lru_stack2": {"model": "lru_stack", "num_layers": 2, "hidden_size": 32, "model_dim": 32},
    "lru_stack4": {"model": "lru_stack", "num_layers": 4, "hidden_size": 32, "model_dim": 32},
}  # fmt: skip
INITS = {"flax": {"init": "flax"}, "torch7": {"init": "torch7", "eps": 1e-5}}  # ε: UORO's
CHAR_METHODS = ("uoro", "uoro_t16", "uoro_k4", "tbptt1", "tbptt4", "tbptt16")
TORCH7_METHODS = ("uoro", "uoro_t16", "tbptt1", "tbptt4", "tbptt16")
DEMO_METHODS = ("snap1", "uoro", "tbptt1", "tbptt4")
FAMILY = {  # model: its methods on anbn_1_32 and brackets_5_5_1_10, at the char budget
    "gru": ("snap1",), "lstm": ("snap1",), "simple": ("kf_rtrl", "snap1", "uoro", "tbptt1", "tbptt16"),
    "elementwise_mgu": ("snap1", "uoro", "tbptt1", "tbptt16"),
}  # fmt: skip
FAMILY_SHOWN = (
    "snap1",
    "uoro",
    "uoro_t16",
    "tbptt1",
    "tbptt16",
    "kf_rtrl",
)  # GRU, LSTM: from chars
NEW_FAMILY = {  # model: its methods at the family budget (the rest of the family, and LRUs)
    "simple": ("snap1", "kf_rtrl", "ok1", "ok4", "eprop", "es_d_rtrl", "uoro", "tbptt16"),
    "gru": ("snap1", "eprop", "es_d_rtrl", "uoro", "tbptt16"), "lstm": ("snap1", "eprop", "uoro", "tbptt16"),
    "leaky": ("rflo", "snap1", "uoro", "tbptt16"), "lru": ("snap1", "uoro", "tbptt16"), "lru_stack1": ("snap1", "uoro", "tbptt16"), "lru_stack2": ("snap1", "uoro", "tbptt16"),
}  # fmt: skip
LEARNERS = ("snap1", "kf_rtrl", "ok1", "ok4", "eprop", "rflo", "es_d_rtrl")  # the family's claims
COPY_TASKS = {"copy_5_4": 1, "copy_10_8": 2}  # the deep LRU's copy settings: budgets in copy_steps
CURRICULUM_SCALE = 4  # the curriculum's budget in copy_steps
COPY_METHODS = ("snap1", "uoro", "tbptt1", "tbptt4", "tbptt32")
CURRICULUM_METHODS = ("snap1", "kf_rtrl", "ok1", "ok4", "eprop", "es_d_rtrl", "uoro", "tbptt1", "tbptt16")  # fmt: skip
OK_PUBLISHED = "38-45 after 2·10^6 steps (128 units, rank 16, batch 16; KTP 15-19): Benzing et al. (2019)'s committed logs"  # fmt: skip
AUTHORS_LOGS = [  # (cell, method, characters, cumulative, recent low, recent high)
    ("gru", "uoro", 360_000, 0.271, 0.22, 0.28),
    ("lstm", "uoro", 240_000, 0.262, 0.19, 0.27),
    ("gru", "uoro_t16", 120_000, 0.285, 0.24, 0.24),
]
IB_RUNS = {  # name: (algorithm, truncation, SGD rate)
    "tbptt1": ("tbptt", 1, 1e-5), "tbptt10": ("tbptt", 10, 1e-5), "tbptt100": ("tbptt", 100, 1e-5),
    "rtrl": ("rtrl", 1, 1e-5), "uoro_lr1e-5": ("uoro", 1, 1e-5), "uoro_lr1e-4": ("uoro", 1, 1e-4),
}  # fmt: skip
QUALITY_TASKS = ("anbn_1_32", "brackets_5_5_1_10", "copy_5_4")
QUALITY_ESTIMATORS = ("uoro", "uoro:num_samples=4", "uoro:truncation=16", "kf_rtrl", *(f"ok:rank={r}" for r in (1, 2, 4, 8)),
                      "snap1", "eprop", "es_d_rtrl", "tbptt:truncation=1", "tbptt:truncation=16")  # fmt: skip
QUALITY_FIELDS = ("relative_bias", "relative_variance", "mean_cosine", "mean_norm_ratio")
KEEP = ("step", "seed", "bits_per_char", "loss", "theta", "skipped", "length", "recall_bits_per_char", "recall_accuracy")  # fmt: skip


class Run(NamedTuple):
    """One training run: a name, a config file and overrides."""

    name: str
    config: str
    overrides: dict


class Budget(NamedTuple):
    char_steps: int  # characters per run of the paper's tasks
    ib_steps: int
    text_steps: int
    seeds: int
    log_every: int
    family_steps: int = 0  # the family's and the LRUs' runs (0: char_steps)
    copy_steps: int = 100_000
    quality_steps: int = 50_000
    quality_segment: int = 48
    quality_keys: int = 256
    text_points: int = 10


# ----------------------------------------------------------------------------- runs


def run(task, model, method, init, budget: Budget, steps=None, **extra) -> Run:
    config, task_args, _, _ = TASKS[task]
    steps = steps or budget.char_steps
    steps -= steps % METHODS[method].get("truncation", 1)  # whole windows
    overrides = {"task_args": task_args, **MODELS[model], "steps": steps, "num_seeds": budget.seeds,
                 "log_every": budget.log_every if steps >= 10 * budget.log_every else steps // 10,
                 "checkpoint_every": steps, "chunk": 2000, "nonfinite": "skip",
                 **METHODS[method], **INITS[init], **extra}  # fmt: skip
    if overrides["algorithm"] != "uoro":
        overrides.pop("eps", None)  # the authors' ε is UORO's
    suffix = "" if steps == budget.char_steps or task.startswith("copy") else f"_{steps // 1000}k"
    return Run(f"{task}_{model}_{method}_{init}{suffix}", f"configs/{config}.py", overrides)


def influence_runs(budget: Budget, args) -> list[Run]:
    common = {"steps": budget.ib_steps, "num_seeds": max(budget.seeds, 5), "log_every": 100, "checkpoint_every": budget.ib_steps}  # fmt: skip
    return [Run(f"influence_{name}", "configs/influence_balancing.py", {"algorithm": a, "truncation": t, "learning_rate": rate, **common})
            for name, (a, t, rate) in IB_RUNS.items()]  # fmt: skip


def chars_runs(budget: Budget, args, inits=("flax",)) -> list[Run]:
    return [run(task, cell, method, init, budget) for init in inits if init in (args.inits or INITS)
            for task in args.tasks or CHAR_TASKS for cell in args.cells or ("gru", "lstm")
            for method in (CHAR_METHODS if init == "flax" else TORCH7_METHODS)]  # fmt: skip


def family_runs(budget: Budget, args) -> list[Run]:
    at = [(FAMILY, budget.char_steps), (NEW_FAMILY, budget.family_steps or budget.char_steps)]
    return list({r.name: r for family, steps in at for task in CHAR_TASKS[:2] for cell, methods in family.items()
                 for r in (run(task, cell, m, "flax", budget, steps) for m in methods)}.values())  # fmt: skip


def copy_runs(budget: Budget, args) -> list[Run]:
    fixed = [run(task, "lru_stack4", m, "flax", budget, budget.copy_steps * scale, schedule="constant") for task, scale in COPY_TASKS.items() for m in COPY_METHODS]  # fmt: skip
    return fixed + [run("copy_curriculum", "simple", m, "flax", budget, budget.copy_steps * CURRICULUM_SCALE, schedule="constant", num_streams=4)
                    for m in CURRICULUM_METHODS]  # fmt: skip


def quality_runs(budget: Budget, args) -> list[Run]:
    """Simple-64 and GRU-64 trained by SnAp-1, their gradient quality measured at step 0
    and at the end."""
    q = {"num_seeds": 1, "quality_every": budget.quality_steps, "quality_estimators": QUALITY_ESTIMATORS,
         "quality_segment": budget.quality_segment, "quality_keys": budget.quality_keys}  # fmt: skip
    extra = {"copy_5_4": {"schedule": "constant"}}
    return [run(task, cell, "snap1", "flax", budget, budget.quality_steps, **q, **extra.get(task, {}))._replace(name=f"quality_{task}_{cell}")
            for task in QUALITY_TASKS for cell in ("simple", "gru")]  # fmt: skip


def text_runs(budget: Budget, args) -> list[Run]:
    return [Run("text_gru_uoro", "configs/text.py", {
        "steps": budget.text_steps, "log_every": 1000, "chunk": 1000, "nonfinite": "skip", "checkpoint_every": budget.text_steps,
        "quality_every": budget.text_steps // budget.text_points, "quality_segment": budget.quality_segment,
        "quality_keys": budget.quality_keys})]  # fmt: skip


PARTS = {"influence": influence_runs, "chars": chars_runs, "family": family_runs, "copy": copy_runs,
         "quality": quality_runs, "text": text_runs,
         "chars_torch7": lambda budget, args: chars_runs(budget, args, ("torch7",))}  # fmt: skip


def execute(job) -> tuple[str, float]:
    """Runs (or resumes, or skips when finished) one run and copies its rows to OUT."""
    run, runs_dir, out = job
    from uorojax import runs as experiment

    config = experiment.config_from_file(os.path.join(ROOT, run.config), run.overrides)
    config.quiet = True
    workdir = os.path.join(runs_dir, run.name)
    start = time.time()
    experiment.run(config, workdir)
    rows = read_rows(os.path.join(workdir, "metrics.csv"))
    keep = [k for k in rows[0] if k in KEEP or k.startswith(("cumulative", "recent"))]
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    write_rows(
        os.path.join(out, "runs", f"{run.name}.csv"), [{k: r[k] for k in keep} for r in rows]
    )
    if os.path.exists(quality := os.path.join(workdir, "quality.csv")):
        os.makedirs(os.path.join(out, "quality"), exist_ok=True)
        shutil.copy(quality, os.path.join(out, "quality", f"{run.name}.csv"))
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


def runs_of(out, task, cells, methods, init="flax") -> dict:
    """``{cell: {method: data}}`` of the runs that exist."""
    found = {c: {m: d for m in methods if (d := read_run(out, f"{task}_{c}_{m}_{init}")) is not None} for c in cells}  # fmt: skip
    return {c: r for c, r in found.items() if r}


def learns_below(task: str) -> float:
    """The loss under which a run has learned a task's long-range part: a quarter of the
    way from the no-long-range-memory floor to the optimum; for the copy task, whose
    optimum is 0, a tenth of the floor (it recalls most symbols)."""
    _, _, optimum, no_memory = TASKS[task]
    if task.startswith("copy"):
        return 0.1 * no_memory
    return no_memory - 0.25 * (no_memory - optimum)


def med(data, key="bits_per_char") -> float:
    return float(np.median(final(data, key)))


def floors(task) -> list[tuple[float, str]]:
    _, _, optimum, no_memory = TASKS[task]
    return [
        (optimum, f"optimum {optimum:.3f}"),
        (no_memory, f"no long-range memory {no_memory:.3f}"),
    ]


def learning(out, lines, claims, task, name, title, runs, where, beats=(), learners=(), key="bits_per_char", unit="bits/char", ylim=None, **panel):  # fmt: skip
    """One task's learning curves (a panel per model of ``runs``, ``{model: {method:
    data}}``), the table of final values per seed, and the claims: each ``(a, b)`` of
    ``beats``, a's median final value at least 0.01 below b's; each method of
    ``learners``, below :func:`learns_below`. ``where`` names the model in a claim."""
    _, _, optimum, no_memory = TASKS[task]
    panels = [report.Panel(TITLES.get(m, m), bands={k: (d["step"], d[key]) for k, d in r.items()}, floors=floors(task), ylim=ylim, **panel) for m, r in runs.items()]  # fmt: skip
    lines += report.figure(
        os.path.join(out, f"{name}.png"), title, panels, 6.0 if len(panels) < 3 else 4.6
    )
    methods = list(dict.fromkeys(m for r in runs.values() for m in r))
    lines += [f"Entropy floors: optimum {optimum:.3f}, no long-range memory {no_memory:.3f}. Final values: the mean of the last 10 % of the run, per seed.", ""]  # fmt: skip
    lines += markdown_table(["model", *methods], [[m, *(fmt(final(r[k], key)) if k in r else "" for k in methods)] for m, r in runs.items()])  # fmt: skip
    for model, r in runs.items():
        value = {m: med(d, key) for m, d in r.items()}
        label = where.format(task=task, model=TITLES.get(model, model))
        claims += [Claim(f"{label}: {a} beats {b} (median at least 0.01 {unit} lower)", value[a] < value[b] - 0.01, f"{a} {value[a]:.3f}, {b} {value[b]:.3f}") for a, b in beats if a in r and b in r]  # fmt: skip
        claims += [Claim(f"{label}: {m} learns long-range structure (below {learns_below(task):.3f})", value[m] < learns_below(task), f"{m} {value[m]:.3f}; optimum {optimum:.3f}") for m in learners if m in r]  # fmt: skip


TITLES = {"gru": "GRU-64", "lstm": "LSTM-64", "simple": "Simple-64", "elementwise_mgu": "element-wise MGU-64",
          "leaky": "leaky RNN-64 (τ = 4)", "lru": "LRU, 1 layer of 64", "lru_stack1": "LRU stack, 1 layer of 32", "lru_stack2": "LRU stack, 2 layers of 32", "lru_stack4": "LRU stack, 4 layers of 32"}  # fmt: skip


# ----------------------------------------------------------------------------- sections


def headline_section(out, lines, claims, budget):
    """SnAp-1 learns distant brackets (5,5,1,10)'s recall online where truncated BPTT, at
    a truncation shorter than the gap, stays at the no-memory floor."""
    task, below = "brackets_5_5_1_10", learns_below("brackets_5_5_1_10")
    runs = runs_of(out, task, ["gru"], DEMO_METHODS).get("gru", {})
    if "snap1" not in runs or "tbptt4" not in runs:
        return
    _, _, optimum, no_memory = TASKS[task]
    chars = int(runs["snap1"]["step"][-1])
    panel = report.Panel(bands={m: (d["step"], d["bits_per_char"]) for m, d in runs.items()}, floors=floors(task), ylim=(optimum - 0.1, no_memory + 0.5))  # fmt: skip
    lines += ["## Headline: long-range structure learned online", "", *report.figure(os.path.join(out, "headline.png"), f"Distant brackets (5,5,1,10), GRU-64, online batch 1, {chars:,} chars", [panel], 7.0)]  # fmt: skip
    lines += [f"The saved character must be recalled 8 steps after it was seen. A model without that memory cannot do better than {no_memory:.3f} bits/char; the optimum is {optimum:.3f}.", ""]  # fmt: skip
    lines += markdown_table(["method", "final bits/char per seed"], [[m, fmt(final(d))] for m, d in runs.items()])  # fmt: skip
    claims.insert(0, Claim(f"Headline: SnAp-1 learns distant brackets' recall online (below {below:.3f}) where TBPTT(4) does not, after {chars:,} chars",
                           med(runs["snap1"]) < below <= med(runs["tbptt4"]), ", ".join(f"{m} {med(d):.3f}" for m, d in runs.items())))  # fmt: skip


def influence_section(out, lines, claims, budget):
    from uorojax import tasks

    data = {name: read_run(out, f"influence_{name}") for name in IB_RUNS}
    if any(d is None for d in data.values()):
        return
    fixed = tasks.influence_balancing().fixed_point
    theta = {n: d["theta"][:, -1] for n, d in data.items()}
    loss = {n: d["loss"][:, -1] for n, d in data.items()}
    skipped = {n: d["skipped"].sum(1) * (d["step"][1] - d["step"][0]) for n, d in data.items()}
    bounded = lambda a: np.clip(np.where(np.isfinite(a), a, np.nan), 1e-12, 1e12)  # noqa: E731
    panels = [report.Panel(xlabel="steps", ylabel="loss 0.5 (s[0] - 1)² (mean over 100 steps)", bands={n: (d["step"], bounded(d["loss"])) for n, d in data.items()}, yscale="log"),
              report.Panel(xlabel="steps", ylabel="θ", bands={n: (d["step"], d["theta"]) for n, d in data.items()}, floors=[(fixed, "fixed point -1/6")], ylim=(-1.5, 2.0))]  # fmt: skip
    lines += ["## Influence balancing", "", *report.figure(os.path.join(out, "influence_balancing.png"), "Influence balancing (n=23), SGD; median and min-max over seeds", panels, 5.5)]  # fmt: skip
    lines += markdown_table(["run", "SGD rate", "final θ (per seed)", "final loss (median)", "steps skipped"],
                            [[n, f"{rate:g}", ", ".join(f"{t:.4g}" for t in theta[n]), f"{np.median(loss[n]):.3g}", str(int(np.median(skipped[n])))] for n, (_, _, rate) in IB_RUNS.items()])  # fmt: skip
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


def chars_section(out, lines, claims, budget, init):
    heading = [f"## Character tasks, {'flax' if init == 'flax' else 'the authors'} init{'' if init == 'flax' else ' (Torch7, ε = 1e-5)'}", ""]  # fmt: skip
    for task in CHAR_TASKS:
        if runs := runs_of(out, task, ("gru", "lstm"), CHAR_METHODS, init):
            lines += heading + [f"### {task}", ""]
            heading = []
            learning(out, lines, claims, task, f"chars_{task}_{init}", f"{task}, {init} init: online batch 1, Adam γ=1e-3 α=1.5e-2; median and min-max over seeds",
                     runs, f"{{task}} {{model}} ({init})", beats=(("uoro", "tbptt1"), ("uoro_t16", "tbptt16")), learners=("uoro", "uoro_k4", "uoro_t16"))  # fmt: skip
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
        rows.append([f"{cell.upper()}-64 {method}", f"{chars:,}", f"{cumulative:.3f}", fmt(cum), f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}", fmt(rec)])  # fmt: skip
        claims.append(Claim(f"anbn(1,32) {cell.upper()}-64 {method} ({init}) at {chars:,} chars: cumulative loss at or below the authors' {cumulative:.3f} (+0.01)",
                            float(np.median(cum)) <= cumulative + 0.01, f"median cumulative {np.median(cum):.3f}, recent {np.median(rec):.3f}"))  # fmt: skip
    lines += markdown_table(["run", "characters", "authors' cumulative", "ours", "authors' recent", "ours"], rows)  # fmt: skip


def family_section(out, lines, claims, budget):
    steps = budget.family_steps or budget.char_steps
    passes = [(FAMILY, budget.char_steps, "", FAMILY_SHOWN), (NEW_FAMILY, steps, f"_{steps // 1000}k", tuple(METHODS))]  # fmt: skip
    if steps == budget.char_steps:  # one budget: one section
        passes = [({m: FAMILY.get(m, ()) + NEW_FAMILY.get(m, ()) for m in {**FAMILY, **NEW_FAMILY}}, steps, "", tuple(METHODS))]  # fmt: skip
    for family, at, suffix, shown in passes:
        heading = [f"## The estimator family, {at:,} characters", ""]
        for task in CHAR_TASKS[:2]:
            runs = {c: {m: d for m in shown if (d := read_run(out, f"{task}_{c}_{m}_flax{suffix}")) is not None} for c in family}  # fmt: skip
            if runs := {c: r for c, r in runs.items() if r}:
                lines += heading + [f"### {task}", ""]
                heading = []
                _, _, optimum, no_memory = TASKS[task]
                learning(out, lines, claims, task, f"family_{task}{suffix}", f"{task}: online estimators, batch 1, {at:,} chars; median and min-max over seeds", runs,
                         "{task} {model}" + (f" ({at:,} chars)" if suffix else ""), beats=[(m, "uoro") for m in LEARNERS], learners=LEARNERS, ylim=(optimum - 0.1, no_memory + 0.6))  # fmt: skip


def copy_section(out, lines, claims, budget):
    heading = ["## The copy task: a deep LRU learned online", "", "A 4-layer LRU stack of width 32 with 32 complex state units a layer, one stream, Adam 1e-3; loss per recall step in bits."
               " TBPTT(4)'s window is shorter than the recall gap, TBPTT(32)'s covers a whole episode.", ""]  # fmt: skip
    for task, scale in COPY_TASKS.items():
        if runs := runs_of(out, task, ["lru_stack4"], COPY_METHODS):
            length, vocab = (TASKS[task][1][k] for k in ("length", "vocab"))
            lines += heading + [f"### Length {length} over {vocab} symbols, {budget.copy_steps * scale:,} steps", "", f"The recall comes {length + 1} steps after the symbol; an episode is {2 * length + 1} steps.", ""]  # fmt: skip
            heading = []
            learning(out, lines, claims, task, f"copy_lru_{length}_{vocab}", f"Copy (length {length}, {vocab} symbols), deep LRU (4 layers), online batch 1", runs, f"copy ({length}, {vocab}) {{model}}",
                     beats=(("snap1", "tbptt1"), ("snap1", "tbptt4"), ("tbptt32", "snap1")), learners=COPY_METHODS, key="recall_bits_per_char", unit="bits", ylabel="recall loss (bits per recall step)", xlabel="steps")  # fmt: skip
    if runs := runs_of(out, "copy_curriculum", ["simple"], CURRICULUM_METHODS).get("simple"):
        lines += ["## The copy task with a curriculum", "", f"Simple-64 (tanh), 4 streams, Adam 1e-3, {budget.copy_steps * CURRICULUM_SCALE:,} steps; the length grows by one when a chunk's recall loss is under 0.15 bits. "
                  f"Published for comparison: OK reaches {OK_PUBLISHED}.", ""]  # fmt: skip
        panel = report.Panel(xlabel="steps", ylabel="copy length", bands={m: (d["step"], d["length"]) for m, d in runs.items()})  # fmt: skip
        lines += report.figure(os.path.join(out, "copy_curriculum.png"), "Copy with a curriculum: the length reached, Simple-64", [panel])  # fmt: skip
        reached = {m: d["length"][:, -1] for m, d in runs.items()}
        lines += markdown_table(["estimator", "length reached per seed", "recall bits at the end"], [[m, " / ".join(f"{v:.0f}" for v in reached[m]), fmt(final(runs[m], "recall_bits_per_char"))] for m in runs])  # fmt: skip
        claims += [Claim(f"Copy curriculum, Simple-64: {a} reaches at least {b}'s length", np.median(reached[a]) >= np.median(reached[b]), f"{a} {np.median(reached[a]):.0f}, {b} {np.median(reached[b]):.0f}")
                   for a, b in (("ok4", "kf_rtrl"), ("kf_rtrl", "uoro"), ("snap1", "tbptt1")) if a in reached and b in reached]  # fmt: skip


def quality_section(out, lines, claims, budget):
    groups = {}
    for task, cell in ((t, c) for t in QUALITY_TASKS for c in ("simple", "gru")):
        for r in read_rows(os.path.join(out, "quality", f"quality_{task}_{cell}.csv")):
            groups.setdefault(f"{TITLES[cell]} {'at init' if r['step'] == '0' else 'trained by SnAp-1'}, {task}", []).append(r)  # fmt: skip
    if not groups:
        return
    lines += ["## Gradient quality against the exact gradient", "",
              f"Held-out segments of {budget.quality_segment} steps, params frozen, {budget.quality_keys} keys per estimator, from the model's state at init and after {budget.quality_steps:,} steps of SnAp-1: "
              "per-step estimators against the exact dL_t/dθ, windowed ones against the exact gradient of the window's summed loss (with the full history), averaged over the steps where the estimator "
              "emits a gradient and a target exists (after the first). The relative bias of the mean over keys falls like 1/sqrt(keys) for an unbiased estimator; for TBPTT, SnAp-1, e-prop and ES-D-RTRL it is their bias.", ""]  # fmt: skip
    lines += markdown_table(["model", "estimator", "target", "relative bias of the mean", "relative variance of one estimate", "mean cosine", "mean norm ratio"],
                            [[g, r["estimator"], r["target"], *(f"{float(r[f]):.3g}" for f in QUALITY_FIELDS[:2]), *(f"{float(r[f]):.3f}" for f in QUALITY_FIELDS[2:])] for g, rows in groups.items() for r in rows])  # fmt: skip
    lines += report.bar_figure(os.path.join(out, "gradient_quality.png"), "Gradient quality against the exact gradient (frozen params, many keys)", groups,
                               {"mean_cosine": "mean cosine with the exact gradient", "relative_variance": "relative variance of one estimate\n(deterministic: drawn at 1e-6)"})  # fmt: skip
    for group, rows in groups.items():
        q = {r["estimator"]: (float(r["mean_cosine"]), float(r["relative_variance"])) for r in rows}
        claims += [Claim(f"Gradient quality, {group}: {m}'s mean cosine with the exact gradient beats UORO's", q[m][0] > q["uoro"][0], f"{m} {q[m][0]:.3f}, UORO {q['uoro'][0]:.3f}")
                   for m in ("kf_rtrl", "snap1", "ok:rank=1", "uoro:num_samples=4") if m in q and "uoro" in q]  # fmt: skip
        if (
            len(ranks := [q[f"ok:rank={r}"][1] for r in (1, 2, 4, 8) if f"ok:rank={r}" in q]) > 1
            and "kf_rtrl" in q
        ):
            claims.append(Claim(f"Gradient quality, {group}: OK's variance falls with the rank, and at rank 1 is at most KF-RTRL's (+10 %)",
                                bool(np.all(np.diff(ranks) < 0) and ranks[0] <= 1.1 * q["kf_rtrl"][1]), "ranks 1, 2, 4, 8: " + ", ".join(f"{v:.3g}" for v in ranks) + f"; KF-RTRL {q['kf_rtrl'][1]:.3g}"))  # fmt: skip


def text_section(out, lines, claims, budget):
    rows, logged = (
        read_rows(os.path.join(out, "quality", "text_gru_uoro.csv")),
        read_run(out, "text_gru_uoro"),
    )
    if not rows or logged is None:
        return
    steps = np.array([int(r["step"]) for r in rows])
    bits = [float(np.mean(logged["bits_per_char"][0][(logged["step"] > s - steps[1]) & (logged["step"] <= s)])) if s else float("nan") for s in steps]  # fmt: skip
    variance, cosine = np.array([float(r["last_relative_variance"]) for r in rows]), np.array([float(r["last_mean_cosine"]) for r in rows])  # fmt: skip
    x = dict(xlabel="thousands of characters trained", xscale="linear")
    panels = [report.Panel(ylabel="relative variance E‖g - E g‖² / ‖g*‖²", lines={"": (steps / 1000, variance, "o-")}, yscale="log", **x),
              report.Panel(ylabel="mean cosine(g, g*)", lines={"after a segment": (steps / 1000, cosine, "o-"), "first step (exact)": (steps / 1000, [float(r["first_mean_cosine"]) for r in rows], "s--")}, **x),
              report.Panel(ylabel="training bits per character", lines={"": (steps[1:] / 1000, bits[1:], "o-")}, **x)]  # fmt: skip
    lines += ["## Character-level text: UORO's gradient variance and cosine", "", *report.figure(os.path.join(out, "text_gradient_quality.png"), "Character-level text (Python help texts), GRU-64, UORO: one gradient estimate", panels, 4.7)]  # fmt: skip
    lines += markdown_table(["characters trained", "relative variance", "mean cosine", "mean norm ratio", "bits/char (last interval)"],
                            [[f"{s:,}", f"{v:.3g}", f"{c:.3f}", f"{float(r['last_mean_norm_ratio']):.3g}", f"{b:.3f}"] for s, v, c, r, b in zip(steps, variance, cosine, rows, bits)])  # fmt: skip
    early, late = (
        np.median(variance[1 : 1 + (len(variance) - 1) // 2]),
        np.median(variance[1 + (len(variance) - 1) // 2 :]),
    )
    claims.append(Claim("Text GRU-64: UORO's gradient variance does not grow during training (second half within 10x of the first)", bool(np.all(np.isfinite(variance)) and late <= 10 * early), f"median {early:.3g} then {late:.3g}"))  # fmt: skip
    claims.append(Claim("Text GRU-64: a single UORO estimate is positively aligned with the exact gradient", bool(np.mean(cosine) > 0), f"mean cosine {np.mean(cosine):.3f}"))  # fmt: skip


SECTIONS = (headline_section, influence_section, lambda *a: chars_section(*a, "flax"), lambda *a: chars_section(*a, "torch7"),
            family_section, copy_section, quality_section, text_section)  # fmt: skip


def record_command(out: str, keep_existing: bool) -> None:
    """Writes OUT/meta.json: the machine and the commands whose runs OUT holds (and a
    ``note`` on them, if one was written there).

    A run with --keep-existing adds to what is recorded (it only adds runs); any other
    starts afresh.
    """
    path = os.path.join(out, "meta.json")
    meta = json.load(open(path)) if keep_existing and os.path.exists(path) else {}
    command = "python " + " ".join(sys.argv)
    meta["commands"] = [c for c in meta.get("commands", []) if c != command] + [command]
    meta["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU"
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)


def write_results(out: str, budget: Budget) -> str:
    lines, claims = [], []
    for section in SECTIONS:
        section(out, lines, claims, budget)
    head = ["# Reproducing Tallec & Ollivier (2017), and the estimators after UORO", ""]
    if os.path.exists(meta := os.path.join(out, "meta.json")):
        meta = json.load(open(meta))
        head += ["Produced on " + meta["machine"] + " by", ""]
        head += [f"- `{command}`" for command in meta["commands"]] + [""]
        head += [meta["note"], ""] if "note" in meta else []
    summary = ["## Claims", "", "A run *learns long-range structure* when its final loss (median over seeds) is below the task's no-long-range-memory floor by at least a quarter of the floor's gap "
               "to the optimum (the floors are derived in docs/tasks.md): it recalls part of what the task asks it to carry, rather than shaving the floor.", "", *report.claims_table(claims)]  # fmt: skip
    if os.path.exists(discussion := os.path.join(out, "discussion.md")):
        summary += [open(discussion).read().strip(), ""]
    with open(path := os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(head + summary + lines))
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="docs/results")
    parser.add_argument(
        "--runs", default=None, help="work directories (runs/reproduce; OUT/workdirs with --demo)"
    )
    parser.add_argument(
        "--part",
        action="append",
        choices=["influence", "chars", "family", "copy", "quality", "text"],
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    parser.add_argument("--table", action="store_true", help="only redraw figures and tables")
    parser.add_argument(
        "--demo", action="store_true", help="the README's main job (about two minutes)"
    )
    parser.add_argument("--char-steps", type=int, default=1_000_000)
    parser.add_argument(
        "--family-steps", type=int, default=200_000, help="the rest of the family and the LRUs"
    )
    parser.add_argument("--copy-steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", nargs="*", choices=CHAR_TASKS)
    parser.add_argument("--cells", nargs="*", choices=["gru", "lstm"])
    parser.add_argument("--inits", nargs="*", choices=sorted(INITS))
    parser.add_argument(
        "--keep-existing",
        action="store_true",
        help="skip the runs whose rows OUT/runs already holds",
    )
    args = parser.parse_args()  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    args.runs = args.runs or (os.path.join(args.out, "workdirs") if args.demo else "runs/reproduce")
    budget = Budget(
        args.char_steps, 100_000, 200_000, args.seeds, 10_000, args.family_steps, args.copy_steps
    )
    if args.quick:
        budget = Budget(20_000, 20_000, 4_000, 2, 2_000, 10_000, 4_000, 4_000, 32, 32, 2)
    if args.demo:  # the README's main job: the headline and influence balancing
        budget = Budget(100_000, 30_000, 0, 2, 2000)
        runs = influence_runs(budget, args) + [
            run("brackets_5_5_1_10", "gru", m, "flax", budget) for m in DEMO_METHODS
        ]
    elif args.table:
        runs = []
    else:
        record_command(args.out, args.keep_existing)
        parts = args.part or ["influence", "chars", "family", "copy", "quality", "text"]
        parts += (
            ["chars_torch7"] if "chars" in parts else []
        )  # flax's init first, the authors' last
        runs = [r for part in parts for r in PARTS[part](budget, args)]  # fmt: skip
        if args.keep_existing:
            runs = [
                r
                for r in runs
                if not os.path.exists(os.path.join(args.out, "runs", f"{r.name}.csv"))
            ]
    execute_all(runs, args.runs, args.out, args.workers)
    write_results(args.out, budget)


if __name__ == "__main__":
    main()
