"""Reports over finished runs: logged rows as arrays, band figures, markdown tables, claims.

The pieces ``experiments/reproduce.py`` builds its results page from, usable on any
``metrics.csv`` or ``quality.csv`` the runner wrote:

* :func:`read_run` turns a run's rows into arrays per metric, shaped (seeds, log points);
  :func:`final` and :func:`at_step` read them;
* :func:`figure` draws panels of learning curves (the median and min-max band over
  seeds), lines and horizontal floors;
* :func:`bar_figure` draws one bar chart per group and metric;
* :func:`markdown_table` and :func:`claims_table` write markdown.

Needs matplotlib (the ``run`` extra) for the figures.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

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
