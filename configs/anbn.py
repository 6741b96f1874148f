"""anbn(1, 32) with a 64-unit GRU, online batch 1, Adam with the paper's schedule.

Fields not set here keep the defaults of ``uorojax.runs.default_config`` (GRU-64,
Adam 1e-3 with the schedule γ/(1 + α√t), α = 1.5e-2, chunks of 1,000 steps).
"""

from uorojax.runs.config import default_config


def get_config():
    c = default_config()
    c.task = "anbn"
    c.task_args = {"k": 1, "l": 32}
    c.steps = 100_000
    c.log_every = 500
    return c
