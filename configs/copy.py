"""The copy task with a curriculum, learned online by SnAp-1 on a two-layer deep LRU.

Episodes of ``length`` random symbols over ``vocab`` data symbols, a delimiter, then the
symbols recalled in order; ``length`` grows by one whenever the loss on the recall steps
of a chunk falls below ``threshold_bits`` (0.15 bits per symbol: the curriculum of the
KF-RTRL, OK and SnAp papers). Without memory a recall step costs log2(vocab) bits. The
model is ``uorojax.lru_stack`` (hidden_size: complex state units per layer, model_dim:
the residual width), on which SnAp-1 is exact RTRL within each layer.
"""

from uorojax.runs.config import default_config


def get_config():
    c = default_config()
    c.task = "copy"
    c.task_args = {"length": 1, "vocab": 4, "curriculum": True, "threshold_bits": 0.15}
    c.model = "lru_stack"
    c.num_layers = 2
    c.hidden_size = 32
    c.model_dim = 32
    c.algorithm = "snap1"
    c.schedule = "constant"
    c.learning_rate = 1e-3
    c.steps = 100_000
    c.log_every = 1000
    return c
