"""Figures from a run's work directory (matplotlib, PNG)."""

from __future__ import annotations

import csv
import json
import os


def plot_workdir(workdir: str, out: str | None = None) -> str:
    """Plots ``metrics.csv`` of a workdir (loss or bits/char, and θ when logged).

    Args:
      workdir: a directory written by :func:`uorojax.experiment.run`.
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
    steps = [int(r["step"]) for r in rows]
    key = "bits_per_char" if "bits_per_char" in rows[0] else "loss"
    panels = [key] + [k for k in ("theta", "shadow_cosine") if k in rows[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, name in zip(axes[0], panels):
        ax.plot(steps, [float(r[name]) for r in rows], lw=1)
        ax.set_xlabel("stream steps (characters)")
        unit = {"bits_per_char": "bits per character", "loss": "loss"}.get(name, name)
        ax.set_ylabel(unit)
        if name == key and summary.get("best_bits_per_char") and key == "bits_per_char":
            ax.axhline(
                summary["best_bits_per_char"], color="k", ls="--", lw=1, label="best achievable"
            )
            ax.legend()
        ax.grid(alpha=0.3)
    title = f"{config.get('task', '')} {config.get('algorithm', '')}"
    if config.get("algorithm") == "tbptt":
        title += f"({config.get('truncation')})"
    fig.suptitle(f"{title}  seed {config.get('seed', '')}".strip())
    fig.tight_layout()
    out = out or os.path.join(workdir, "metrics.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
