"""Runs one online experiment from a config file.

    python experiments/run.py --config configs/anbn.py --workdir runs/anbn \
        --config.algorithm=tbptt --config.truncation=16

Rerunning on the same workdir resumes from its latest checkpoint; a larger
``--config.steps`` continues the run. See ``uorojax.experiment.default_config`` for every
field. A bad command line or config prints ``error: ...`` and exits with status 2
(``--debug`` shows the traceback).
"""

import sys

from absl import flags
from ml_collections import config_flags

from uorojax import cli, experiment

_CONFIG = config_flags.DEFINE_config_file("config", "configs/anbn.py", "Config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a workdir with another config.")


def body() -> int:
    if not _WORKDIR.value:
        raise flags.Error("--workdir is required: the directory for the run's outputs")
    summary = experiment.run(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
    final = summary["final_metrics_last_10pct"]
    print(" ".join(f"{k}={v:.4g}" for k, v in sorted(final.items())))
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv, body, list(experiment.default_config().keys())))
