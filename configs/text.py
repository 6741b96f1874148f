"""Character-level text (Python's help texts by default; task_args.path for a file)."""

from uorojax.experiment import default_config


def get_config():
    c = default_config()
    c.task = "text"
    c.task_args = {"path": None}
    c.algorithm = "uoro"
    c.model = "gru"
    c.hidden_size = 64
    c.learning_rate = 1e-3
    c.schedule = "paper"
    c.steps = 100_000
    c.chunk = 1000
    c.log_every = 500
    c.checkpoint_every = 10_000
    return c
