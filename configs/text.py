"""Character-level text with a 64-unit GRU (defaults as anbn).

The default corpus is Python's own help texts; ``--config.task_args.path=FILE`` reads a
UTF-8 file instead.
"""

import ml_collections

from uorojax.runs.config import default_config


def get_config():
    c = default_config()
    c.task = "text"
    c.task_args = {"path": ml_collections.FieldReference(None, field_type=str)}  # None: default
    c.steps = 100_000
    c.log_every = 500
    return c
