"""Reports over finished runs: logged rows as arrays, band figures, markdown tables, claims.

The pieces ``experiments/reproduce.py`` builds its results page from, usable on any
``metrics.csv`` or ``quality.csv`` the runner wrote:

* :func:`read_run` turns a run's rows into arrays per metric, shaped (seeds, log points);
  :func:`final` and :func:`at_step` read them;
* :func:`figure` draws panels of learning curves (the median and min-max band over
  seeds), lines and horizontal floors;
* :func:`bar_figure` draws one bar chart per group and metric;
* :func:`markdown_table` and :func:`claims_table` write markdown;
* :func:`learning_section` draws a task's learning curves against its floors, with the
  table of final values and claims on them (:func:`learns_below`), and
  :func:`results_page` writes the page.

Needs matplotlib (the ``run`` extra) for the figures.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from uorojax.tasks.registry import Floors
from uorojax.training.metric_log import read_rows


class Claim(NamedTuple):
    """A checked statement: its text, whether it holds, and the numbers behind it."""

    text: str
    holds: bool
    numbers: str


def read_run(path: str) -> dict | None:
    """A run's rows (a ``metrics.csv``) as arrays per metric, shaped (seeds, log points),
    with ``step`` one-dimensional; None when there are no rows."""
    rows = read_rows(path)
    if not rows:
        return None
    seeds = sorted({int(r.get("seed") or 0) for r in rows})
    by_seed = {s: [r for r in rows if int(r.get("seed") or 0) == s] for s in seeds}
    length = min(len(v) for v in by_seed.values())
    data = {"step": np.array([int(r["step"]) for r in by_seed[seeds[0]][:length]])}
    for key in rows[0]:
        if key not in ("step", "seed"):
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
    """Values (one per seed) as ``a / b / c`` with three decimals."""
    return " / ".join(f"{v:.3f}" for v in np.atleast_1d(values))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table, and a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def claims_table(claims: Sequence[Claim]) -> list[str]:
    """Claims as a markdown table, **no** in bold."""
    rows = [[c.text, "yes" if c.holds else "**no**", c.numbers] for c in claims]
    return markdown_table(["claim", "reproduced", "numbers"], rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str, title: str) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def band(ax, x, runs, label: str, show_band: bool = True) -> None:
    """The median over seeds (rows of ``runs``) and its min-max band."""
    runs = np.asarray(runs)
    (line,) = ax.plot(x, np.median(runs, axis=0), label=f"{label} (n={runs.shape[0]})", lw=1.3)
    if show_band and runs.shape[0] > 1:
        ax.fill_between(x, runs.min(0), runs.max(0), color=line.get_color(), alpha=0.2, lw=0)


class Panel(NamedTuple):
    """One panel of :func:`figure`.

    Attributes:
      title, xlabel, ylabel: its labels.
      bands: ``{label: (x, runs)}``: the median over the rows of ``runs`` and, where
        ``show_band``, its min-max band.
      lines: ``{label: (x, y, style)}``: plain lines (a matplotlib format string).
      floors: ``(value, label)`` horizontal lines.
      xscale, yscale, ylim: the axes' scales and limits.
      show_band: draw the min-max bands.
    """

    title: str = ""
    xlabel: str = "characters seen"
    ylabel: str = "bits per character (mean over a log interval)"
    bands: dict = {}
    lines: dict = {}
    floors: Sequence[tuple[float, str]] = ()
    xscale: str = "log"
    yscale: str = "linear"
    ylim: tuple[float, float] | None = None
    show_band: bool = True


def figure(
    path: str, title: str, panels: Sequence[Panel], width: float = 6.0, columns: int = 4
) -> list[str]:
    """Panels side by side, at most ``columns`` to a row, saved as a PNG at ``path``;
    returns the markdown that shows it (relative to the page)."""
    plt = _pyplot()
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        for label, (x, runs) in panel.bands.items():
            band(ax, x, runs, label, panel.show_band)
        for label, (x, y, style) in panel.lines.items():
            ax.plot(x, y, style, label=label)
        for (value, text), style in zip(panel.floors, ("--", ":", "-.")):
            ax.axhline(value, color="k" if style == "--" else "0.4", ls=style, lw=1, label=text)
        ax.set(xscale=panel.xscale, yscale=panel.yscale, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ax.set_title(panel.title, fontsize=10)
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2 if len(panel.bands) > 4 else 1)
    _save(plt, fig, path, title)
    return [f"![{title}]({os.path.basename(path)})", ""]


def bar_figure(
    path: str, title: str, groups: dict[str, list[dict]], metrics: dict[str, str]
) -> list[str]:
    """Bars of ``metrics`` (``{row key: axis label}``; one row of panels each) for every
    group of rows (``{group title: rows}``, a column of panels each), labelled by each
    row's ``estimator``. A metric named ``relative_variance`` is drawn on a log scale.
    Returns the markdown that shows the figure."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(metrics), len(groups), figsize=(3.6 * len(groups), 3 * len(metrics)), squeeze=False)  # fmt: skip
    for j, (group, rows) in enumerate(groups.items()):
        for i, (name, label) in enumerate(metrics.items()):
            ax = axes[i][j]
            values = [float(r[name]) for r in rows]
            if name == "relative_variance":
                values = [max(v, 1e-6) for v in values]
                ax.set_yscale("log")
            ax.bar([r["estimator"] for r in rows], values, color=f"C{i}")
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
            ax.grid(alpha=0.3, axis="y")
            if j == 0:
                ax.set_ylabel(label)
        axes[0][j].set_title("\n".join(textwrap.wrap(group, 32)), fontsize=8)
    _save(plt, fig, path, title)
    return [f"![{title}]({os.path.basename(path)})", ""]


