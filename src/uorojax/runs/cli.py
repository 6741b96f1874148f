"""The command line of ``experiments/run.py``: flags in, one-line errors out.

A mistake on the command line or in a config (an unknown field, a bad value, a missing
file) prints ``error: <message>`` on stderr and exits with status 2; ``--debug`` shows
the traceback instead. Errors that are not about the input keep their traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from uorojax import checks


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of the last ``--name=value`` or ``--name value`` (absl's choice)."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def check_command_line(argv: Sequence[str], fields: Sequence[str]) -> None:
    """What absl would report with a traceback, said in one line: a config file that
    does not exist, an override of a field the config does not have."""
    path = _flag_value(argv, "config")
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
        raise checks.ConfigError(f"config file {path!r} does not exist")
    for arg in argv:
        if arg.startswith("--config."):
            checks.known_config_field(
                arg[len("--config.") :].split("=", 1)[0].split(".", 1)[0], fields
            )


def main(argv: Sequence[str], body: Callable[[], int | None], fields: Sequence[str]) -> int:
    """Parses absl flags from ``argv`` and runs ``body``, turning input errors into
    ``error: ...`` and exit status 2 (``--debug`` keeps the traceback)."""
    from absl import flags

    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        check_command_line(argv, fields)
        flags.FLAGS(argv)
        return body() or 0
    except (flags.Error, checks.ConfigError, checks.ModelError) as err:
        if debug:
            raise
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
