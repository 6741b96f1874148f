"""Cost per stream-step of one run on 1 and on 2 processes of this machine.

    python experiments/distributed_cost.py --streams 8 --steps 200

runs the same experiment (same config, same total number of streams) once as one process
and once as two local processes (CPU, gloo collectives, started by
``uorojax.distributed.launch_local``), and prints the wall time per step and per
stream-step of the compiled chunks after a warm-up chunk (compilation excluded; the best
of ``--chunks`` timed chunks), as a Markdown table.

On one machine the two processes share its cores, so this measures what splitting the
streams over processes costs (the all-reduce of the gradients and the loss at every
step), not a speed-up: a speed-up needs each process on its own host or accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from uorojax.training import distributed


def _config(args):
    from uorojax import runs as experiment

    c = experiment.default_config()
    c.task, c.task_args = "anbn", {"k": 1, "l": 32}
    c.model, c.hidden_size, c.algorithm = args.model, args.hidden_size, args.algorithm
    c.num_streams, c.chunk = args.streams, args.chunk
    c.steps = args.chunk * (args.chunks + 1)
    c.log_every, c.checkpoint_every = args.chunk, c.steps * 10
    c.quiet = True
    return c


def worker(args) -> None:
    """One process of a measured run: a warm-up chunk, then ``chunks`` timed chunks."""
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    import jax

    from uorojax import runs as experiment

    job = experiment.start(_config(args), args.workdir, overwrite=True)
    stream = job.exp.streams[0]

    def chunk():
        xs, ys = stream.next_chunk(args.chunk)
        job.ts, metrics = job.advance(job.ts, job.place_chunk(xs), job.place_chunk(ys))
        return distributed.to_host(metrics)  # waits for the chunk

    chunk()  # compiles
    times = []
    for _ in range(args.chunks):
        start = time.perf_counter()
        chunk()
        times.append(time.perf_counter() - start)
    job.close()
    if distributed.is_writer():
        per_step = min(times) / args.chunk
        print(
            json.dumps(
                {
                    "processes": jax.process_count(),
                    "streams": args.streams,
                    "ms_per_step": 1e3 * per_step,
                    "us_per_stream_step": 1e6 * per_step / args.streams,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=8, help="total streams B")
    parser.add_argument("--model", default="gru")
    parser.add_argument("--hidden_size", type=int, default=32)
    parser.add_argument("--algorithm", default="uoro")
    parser.add_argument("--chunk", type=int, default=100, help="steps per compiled chunk")
    parser.add_argument("--chunks", type=int, default=2, help="timed chunks (best taken)")
    parser.add_argument("--processes", default="1,2", help="process counts to compare")
    parser.add_argument("--timeout", type=float, default=600)
    # Set by launch_local for each worker.
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.process_id is not None:
        worker(args)
        return
    own = [
        f"--{k}={getattr(args, k)}"
        for k in ("streams", "model", "hidden_size", "algorithm", "chunk", "chunks")
    ]
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    rows = []
    for count in (int(p) for p in args.processes.split(",")):
        with tempfile.TemporaryDirectory() as workdir:
            results = distributed.launch_local(
                [os.path.abspath(__file__), *own, f"--workdir={workdir}"],
                count,
                timeout=args.timeout,
                env=env,
            )
        for index, r in enumerate(results):
            if r.returncode != 0:
                sys.exit(f"process {index} of {count} failed:\n{r.stderr[-3000:]}")
        rows.append(json.loads(results[0].stdout.strip().splitlines()[-1]))
    print(
        f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}; command: {' '.join(sys.argv)}"
    )
    print("| processes | streams | ms per step | µs per stream-step |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['processes']} | {r['streams']} | {r['ms_per_step']:.2f} | "
            f"{r['us_per_stream_step']:.1f} |"
        )


if __name__ == "__main__":
    main()
