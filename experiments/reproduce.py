"""Reproduces the UORO paper's comparisons and compares the online estimators.

    python experiments/reproduce.py --out docs/results              # everything
    python experiments/reproduce.py --out /tmp/r --quick            # minutes: a smoke run
    python experiments/reproduce.py --out docs/results --part chars --workers 2
    python experiments/reproduce.py --out docs/results --table      # redraw from the CSVs
    python experiments/reproduce.py --demo --out runs/demo          # the README's main job

This file is data: runs (a config of ``configs/`` and overrides; ``uorojax.runs.suite``
runs them, resumably, in ``--runs`` and copies their rows to ``OUT/runs``, ``OUT/quality``)
and sections that read them back through ``uorojax.runs.report`` against the tasks'
floors: influence balancing, the character tasks (UORO against TBPTT, flax's and the
authors' init), the estimator family, the copy task, gradient quality, and text.
"""

from __future__ import annotations

import argparse
import os
from collections import namedtuple

import numpy as np

from uorojax import tasks
from uorojax.runs import report, suite
from uorojax.runs.config import method_overrides, model_overrides
from uorojax.runs.report import Claim, Panel, at_step, final, fmt, markdown_table, median_final
from uorojax.runs.suite import Run
from uorojax.training.metric_log import read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = {  # name: (task, its arguments); the config file is configs/<task>.py
    "anbn_1_32": ("anbn", {"k": 1, "l": 32}),
    **{f"brackets_{a}_{b}_{c}_{d}": ("distant_brackets", {"min_filler": a, "max_filler": b, "save": c, "alphabet": d}) for a, b, c, d in ((5, 5, 1, 10), (2, 7, 3, 10), (0, 0, 10, 8))},
    "copy_5_4": ("copy", {"length": 5, "vocab": 4, "curriculum": False}), "copy_10_8": ("copy", {"length": 10, "vocab": 8, "curriculum": False}),
    "copy_curriculum": ("copy", {"length": 1, "vocab": 4, "curriculum": True}),
}  # fmt: skip
CHAR_TASKS = tuple(TASKS)[:4]
METHODS = {"uoro": "uoro", "uoro_t16": "uoro:truncation=16", "uoro_k4": "uoro:num_samples=4", **{f"tbptt{t}": f"tbptt:truncation={t}" for t in (1, 4, 16, 32)},
           **{m: m for m in ("snap1", "kf_rtrl", "eprop", "rflo", "es_d_rtrl")}, **{f"ok{r}": f"ok:rank={r}" for r in (1, 2, 4, 8)}}  # fmt: skip
MODELS = {  # name: config overrides
    **{cell: model_overrides(cell, hidden_size=64) for cell in ("gru", "lstm", "simple", "elementwise_mgu", "lru")},  # lru: 64 complex units
    "leaky": model_overrides("leaky_rnn", hidden_size=64, tau=4.0),  # Murray's, for RFLO
    **{f"lru_stack{n}": model_overrides("lru_stack", num_layers=n, hidden_size=32, model_dim=32) for n in (1, 2, 4)},
}  # fmt: skip
TITLES = {"gru": "GRU-64", "lstm": "LSTM-64", "simple": "Simple-64", "elementwise_mgu": "element-wise MGU-64", "leaky": "leaky RNN-64 (τ = 4)", "lru": "LRU, 1 layer of 64",
          **{f"lru_stack{n}": f"LRU stack, {n} layer{'s' * (n > 1)} of 32" for n in (1, 2, 4)}}  # fmt: skip
