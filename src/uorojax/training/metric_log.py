"""Logged rows of an online run: per-step metrics in, one row per log interval out.

:class:`MetricLogger` turns the trainer's per-step metrics into rows (means over each
log interval) with the UORO authors' two running metrics, and saves and restores its
running state with a checkpoint, so that a resumed run logs exactly what an
uninterrupted one does. :func:`read_rows` and :func:`write_rows` read and (atomically)
write a CSV of rows.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np


class MetricLogger:
    """Per-step metrics in, logged rows out, for every seed.

    Keeps the steps since the last complete row and the running state of the authors'
    cumulative and recent losses (float64 on the host), and can save and restore both, so
    that a resumed run logs exactly what an uninterrupted one does. Steps the trainer
    skipped (``nonfinite="skip"``) count in the ``skipped`` column and nowhere else: the
    loss columns and the running losses are over the steps that were applied, with ``t``
    counting those.
    """

    LOSSES = ("loss", "bits_per_char")

    def __init__(
        self,
        log_every: int,
        num_seeds: int,
        cross_entropy: bool,
        *,
        applied_only: tuple[str, ...] = (),
        ratios: dict[str, tuple[str, str]] | None = None,
    ):
        """Args:
        log_every: steps per row.
        num_seeds: runs logged side by side (a ``seed`` column when more than one).
        cross_entropy: the loss is in nats: the running metrics are in bits per char.
        applied_only: metrics that, like the losses, average over applied steps only.
        ratios: columns ``name: (numerator, denominator)``, the ratio of two metrics'
          means over the row's steps (a task's loss per target symbol, say).
        """
        self.applied_only = (*self.LOSSES, *applied_only)
        self.ratios = dict(ratios or {})
        self.log_every = log_every
        self.num_seeds = num_seeds
        self.unit = "bits_per_char" if cross_entropy else "loss"
        self.scale = 1.0 / math.log(2.0) if cross_entropy else 1.0
        self.counts = [0] * num_seeds
        self.total = [0.0] * num_seeds
        self.recent = [0.0] * num_seeds
        self.pending: list[dict[str, list[float]]] = [{} for _ in range(num_seeds)]

    def state(self) -> dict:
        """JSON-serialisable running state."""
        return {
            "counts": self.counts,
            "total": self.total,
            "recent": self.recent,
            "pending": self.pending,
        }

    def restore(self, state: dict) -> None:
        """Continues from :meth:`state`."""
        self.counts, self.total, self.recent = state["counts"], state["total"], state["recent"]
        self.pending = state["pending"]

    def add(self, metrics: dict, first_step: int) -> list[dict]:
        """Consumes a chunk's per-step metrics (leading seed axis when seeds > 1);
        returns the rows completed by it."""
        arrays = {n: np.asarray(v, np.float64) for n, v in metrics.items()}
        if self.num_seeds == 1:
            arrays = {n: v[None] for n, v in arrays.items()}
        length = arrays["loss"].shape[1]
        rows = []
        for s in range(self.num_seeds):
            pending = self.pending[s]
            done_before = len(pending.get("loss", []))
            ends = range(self.log_every - done_before - 1, length, self.log_every)
            running = self._running(s, arrays["loss"][s] * self.scale, arrays["skipped"][s], ends)
            values = {n: pending.get(n, []) + v[s].tolist() for n, v in arrays.items()}
            for block, (end, (cumulative, recent)) in enumerate(zip(ends, running)):
                lo, hi = block * self.log_every, (block + 1) * self.log_every
                means = {n: v[lo:hi] for n, v in values.items()}
                rows.append(self._row(first_step + end + 1, s, means, cumulative, recent))
            used = len(ends) * self.log_every
            self.pending[s] = {n: v[used:] for n, v in values.items()}
        return sorted(rows, key=lambda r: (r["step"], r.get("seed", 0)))

    def _running(self, s: int, losses, skipped, ends) -> list[tuple]:
        """Advances seed s's cumulative sum and recent loss over the applied steps of a
        chunk (float64), returning ``(cumulative, recent)`` at the chunk indices ``ends``."""
        total, recent, t = self.total[s], self.recent[s], self.counts[s]
        out, marks = [], set(ends)
        for i, (loss, skip) in enumerate(zip(losses.tolist(), skipped.tolist())):
            if not skip:
                t += 1
                rate = 1.0 / math.sqrt(t)
                total += loss
                recent = recent * (1.0 - rate) + loss * rate
            if i in marks:
                out.append((total / t if t else math.nan, recent if t else math.nan))
        self.total[s], self.recent[s], self.counts[s] = total, recent, t
        return out

    def partial_rows(self, step: int) -> list[dict]:
        """Rows for the steps since the last complete row (an incomplete log interval)."""
        return [
            self._row(
                step,
                s,
                self.pending[s],
                self.total[s] / self.counts[s] if self.counts[s] else math.nan,
                self.recent[s] if self.counts[s] else math.nan,
            )
            for s in range(self.num_seeds)
            if self.pending[s].get("loss")
        ]

    def _row(self, step, seed, values, cumulative, recent) -> dict:
        row = {"step": step}
        if self.num_seeds > 1:
            row["seed"] = seed
        applied = ~np.asarray(values["skipped"], bool)
        for name in sorted(values):
            v = np.asarray(values[name])
            if name in self.applied_only:
                v = v[applied]  # skipped steps count in "skipped" only
            row[name] = repr(float(np.mean(v))) if v.size else "nan"
        for name, (numerator, denominator) in self.ratios.items():
            top, bottom = float(row.get(numerator, "nan")), float(row.get(denominator, "nan"))
            row[name] = repr(top / bottom) if bottom > 0 else "nan"
        row[f"cumulative_{self.unit}"] = repr(cumulative)
        row[f"recent_{self.unit}"] = repr(recent)
        return row


def read_rows(path: str, keep: int | None = None) -> list[dict]:
    """The rows of a ``metrics.csv`` (the first ``keep`` of them)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows if keep is None else rows[:keep]


def write_rows(path: str, rows: list[dict]) -> None:
    """Writes rows as a CSV (their keys, in the first row's order, as the header)
    through a temporary file, so a reader never sees a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)