# ----------------------------------------------------------------------------- claims on a task


def learns_below(floors: Floors) -> float:
    """The loss under which a run has learned a task's long-range part: a quarter of the
    way from the no-memory floor to the optimum; where the optimum is 0 (the copy task's
    recall), a tenth of the floor (it recalls most symbols).

    Example::

      learns_below(uorojax.tasks.registry.floors("anbn", k=1, l=32))  # 0.25
    """
    if floors.optimum == 0:
        return 0.1 * floors.no_memory
    return floors.no_memory - 0.25 * (floors.no_memory - floors.optimum)


def floor_lines(floors: Floors) -> list[tuple[float, str]]:
    """The floors as :class:`Panel` ``floors``: the optimum, then the no-memory floor."""
    return [
        (floors.optimum, f"optimum {floors.optimum:.3f}"),
        (floors.no_memory, f"no long-range memory {floors.no_memory:.3f}"),
    ]


def median_final(data: dict, key: str = "bits_per_char") -> float:
    """The median over seeds of :func:`final`."""
    return float(np.median(final(data, key)))


def learning_section(
    path: str,
    title: str,
    runs: dict,
    floors: Floors,
    where: str,
    titles: dict | None = None,
    *,
    beats: Sequence[tuple[str, str]] = (),
    learners: Sequence[str] = (),
    key: str = "bits_per_char",
    unit: str = "bits/char",
    **panel,
) -> tuple[list[str], list[Claim]]:
    """One task's learning curves, table and claims.

    Args:
      path: the figure's PNG.
      title: the figure's title.
      runs: ``{model: {method: data}}`` (a panel per model, a band per method).
      floors: the task's floors, drawn in each panel and named under the figure.
      where: a claim's subject, ``str.format``-ed with ``model`` (its title).
      titles: a model's title in panels and claims (default: its name).
      beats: ``(a, b)`` pairs: a claim that a's median final value is at least 0.01
        below b's.
      learners: methods claimed to learn the long-range part (:func:`learns_below`).
      key, unit: the metric compared, and its unit in the claims.
      **panel: further :class:`Panel` fields (``ylim``, labels).

    Returns:
      The markdown lines (figure, floors, table of final values per seed) and the claims.
    """
    titles = titles or {}
    bands = lambda r: {m: (d["step"], d[key]) for m, d in r.items()}  # noqa: E731
    panels = [Panel(titles.get(m, m), bands=bands(r), floors=floor_lines(floors), **panel) for m, r in runs.items()]  # fmt: skip
    lines = figure(path, title, panels, 6.0 if len(panels) < 3 else 4.6)
    methods = list(dict.fromkeys(m for r in runs.values() for m in r))
    lines += [f"Entropy floors: optimum {floors.optimum:.3f}, no long-range memory {floors.no_memory:.3f}. Final values: the mean of the last 10 % of the run, per seed.", ""]  # fmt: skip
    lines += markdown_table(["model", *methods], [[m, *(fmt(final(r[k], key)) if k in r else "" for k in methods)] for m, r in runs.items()])  # fmt: skip
    claims, below = [], learns_below(floors)
    for model, r in runs.items():
        value = {m: median_final(d, key) for m, d in r.items()}
        label = where.format(model=titles.get(model, model))
        claims += [Claim(f"{label}: {a} beats {b} (median at least 0.01 {unit} lower)", value[a] < value[b] - 0.01, f"{a} {value[a]:.3f}, {b} {value[b]:.3f}") for a, b in beats if a in r and b in r]  # fmt: skip
        claims += [Claim(f"{label}: {m} learns long-range structure (below {below:.3f})", value[m] < below, f"{m} {value[m]:.3f}; optimum {floors.optimum:.3f}") for m in learners if m in r]  # fmt: skip
    return lines, claims


