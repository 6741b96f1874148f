"""Figures from a run's work directory (matplotlib, PNG)."""

from __future__ import annotations

import csv
import json
import os
import textwrap


def plot_workdir(workdir: str, out: str | None = None) -> str:
    """Plots ``metrics.csv`` of a workdir: the loss (bits/char for character tasks) with
    the authors' recent and cumulative losses, the metric the task's floors bound (the
    optimum and the no-memory floor drawn on it), the task's parameter metrics (θ) and
    the shadow cosine when logged; one line per seed.

    Args:
      workdir: a directory written by :func:`uorojax.runs.run`.
      out: the PNG path; ``workdir/metrics.png`` by default.

    Returns:
      The path of the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{workdir}/metrics.csv holds no rows")
    summary_path = os.path.join(workdir, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    config = summary.get("config", {})
    floors = summary.get("floors") or {}
    key = "bits_per_char" if "bits_per_char" in rows[0] else "loss"
    extra = [floors.get("metric"), *summary.get("param_metrics", ()), "shadow_cosine"]
    panels = [key] + [k for k in dict.fromkeys(extra) if k and k != key and k in rows[0]]
    seeds = sorted({r.get("seed") or "0" for r in rows}, key=int)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, name in zip(axes[0], panels):
        for seed in seeds:
            sub = [r for r in rows if (r.get("seed") or "0") == seed]
            steps = [int(r["step"]) for r in sub]
            label = f"seed {int(config.get('seed', 0)) + int(seed)}" if len(seeds) > 1 else None
            (line,) = ax.plot(steps, [float(r[name]) for r in sub], lw=1, label=label)
            if name == key:
                recent = [float(r[f"recent_{key}"]) for r in sub]
                ax.plot(steps, recent, lw=1, ls="--", color=line.get_color(),
                        label="recent (authors' metric)" if seed == seeds[0] else None)  # fmt: skip
        ax.set_xlabel("stream steps")
        ax.set_ylabel({"bits_per_char": "bits per character", "loss": "loss"}.get(name, name))
        if name == floors.get("metric"):
            for value, style, text in ((floors.get("optimum"), ":", "optimum"),
                                       (floors.get("no_memory"), "-.", "no-memory floor")):  # fmt: skip
                if value is not None:
                    ax.axhline(value, color="k", ls=style, lw=1, label=f"{text} {value:.3f}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill(summary.get("title", workdir), 90), fontsize=10)
    fig.tight_layout()
    out = out or os.path.join(workdir, "metrics.png")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