CHAR_METHODS, TORCH7_METHODS = ("uoro", "uoro_t16", "uoro_k4", "tbptt1", "tbptt4", "tbptt16"), ("uoro", "uoro_t16", "tbptt1", "tbptt4", "tbptt16")  # fmt: skip
DEMO_METHODS = ("snap1", "uoro", "tbptt1", "tbptt4")
FAMILY = {"gru": ("snap1",), "lstm": ("snap1",), "simple": ("kf_rtrl", "snap1", "uoro", "tbptt1", "tbptt16"), "elementwise_mgu": ("snap1", "uoro", "tbptt1", "tbptt16")}  # fmt: skip
FAMILY_SHOWN = ("snap1", "uoro", "uoro_t16", "tbptt1", "tbptt16", "kf_rtrl")  # GRU, LSTM: from chars  # fmt: skip
NEW_FAMILY = {  # model: its methods at the family budget (the rest of the family, and LRUs)
    "simple": ("snap1", "kf_rtrl", "ok1", "ok4", "eprop", "es_d_rtrl", "uoro", "tbptt16"), "gru": ("snap1", "eprop", "es_d_rtrl", "uoro", "tbptt16"),
    "lstm": ("snap1", "eprop", "uoro", "tbptt16"), "leaky": ("rflo", "snap1", "uoro", "tbptt16"), **{m: ("snap1", "uoro", "tbptt16") for m in ("lru", "lru_stack1", "lru_stack2")},
}  # fmt: skip
LEARNERS = ("snap1", "kf_rtrl", "ok1", "ok4", "eprop", "rflo", "es_d_rtrl")  # the family's claims
COPY_TASKS = {"copy_5_4": 1, "copy_10_8": 2}  # the deep LRU's copy settings: budgets in copy_steps
CURRICULUM_SCALE = 4  # the curriculum's budget in copy_steps
COPY_METHODS = ("snap1", "uoro", "tbptt1", "tbptt4", "tbptt32")
CURRICULUM_METHODS = ("snap1", "kf_rtrl", "ok1", "ok4", "eprop", "es_d_rtrl", "uoro", "tbptt1", "tbptt16")  # fmt: skip
OK_PUBLISHED = "38-45 after 2·10^6 steps (128 units, rank 16, batch 16; KTP 15-19): Benzing et al. (2019)'s committed logs"  # fmt: skip
AUTHORS_LOGS = [("gru", "uoro", 360_000, 0.271, 0.22, 0.28), ("lstm", "uoro", 240_000, 0.262, 0.19, 0.27), ("gru", "uoro_t16", 120_000, 0.285, 0.24, 0.24)]  # fmt: skip
IB_RUNS = {"tbptt1": ("tbptt:truncation=1", 1e-5), "tbptt10": ("tbptt:truncation=10", 1e-5), "tbptt100": ("tbptt:truncation=100", 1e-5),
           "rtrl": ("rtrl", 1e-5), "uoro_lr1e-5": ("uoro", 1e-5), "uoro_lr1e-4": ("uoro", 1e-4)}  # fmt: skip  # name: (method, SGD rate)
QUALITY_TASKS = ("anbn_1_32", "brackets_5_5_1_10", "copy_5_4")
QUALITY_ESTIMATORS = ("uoro", "uoro:num_samples=4", "uoro:truncation=16", "kf_rtrl", *(f"ok:rank={r}" for r in (1, 2, 4, 8)), "snap1", "eprop", "es_d_rtrl", "tbptt:truncation=1", "tbptt:truncation=16")  # fmt: skip
QUALITY_FIELDS = ("relative_bias", "relative_variance", "mean_cosine", "mean_norm_ratio")
KEEP = ("step", "seed", "bits_per_char", "loss", "theta", "skipped", "length", "recall_bits_per_char", "recall_accuracy")  # fmt: skip


# steps of the paper's tasks, influence balancing and text; seeds; log interval; the family's (0: char_steps), copy's, quality's
Budget = namedtuple("Budget", "char_steps ib_steps text_steps seeds log_every family_steps copy_steps quality_steps quality_segment quality_keys text_points",
                    defaults=(0, 100_000, 50_000, 48, 256, 10))  # fmt: skip


floors = lambda name: tasks.registry.floors(TASKS[name][0], **TASKS[name][1])  # noqa: E731


def run(task, model, method, init, budget, steps=None, **extra) -> Run:
    overrides = method_overrides(METHODS[method])
    algorithm = overrides["algorithm"]
    if init == "torch7" and algorithm == "uoro":
        overrides["uoro"]["eps"] = 1e-5  # the authors' ε is UORO's
    steps = steps or budget.char_steps
    steps -= steps % overrides[algorithm].get("truncation", 1)  # whole windows
    overrides.update({"task_args": TASKS[task][1], **MODELS[model], "steps": steps, "num_seeds": budget.seeds, "init": init,
                      "log_every": budget.log_every if steps >= 10 * budget.log_every else steps // 10,
                      "checkpoint_every": steps, "chunk": 2000, "nonfinite": "skip", **extra})  # fmt: skip
    suffix = "" if steps == budget.char_steps or task.startswith("copy") else f"_{steps // 1000}k"
    return Run(f"{task}_{model}_{method}_{init}{suffix}", os.path.join(ROOT, "configs", f"{TASKS[task][0]}.py"), overrides)  # fmt: skip