def under_heading(heading: list[str], parts: list[tuple[list[str], tuple]]) -> tuple[list, list]:
    """Sections under one heading, written once, before the first: ``parts`` are
    ``(title lines, (lines, claims))``; returns the lines and the claims of them all."""
    lines = [line for i, (title, (body, _)) in enumerate(parts) for line in (heading if i == 0 else []) + title + body]  # fmt: skip
    return lines, [claim for _, (_, claims) in parts for claim in claims]


def quality_table(groups: dict[str, list[dict]], fields: Sequence[str]) -> list[str]:
    """A markdown table of gradient-quality rows (``quality.csv``) by group: the model,
    the estimator, its target, then ``fields`` (the first two as ``.3g``, the others
    ``.3f``)."""
    names = {"relative_bias": "relative bias of the mean", "relative_variance": "relative variance of one estimate"}  # fmt: skip
    header = ["model", "estimator", "target", *(names.get(f, f.replace("_", " ")) for f in fields)]
    cell = lambda i, v: f"{float(v):.3g}" if i < 2 else f"{float(v):.3f}"  # noqa: E731
    rows = [[g, r["estimator"], r["target"], *(cell(i, r[f]) for i, f in enumerate(fields))] for g, rows in groups.items() for r in rows]  # fmt: skip
    return markdown_table(header, rows)


def quality_over_training(path: str, title: str, rows: list[dict], logged: dict) -> tuple:
    """The gradient quality of a run's own estimator over its training (its
    ``quality.csv`` rows, measured every ``quality_every`` steps from step 0) beside its
    training loss (``logged``: :func:`read_run` of its rows, one seed): a figure of the
    relative variance, the cosine (after a segment, and at its first step) and the bits
    per character of each interval, and their table.

    Returns:
      The markdown lines, and the relative variance and mean cosine at each measurement.
    """
    steps = np.array([int(r["step"]) for r in rows])
    bits = [float(np.mean(logged["bits_per_char"][0][(logged["step"] > s - steps[1]) & (logged["step"] <= s)])) if s else float("nan") for s in steps]  # fmt: skip
    variance, cosine = (np.array([float(r[f"last_{k}"]) for r in rows]) for k in ("relative_variance", "mean_cosine"))  # fmt: skip
    x, k = dict(xlabel="thousands of characters trained", xscale="linear"), steps / 1000
    panels = [Panel(ylabel="relative variance E‖g - E g‖² / ‖g*‖²", lines={"": (k, variance, "o-")}, yscale="log", **x),
              Panel(ylabel="mean cosine(g, g*)", lines={"after a segment": (k, cosine, "o-"), "first step (exact)": (k, [float(r["first_mean_cosine"]) for r in rows], "s--")}, **x),
              Panel(ylabel="training bits per character", lines={"": (k[1:], bits[1:], "o-")}, **x)]  # fmt: skip
    lines = figure(path, title, panels, 4.7)
    lines += markdown_table(["characters trained", "relative variance", "mean cosine", "mean norm ratio", "bits/char (last interval)"],
                            [[f"{s:,}", f"{v:.3g}", f"{c:.3f}", f"{float(r['last_mean_norm_ratio']):.3g}", f"{b:.3f}"] for s, v, c, r, b in zip(steps, variance, cosine, rows, bits)])  # fmt: skip
    return lines, variance, cosine


def results_page(out: str, title: str, intro: str, sections: Sequence[tuple[list, list]]) -> str:
    """Writes ``out/results.md``: the title, the commands of ``out/meta.json`` (and its
    note), the claims of every section in a table after ``intro``, ``out/discussion.md``
    if there is one, then the sections' lines. ``sections``: ``(lines, claims)`` each.
    Returns the page's path."""
    lines = [line for section_lines, _ in sections for line in section_lines]
    claims = [claim for _, section_claims in sections for claim in section_claims]
    head = [f"# {title}", ""]
    if os.path.exists(meta_path := os.path.join(out, "meta.json")):
        meta = json.load(open(meta_path))
        head += ["Produced on " + meta["machine"] + " by", ""]
        head += [f"- `{command}`" for command in meta["commands"]] + [""]
        head += [meta["note"], ""] if "note" in meta else []
    summary = ["## Claims", "", intro, "", *claims_table(claims)]
    if os.path.exists(discussion := os.path.join(out, "discussion.md")):
        summary += [open(discussion).read().strip(), ""]
    with open(path := os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(head + summary + lines))
    print(f"wrote {path}")
    return path
