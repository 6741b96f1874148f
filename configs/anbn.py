"""anbn(1, 32) with a 64-unit GRU, online batch 1, Adam with the paper's schedule."""

from uorojax.experiment import default_config


def get_config():
    c = default_config()
    c.task = "anbn"
    c.task_args = {"k": 1, "l": 32}
    c.algorithm = "uoro"
    c.model = "gru"
    c.hidden_size = 64
    c.learning_rate = 1e-3
    c.schedule = "paper"
    c.schedule_alpha = 1.5e-2
    c.steps = 100_000
    c.chunk = 1000
    c.log_every = 500
    c.checkpoint_every = 10_000
    return c