def influence_runs(budget, args) -> list[Run]:
    common = {"steps": budget.ib_steps, "num_seeds": max(budget.seeds, 5), "log_every": 100, "checkpoint_every": budget.ib_steps}  # fmt: skip
    return [Run(f"influence_{name}", os.path.join(ROOT, "configs", "influence_balancing.py"), {**method_overrides(spec), "learning_rate": rate, **common})
            for name, (spec, rate) in IB_RUNS.items()]  # fmt: skip


def chars_runs(budget, args, inits=("flax",)) -> list[Run]:
    return [run(task, cell, method, init, budget) for init in inits if init in (args.inits or ("flax", "torch7"))
            for task in args.tasks or CHAR_TASKS for cell in args.cells or ("gru", "lstm")
            for method in (CHAR_METHODS if init == "flax" else TORCH7_METHODS)]  # fmt: skip


def family_runs(budget, args) -> list[Run]:
    at = [(FAMILY, budget.char_steps), (NEW_FAMILY, budget.family_steps or budget.char_steps)]
    return list({r.name: r for family, steps in at for task in CHAR_TASKS[:2] for cell, methods in family.items()
                 for r in (run(task, cell, m, "flax", budget, steps) for m in methods)}.values())  # fmt: skip


def copy_runs(budget, args) -> list[Run]:
    fixed = [run(task, "lru_stack4", m, "flax", budget, budget.copy_steps * scale, schedule="constant") for task, scale in COPY_TASKS.items() for m in COPY_METHODS]  # fmt: skip
    return fixed + [run("copy_curriculum", "simple", m, "flax", budget, budget.copy_steps * CURRICULUM_SCALE, schedule="constant", num_streams=4) for m in CURRICULUM_METHODS]  # fmt: skip


def quality_runs(budget, args) -> list[Run]:  # Simple-64 and GRU-64 trained by SnAp-1
    q = {"num_seeds": 1, "quality_every": budget.quality_steps, "quality_estimators": QUALITY_ESTIMATORS, "quality_segment": budget.quality_segment, "quality_keys": budget.quality_keys}  # fmt: skip
    return [run(task, cell, "snap1", "flax", budget, budget.quality_steps, **q, **({"schedule": "constant"} if task.startswith("copy") else {}))._replace(name=f"quality_{task}_{cell}")
            for task in QUALITY_TASKS for cell in ("simple", "gru")]  # fmt: skip


