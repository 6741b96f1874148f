"""Runs over several processes (hosts): start-up, agreement, host-side data, local launches.

JAX's multi-controller runtime runs one Python process per host (or per accelerator);
every process runs the same program on its own devices, and arrays that span all
devices are built from each process's part (:mod:`uorojax.training.sharding`). This module holds
what the experiment runner needs around that:

* :func:`initialize`: ``jax.distributed.initialize`` from explicit settings, from a
  cluster environment JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU), or none
  (one process); CPU collectives by gloo.
* :func:`allgather_json`: every process's JSON-serialisable value, on every process
  (the streams' positions for a checkpoint).
* :func:`check_same_config`: a named error on every process when they were started with
  different configs, instead of a hang in the first collective.
* :func:`barrier`, :func:`is_writer`: synchronisation, and the one process that writes
  the logs.
* :func:`launch_local`: P processes of one command on this machine, for tests and for
  measuring what the collectives cost.

See docs/distributed.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from uorojax import checks

# jax.distributed.initialize's ValueError when neither its arguments nor a cluster
# environment gave a value: "coordinator_address should be defined.", "Number of
# processes must be defined.", ...
_UNDEFINED = "defined"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> int:
    """Joins the processes of a run; returns the number of processes.

    With all three arguments, ``jax.distributed.initialize`` with them. With some or
    none, JAX's cluster detection fills in the rest (SLURM, Open MPI, Kubernetes, Cloud
    TPU pods: what ``jax.distributed.initialize()`` detects); with none and no cluster,
    one process, as without this call. ``num_processes=1`` alone is one process.
    Collectives between processes on CPU use gloo. Call it before anything else uses
    JAX; a second call does nothing.

    Args:
      coordinator_address: ``host:port`` of process 0's coordination service.
      num_processes: the number of processes ``P``.
      process_id: this process's index in ``[0, P)``.

    Returns:
      ``jax.process_count()``.

    Raises:
      ConfigError: for settings JAX refuses (a missing value no cluster supplies, an
        index out of range) or a call after JAX started computing.

    Example::

      uorojax.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)
    """
    if jax.distributed.is_initialized():
        return jax.process_count()
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if num_processes == 1 and coordinator_address is None:
        return 1
    if not jax.config.jax_cpu_collectives_implementation:  # a choice of "mpi" stays
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        nothing_set = all(v is None for v in given.values())
        if nothing_set and _UNDEFINED in str(err) and "JAX_COORDINATOR_ADDRESS" not in os.environ:
            return 1  # no cluster environment: one process
        missing = [f"--{k}" for k, v in given.items() if v is None]
        hint = f" (no cluster environment supplied {', '.join(missing)})" if missing else ""
        raise checks.ConfigError(f"cannot start the processes: {err}{hint}") from err
    except RuntimeError as err:
        raise checks.ConfigError(
            f"cannot start the processes: {err} (initialize before any JAX computation)"
        ) from err
    return jax.process_count()


def is_writer() -> bool:
    """Whether this process writes a run's logs, summary and figures (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (nothing on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in process order, on every process."""
    if jax.process_count() == 1:
        return [data]
    from jax.experimental import multihost_utils

    lengths = multihost_utils.process_allgather(np.array([len(data)], np.int32))
    lengths = np.ravel(lengths).tolist()
    padded = np.zeros(max(lengths), np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [row[:n].tobytes() for row, n in zip(gathered, lengths)]


def allgather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable ``value``, in process order, on every process.

    Example::

      states = uorojax.distributed.allgather_json(stream.get_state())  # one per process
    """
    gathered = allgather_bytes(json.dumps(value, sort_keys=True).encode())
    return [json.loads(data) for data in gathered]


def check_same_config(config: dict) -> None:
    """Raises the same ConfigError on every process unless all hold the same config.

    Args:
      config: this process's config as a JSON-serialisable dict.

    Raises:
      ConfigError: naming the processes and the fields that differ from process 0's.
    """
    if jax.process_count() == 1:
        return
    configs = allgather_json(config)
    reference = configs[0]
    for index, other in enumerate(configs[1:], start=1):
        if other != reference:
            fields = sorted(
                k for k in set(reference) | set(other) if reference.get(k) != other.get(k)
            )
            raise checks.ConfigError(
                f"the processes were started with different configs: process {index}'s "
                f"fields {fields} differ from process 0's; start every process with the "
                "same config"
            )


class ProcessResult(NamedTuple):
    """One launched process: exit status (negative: killed by that signal), output, and
    whether it was killed after the launch's timeout or another process's failure."""

    returncode: int
    stdout: str
    stderr: str
    killed: bool


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(
    args: Sequence[str],
    num_processes: int,
    *,
    timeout: float,
    process_args: Sequence[Sequence[str]] | None = None,
    env: dict | None = None,
    cwd: str | None = None,
    grace: float = 10.0,
) -> list[ProcessResult]:
    """Runs ``python args ...`` as ``num_processes`` processes of one run on this machine.

    Each gets ``--coordinator_address=127.0.0.1:<free port> --num_processes=P
    --process_id=i`` (the flags of experiments/run.py), ``JAX_PLATFORMS=cpu`` unless
    ``env`` says otherwise, and its own ``process_args[i]``. As a cluster's launcher
    does, once a process fails the others get ``grace`` seconds to end and are then
    killed; all are killed at ``timeout``, so a hang ends in a result, not a wait.

    Args:
      args: the script and its arguments (after ``sys.executable``).
      num_processes: P.
      timeout: seconds for the whole launch.
      process_args: extra arguments per process.
      env: variables added to this process's environment.
      cwd: working directory.
      grace: seconds the others may run on after a process failed.

    Returns:
      One :class:`ProcessResult` per process, in process order.

    Example::

      results = launch_local(["experiments/run.py", "--workdir", "runs/x"], 2, timeout=300)
    """
    port = free_port()
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    procs = []
    for index in range(num_processes):
        command = [
            sys.executable,
            *args,
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={num_processes}",
            f"--process_id={index}",
            *(process_args[index] if process_args else ()),
        ]
        procs.append(
            subprocess.Popen(
                command,
                env=full_env,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    # Read output in threads so that a chatty process cannot block on a full pipe.
    outputs = [["", ""] for _ in procs]

    def drain(index, proc):
        out, err = proc.communicate()
        outputs[index][:] = [out, err]

    readers = [
        threading.Thread(target=drain, args=(i, p), daemon=True) for i, p in enumerate(procs)
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    killed = [False] * len(procs)
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        failed = any(p.returncode not in (None, 0) for p in procs)
        if now >= deadline:
            break
        if failed:
            deadline = min(deadline, now + grace)
        time.sleep(0.05)
    for index, proc in enumerate(procs):
        if proc.poll() is None:
            proc.kill()
            killed[index] = True
    for reader in readers:
        reader.join()
    return [
        ProcessResult(p.returncode, out, err, k) for p, (out, err), k in zip(procs, outputs, killed)
    ]


def to_host(tree: Any) -> Any:
    """Every leaf as a whole numpy array on this process.

    A global array that spans other processes' devices is read locally when it is
    replicated (a mean over streams, the params) and gathered otherwise, which is a
    collective: on several processes, every process must call this with the same tree.

    Example::

      metrics = uorojax.distributed.to_host(metrics)
    """

    def fetch(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(fetch, tree)
