r"""Runs one online experiment from a config file.

    python experiments/run.py --config configs/anbn.py --workdir runs/anbn \
        --config.algorithm=tbptt --config.tbptt.truncation=16

Without ``--config`` it runs ``configs/anbn.py`` of this repository. An estimator's
hyperparameters are set in its own block (``--config.ok.rank=4``). Rerunning on the same
workdir resumes from its latest checkpoint; a larger ``--config.steps`` continues the
run. See ``uorojax.runs.default_config`` for every field. A bad command line or config
prints ``error: ...`` and exits with status 2 (``--debug`` shows the traceback).

Several processes (hosts) run one experiment when started with ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (``jax.distributed.initialize``'s names), or
under a cluster JAX detects (SLURM, Open MPI, Cloud TPU pods); see docs/distributed.md:

    python experiments/run.py --config configs/anbn.py --workdir /shared/runs/anbn \
        --config.num_streams=64 --coordinator_address=10.0.0.1:1234 --num_processes=2 \
        --process_id=0   # and --process_id=1 on the second host
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from uorojax import runs as experiment
from uorojax.runs import cli
from uorojax.training import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "anbn.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: configs/anbn.py of this repository)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a workdir with another config.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a run of several processes."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.", lower_bound=0)


def body() -> int:
    if not _WORKDIR.value:
        raise flags.Error("--workdir is required: the directory for the run's outputs")
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    summary = experiment.run(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
    if distributed.is_writer():
        final = summary["final_metrics_last_10pct"]
        print(" ".join(f"{k}={v:.4g}" for k, v in sorted(final.items())))
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv, body, __doc__, DEFAULT_CONFIG))