PARTS = {"influence": influence_runs, "chars": chars_runs, "family": family_runs, "copy": copy_runs, "quality": quality_runs,
         "chars_torch7": lambda budget, args: chars_runs(budget, args, ("torch7",)),
         "text": lambda budget, args: [Run("text_gru_uoro", os.path.join(ROOT, "configs", "text.py"), {"steps": budget.text_steps, "log_every": 1000, "chunk": 1000, "nonfinite": "skip", "checkpoint_every": budget.text_steps,
                   "quality_every": budget.text_steps // budget.text_points, "quality_segment": budget.quality_segment, "quality_keys": budget.quality_keys})]}  # fmt: skip


def runs_of(out, task, cells, methods, init="flax", suffix="") -> dict:
    return suite.runs_of(out, lambda c, m: f"{task}_{c}_{m}_{init}{suffix}", cells, methods)


def learning(out, task, name, title, runs, where, **claims_and_panel) -> tuple[list, list]:
    return report.learning_section(os.path.join(out, f"{name}.png"), title, runs, floors(task), where, TITLES, **claims_and_panel)  # fmt: skip


def headline_section(out, budget):  # SnAp-1 learns what TBPTT(4) cannot: the README's claim
    task = "brackets_5_5_1_10"
    f, below, runs = floors(task), report.learns_below(floors(task)), runs_of(out, task, ["gru"], DEMO_METHODS).get("gru", {})  # fmt: skip
    if "snap1" not in runs or "tbptt4" not in runs:
        return [], []
    chars, med = int(runs["snap1"]["step"][-1]), median_final
    panel = Panel(bands={m: (d["step"], d["bits_per_char"]) for m, d in runs.items()}, floors=report.floor_lines(f), ylim=(f.optimum - 0.1, f.no_memory + 0.5))  # fmt: skip
    lines = ["## Headline: long-range structure learned online", "", *report.figure(os.path.join(out, "headline.png"), f"Distant brackets (5,5,1,10), GRU-64, online batch 1, {chars:,} chars", [panel], 7.0),
             f"The saved character must be recalled 8 steps after it was seen. A model without that memory cannot do better than {f.no_memory:.3f} bits/char; the optimum is {f.optimum:.3f}.", ""]  # fmt: skip
    lines += markdown_table(["method", "final bits/char per seed"], [[m, fmt(final(d))] for m, d in runs.items()])  # fmt: skip
    return lines, [Claim(f"Headline: SnAp-1 learns distant brackets' recall online (below {below:.3f}) where TBPTT(4) does not, after {chars:,} chars",
                         med(runs["snap1"]) < below <= med(runs["tbptt4"]), ", ".join(f"{m} {med(d):.3f}" for m, d in runs.items()))]  # fmt: skip


def influence_section(out, budget):
    data = {name: suite.read_run(out, f"influence_{name}") for name in IB_RUNS}
    if any(d is None for d in data.values()):
        return [], []
    fixed = tasks.influence_balancing().fixed_point
    theta, loss = ({n: d[k][:, -1] for n, d in data.items()} for k in ("theta", "loss"))
    skipped = {n: d["skipped"].sum(1) * (d["step"][1] - d["step"][0]) for n, d in data.items()}
    bounded = lambda a: np.clip(np.where(np.isfinite(a), a, np.nan), 1e-12, 1e12)  # noqa: E731
    panels = [Panel(xlabel="steps", ylabel="loss 0.5 (s[0] - 1)² (mean over 100 steps)", bands={n: (d["step"], bounded(d["loss"])) for n, d in data.items()}, yscale="log"),
              Panel(xlabel="steps", ylabel="θ", bands={n: (d["step"], d["theta"]) for n, d in data.items()}, floors=[(fixed, "fixed point -1/6")], ylim=(-1.5, 2.0))]  # fmt: skip
    lines = ["## Influence balancing", "", *report.figure(os.path.join(out, "influence_balancing.png"), "Influence balancing (n=23), SGD; median and min-max over seeds", panels, 5.5)]  # fmt: skip
    lines += markdown_table(["run", "SGD rate", "final θ (per seed)", "final loss (median)", "steps skipped"],
                            [[n, f"{rate:g}", ", ".join(f"{t:.4g}" for t in theta[n]), f"{np.median(loss[n]):.3g}", str(int(np.median(skipped[n])))] for n, (_, rate) in IB_RUNS.items()])  # fmt: skip
    converged = lambda n: bool(np.all(np.abs(theta[n] - fixed) < 1e-2))  # noqa: E731
    diverged = lambda n: bool(np.all((np.abs(theta[n] - fixed) > 0.1) & ((loss[n] > 1.0) | (skipped[n] > 0) | ~np.isfinite(loss[n]))))  # noqa: E731  # fmt: skip
    return lines, [
        Claim("Influence balancing: TBPTT(1) and TBPTT(10) diverge", diverged("tbptt1") and diverged("tbptt10"), f"final θ {theta['tbptt1'][0]:.3g} and {theta['tbptt10'][0]:.3g}; θ* = {fixed:.4f}"),
        Claim("Influence balancing: exact RTRL converges to θ* = -1/6 (SGD 1e-5)", converged("rtrl"), f"final θ {theta['rtrl'][0]:.5f}"),
        Claim("Influence balancing: UORO converges at SGD 1e-5", converged("uoro_lr1e-5"), "final θ " + ", ".join(f"{t:.4f}" for t in theta["uoro_lr1e-5"])),
        Claim("Influence balancing: UORO at SGD 1e-4 can diverge from its variance", not converged("uoro_lr1e-4"), "final θ " + ", ".join(f"{t:.3g}" for t in theta["uoro_lr1e-4"])),
    ]  # fmt: skip


def chars_section(out, budget, init):
    heading = [f"## Character tasks, {'flax' if init == 'flax' else 'the authors'} init{'' if init == 'flax' else ' (Torch7, ε = 1e-5)'}", ""]  # fmt: skip
    lines, claims = report.under_heading(heading, [([f"### {task}", ""], learning(out, task, f"chars_{task}_{init}", f"{task}, {init} init: online batch 1, Adam γ=1e-3 α=1.5e-2; median and min-max over seeds",
                                         runs, f"{task} {{model}} ({init})", beats=(("uoro", "tbptt1"), ("uoro_t16", "tbptt16")), learners=("uoro", "uoro_k4", "uoro_t16")))
                                         for task in CHAR_TASKS if (runs := runs_of(out, task, ("gru", "lstm"), CHAR_METHODS, init))])  # fmt: skip
    rows = []
    for cell, method, chars, cumulative, low, high in AUTHORS_LOGS if lines else ():
        d = suite.read_run(out, f"anbn_1_32_{cell}_{method}_{init}")
        if d is not None and (cum := at_step(d, "cumulative_bits_per_char", chars)) is not None:
            rec = at_step(d, "recent_bits_per_char", chars)
            rows.append([f"{cell.upper()}-64 {method}", f"{chars:,}", f"{cumulative:.3f}", fmt(cum), f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}", fmt(rec)])  # fmt: skip
            claims.append(Claim(f"anbn(1,32) {cell.upper()}-64 {method} ({init}) at {chars:,} chars: cumulative loss at or below the authors' {cumulative:.3f} (+0.01)", float(np.median(cum)) <= cumulative + 0.01, f"median cumulative {np.median(cum):.3f}, recent {np.median(rec):.3f}"))  # fmt: skip
    if rows:
        lines += [f"### Against the authors' logs (anbn(1,32), {init} init)", "", "The committed logs of the authors' code and logs (github.com/ctallec/uoro) at the same character counts, with both of their metrics in bits/char; ours per seed.", ""]  # fmt: skip
        lines += markdown_table(["run", "characters", "authors' cumulative", "ours", "authors' recent", "ours"], rows)  # fmt: skip
    return lines, claims


def family_section(out, budget):
    steps, lines, claims = budget.family_steps or budget.char_steps, [], []
    passes = [(FAMILY, budget.char_steps, "", FAMILY_SHOWN), (NEW_FAMILY, steps, f"_{steps // 1000}k", tuple(METHODS))]  # fmt: skip
    if steps == budget.char_steps:  # one budget: one section
        passes = [({m: FAMILY.get(m, ()) + NEW_FAMILY.get(m, ()) for m in {**FAMILY, **NEW_FAMILY}}, steps, "", tuple(METHODS))]  # fmt: skip
    for family, at, suffix, shown in passes:
        part = report.under_heading([f"## The estimator family, {at:,} characters", ""], [([f"### {task}", ""], learning(
            out, task, f"family_{task}{suffix}", f"{task}: online estimators, batch 1, {at:,} chars; median and min-max over seeds", runs, f"{task} {{model}}" + (f" ({at:,} chars)" if suffix else ""),
            beats=[(m, "uoro") for m in LEARNERS], learners=LEARNERS, ylim=(floors(task).optimum - 0.1, floors(task).no_memory + 0.6))) for task in CHAR_TASKS[:2] if (runs := runs_of(out, task, family, shown, suffix=suffix))])  # fmt: skip
        lines, claims = lines + part[0], claims + part[1]
    return lines, claims


def copy_section(out, budget):
    heading = ["## The copy task: a deep LRU learned online", "", "A 4-layer LRU stack of width 32 with 32 complex state units a layer, one stream, Adam 1e-3; loss per recall step in bits."
               " TBPTT(4)'s window is shorter than the recall gap, TBPTT(32)'s covers a whole episode.", ""]  # fmt: skip
    copy = lambda task: (TASKS[task][1]["length"], TASKS[task][1]["vocab"])  # noqa: E731
    lines, claims = report.under_heading(heading, [
        ([f"### Length {copy(task)[0]} over {copy(task)[1]} symbols, {budget.copy_steps * scale:,} steps", "", f"The recall comes {copy(task)[0] + 1} steps after the symbol; an episode is {2 * copy(task)[0] + 1} steps.", ""],
         learning(out, task, "copy_lru_{}_{}".format(*copy(task)), "Copy (length {}, {} symbols), deep LRU (4 layers), online batch 1".format(*copy(task)), runs, "copy ({}, {}) {{model}}".format(*copy(task)),
                  beats=(("snap1", "tbptt1"), ("snap1", "tbptt4"), ("tbptt32", "snap1")), learners=COPY_METHODS, key="recall_bits_per_char", unit="bits", ylabel="recall loss (bits per recall step)", xlabel="steps"))
        for task, scale in COPY_TASKS.items() if (runs := runs_of(out, task, ["lru_stack4"], COPY_METHODS))])  # fmt: skip
    if runs := runs_of(out, "copy_curriculum", ["simple"], CURRICULUM_METHODS).get("simple"):
        lines += ["## The copy task with a curriculum", "", f"Simple-64 (tanh), 4 streams, Adam 1e-3, {budget.copy_steps * CURRICULUM_SCALE:,} steps; the length grows by one when a chunk's recall loss is under 0.15 bits. Published for comparison: OK reaches {OK_PUBLISHED}.", ""]  # fmt: skip
        lines += report.figure(os.path.join(out, "copy_curriculum.png"), "Copy with a curriculum: the length reached, Simple-64", [Panel(xlabel="steps", ylabel="copy length", bands={m: (d["step"], d["length"]) for m, d in runs.items()})])  # fmt: skip
        reached = {m: d["length"][:, -1] for m, d in runs.items()}
        lines += markdown_table(["estimator", "length reached per seed", "recall bits at the end"], [[m, " / ".join(f"{v:.0f}" for v in reached[m]), fmt(final(runs[m], "recall_bits_per_char"))] for m in runs])  # fmt: skip
        claims += [Claim(f"Copy curriculum, Simple-64: {a} reaches at least {b}'s length", np.median(reached[a]) >= np.median(reached[b]), f"{a} {np.median(reached[a]):.0f}, {b} {np.median(reached[b]):.0f}")
                   for a, b in (("ok4", "kf_rtrl"), ("kf_rtrl", "uoro"), ("snap1", "tbptt1")) if a in reached and b in reached]  # fmt: skip
    return lines, claims


def quality_section(out, budget):
    groups, claims = {}, []
    for task, cell in ((t, c) for t in QUALITY_TASKS for c in ("simple", "gru")):
        for r in read_rows(os.path.join(out, "quality", f"quality_{task}_{cell}.csv")):
            groups.setdefault(f"{TITLES[cell]} {'at init' if r['step'] == '0' else 'trained by SnAp-1'}, {task}", []).append(r)  # fmt: skip
    if not groups:
        return [], []
    lines = ["## Gradient quality against the exact gradient", "",
             f"Held-out segments of {budget.quality_segment} steps, params frozen, {budget.quality_keys} keys per estimator, from the model's state at init and after {budget.quality_steps:,} steps of SnAp-1: "
             "per-step estimators against the exact dL_t/dθ, windowed ones against the exact gradient of the window's summed loss (with the full history), averaged over the steps where the estimator "
             "emits a gradient and a target exists (after the first). The relative bias of the mean over keys falls like 1/sqrt(keys) for an unbiased estimator; for TBPTT, SnAp-1, e-prop and ES-D-RTRL it is their bias.", ""]  # fmt: skip
    lines += report.quality_table(groups, QUALITY_FIELDS)
    lines += report.bar_figure(os.path.join(out, "gradient_quality.png"), "Gradient quality against the exact gradient (frozen params, many keys)", groups,
                               {"mean_cosine": "mean cosine with the exact gradient", "relative_variance": "relative variance of one estimate\n(deterministic: drawn at 1e-6)"})  # fmt: skip
    for group, rows in groups.items():
        q = {r["estimator"]: (float(r["mean_cosine"]), float(r["relative_variance"])) for r in rows}
        claims += [Claim(f"Gradient quality, {group}: {m}'s mean cosine with the exact gradient beats UORO's", q[m][0] > q["uoro"][0], f"{m} {q[m][0]:.3f}, UORO {q['uoro'][0]:.3f}")
                   for m in ("kf_rtrl", "snap1", "ok:rank=1", "uoro:num_samples=4") if m in q and "uoro" in q]  # fmt: skip
        ranks = [q[f"ok:rank={r}"][1] for r in (1, 2, 4, 8) if f"ok:rank={r}" in q]
        if len(ranks) > 1 and "kf_rtrl" in q:
            claims.append(Claim(f"Gradient quality, {group}: OK's variance falls with the rank, and at rank 1 is at most KF-RTRL's (+10 %)",
                                bool(np.all(np.diff(ranks) < 0) and ranks[0] <= 1.1 * q["kf_rtrl"][1]), "ranks 1, 2, 4, 8: " + ", ".join(f"{v:.3g}" for v in ranks) + f"; KF-RTRL {q['kf_rtrl'][1]:.3g}"))  # fmt: skip
    return lines, claims


def text_section(out, budget):
    rows, logged = read_rows(os.path.join(out, "quality", "text_gru_uoro.csv")), suite.read_run(out, "text_gru_uoro")  # fmt: skip
    if not rows or logged is None:
        return [], []
    lines, variance, cosine = report.quality_over_training(os.path.join(out, "text_gradient_quality.png"), "Character-level text (Python help texts), GRU-64, UORO: one gradient estimate", rows, logged)  # fmt: skip
    half = 1 + (len(variance) - 1) // 2
    early, late = np.median(variance[1:half]), np.median(variance[half:])
    return ["## Character-level text: UORO's gradient variance and cosine", "", *lines], [
        Claim("Text GRU-64: UORO's gradient variance does not grow during training (second half within 10x of the first)", bool(np.all(np.isfinite(variance)) and late <= 10 * early), f"median {early:.3g} then {late:.3g}"),
        Claim("Text GRU-64: a single UORO estimate is positively aligned with the exact gradient", bool(np.mean(cosine) > 0), f"mean cosine {np.mean(cosine):.3f}")]  # fmt: skip


SECTIONS = (headline_section, influence_section, lambda *a: chars_section(*a, "flax"), lambda *a: chars_section(*a, "torch7"), family_section, copy_section, quality_section, text_section)  # fmt: skip
INTRO = ("A run *learns long-range structure* when its final loss (median over seeds) is below the task's no-long-range-memory floor by at least a quarter of the floor's gap to the optimum (the floors are derived in docs/tasks.md): it recalls part of what the task asks it to carry, rather than shaving the floor.")  # fmt: skip


ARGS = {"--out": dict(default="docs/results"), "--runs": dict(help="work directories (runs/reproduce; OUT/workdirs with --demo)"),
        "--part": dict(action="append", choices=["influence", "chars", "family", "copy", "quality", "text"]), "--quick": dict(action="store_true", help="tiny budgets (smoke run)"),
        "--table": dict(action="store_true", help="only redraw figures and tables"), "--demo": dict(action="store_true", help="the README's main job (about two minutes)"),
        "--char-steps": dict(type=int, default=1_000_000), "--family-steps": dict(type=int, default=200_000, help="the rest of the family and the LRUs"),
        "--copy-steps": dict(type=int, default=100_000), "--seeds": dict(type=int, default=3), "--workers": dict(type=int, default=2), "--tasks": dict(nargs="*", choices=CHAR_TASKS),
        "--cells": dict(nargs="*", choices=["gru", "lstm"]), "--inits": dict(nargs="*", choices=["flax", "torch7"]),
        "--keep-existing": dict(action="store_true", help="skip the runs whose rows OUT/runs already holds")}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    for flag, options in ARGS.items():
        parser.add_argument(flag, **options)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    args.runs = args.runs or (os.path.join(args.out, "workdirs") if args.demo else "runs/reproduce")
    budget = Budget(args.char_steps, 100_000, 200_000, args.seeds, 10_000, args.family_steps, args.copy_steps)  # fmt: skip
    if args.quick:
        budget = Budget(20_000, 20_000, 4_000, 2, 2_000, 10_000, 4_000, 4_000, 32, 32, 2)
    if args.demo:  # the README's main job: the headline and influence balancing
        budget = Budget(100_000, 30_000, 0, 2, 2000)
        runs = influence_runs(budget, args) + [run("brackets_5_5_1_10", "gru", m, "flax", budget) for m in DEMO_METHODS]  # fmt: skip
    elif args.table:
        runs = []
    else:
        suite.record_command(args.out, args.keep_existing)
        parts = args.part or ["influence", "chars", "family", "copy", "quality", "text"]
        parts += ["chars_torch7"] if "chars" in parts else []  # the authors' init last
        runs = [r for part in parts for r in PARTS[part](budget, args)]
    suite.execute_all(
        runs, args.runs, args.out, KEEP, args.workers, skip_existing=args.keep_existing
    )
    report.results_page(args.out, "Reproducing Tallec & Ollivier (2017), and the estimators after UORO", INTRO, [section(args.out, budget) for section in SECTIONS])  # fmt: skip


if __name__ == "__main__":
    main()
