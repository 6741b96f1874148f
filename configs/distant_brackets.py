"""Distant brackets (5, 5, 1, 10) with a 64-unit GRU, online batch 1 (defaults as anbn)."""

from uorojax.runs.config import default_config


def get_config():
    c = default_config()
    c.task = "distant_brackets"
    c.task_args = {"min_filler": 5, "max_filler": 5, "save": 1, "alphabet": 10}
    c.steps = 100_000
    c.log_every = 500
    return c
