"""The command line of ``experiments/run.py``: flags in, one-line errors out.

A mistake on the command line or in a config (an unknown field, a bad value, a missing
file) prints ``error: <message>`` on stderr and exits with status 2; ``--debug`` shows
the traceback instead. Errors that are not about the input keep their traceback. Errors
that name a setting name its flag (``--config.model=simple``, ``--overwrite``).
``--help`` (``-h``, ``--helpfull``) prints the flags and the config's fields.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from uorojax import checks
from uorojax.estimators import registry
from uorojax.runs.config import RunError, check_field, config_from_file, default_config

HELP = ("--help", "-h", "--helpshort", "--helpfull", "-?")


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of the last ``--name=value`` or ``--name value`` (absl's choice)."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def check_command_line(argv: Sequence[str]) -> None:
    """What absl would report with a traceback, said in one line: a config file that
    does not exist, an override of a field the config does not have or that moved
    (``--config.rank=4``: ``use --config.ok.rank=4``)."""
    path = _flag_value(argv, "config")
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
        raise checks.ConfigError(f"config file {path!r} does not exist")
    algorithm = _flag_value(argv, "config.algorithm")
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            field, value = arg[len("--config.") :].split("=", 1)
            if algorithm is None and field not in default_config():
                algorithm = config_from_file(path.split(":", 1)[0]).get("algorithm")
            check_field(field, value, algorithm)


def usage(doc: str, full: bool = False) -> str:
    """The help of the command line: its docstring, its flags (every module's with
    ``full``) and the config's fields."""
    from absl import flags

    c = default_config()
    fields = [f"{k}={v!r}" for k, v in c.items() if k not in registry.ESTIMATORS]
    listed = flags.FLAGS.get_help() if full else flags.FLAGS.main_module_help()
    lines = [doc.strip(), "", listed, ""]
    lines += ["Config fields (--config.NAME=VALUE):", *(f"  {f}" for f in fields)]
    lines.append("Estimator hyperparameters (--config.ALGORITHM.NAME=VALUE):")
    for algorithm in registry.ESTIMATORS:
        declared = registry.hyperparameter_defaults(algorithm)
        listed = ", ".join(f"{k}={v!r}" for k, v in declared.items())
        lines.append(f"  {algorithm}: {listed or '-'}")
    return "\n".join(lines)


def main(
    argv: Sequence[str],
    body: Callable[[], int | None],
    doc: str = "",
    default_config_file: str | None = None,
) -> int:
    """Parses absl flags from ``argv`` and runs ``body``, turning input errors into
    ``error: ...`` and exit status 2 (``--debug`` keeps the traceback); ``--help``
    prints :func:`usage` and returns 0.

    Args:
      argv: the command line, program name first.
      body: the program, once the flags are parsed.
      doc: the program's description, for ``--help``.
      default_config_file: the ``--config`` used when none is given (the flag defined
        without a default: absl would read a default file at import, before any check).
    """
    from absl import flags

    if any(arg in HELP for arg in argv[1:]):
        flags.FLAGS.mark_as_parsed()
        print(usage(doc, full="--helpfull" in argv))
        return 0
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if default_config_file is not None and _flag_value(argv, "config") is None:
        argv = [argv[0], f"--config={default_config_file}", *argv[1:]]
    try:
        check_command_line(argv)
        flags.FLAGS(argv)
        return body() or 0
    except (flags.Error, checks.ConfigError, checks.ModelError) as err:
        if debug:
            raise
        message = err.cli() if isinstance(err, RunError) else str(err)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return 2
