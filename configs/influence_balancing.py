"""Influence balancing (n=23, 10 positive units), plain SGD 1e-5, θ0 = 0.5; θ* = -1/6."""

from uorojax.runs.config import default_config


def get_config():
    c = default_config()
    c.task = "influence_balancing"
    c.task_args = {"n": 23, "num_positive": 10, "theta0": 0.5}
    c.optimizer = "sgd"
    c.learning_rate = 1e-5
    c.schedule = "constant"
    c.steps = 100_000
    c.log_every = 500
    c.nonfinite = "skip"
    return c
