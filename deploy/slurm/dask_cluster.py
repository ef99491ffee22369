"""Start a Dask cluster on Slurm with dask-jobqueue and write its scheduler file, for
``detector analyze ARCHIVE --cluster SCHEDULER_FILE``.

    pip install 'detector[dist]' dask-jobqueue
    python deploy/slurm/dask_cluster.py --jobs 8 --scheduler-file /scratch/$USER/detector.json &
    detector analyze /archive/dtn01 /archive/dtn02 --cluster /scratch/$USER/detector.json \\
        --config /etc/detector/detector.toml -o /scratch/$USER/alerts.jsonl \\
        --work-dir /scratch/$USER/detector-work --flows-out /scratch/$USER/flows/ --report report.html

Each Slurm job runs one worker process per core, one thread each (a partition's flow table is
single-threaded; the workers are the parallelism). The work folder must be on storage every
node can write: partitions write their results there and a rerun reuses the finished ones.
Edit the queue, account and walltime for the site; stop with Ctrl-C (the jobs are cancelled).
"""

from __future__ import annotations

import argparse
import json
import signal
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=4, help="Slurm jobs (nodes) to ask for")
    p.add_argument("--cores", type=int, default=32, help="cores per job (one worker process each)")
    p.add_argument("--memory", default="128GB", help="memory per job")
    p.add_argument("--queue", default=None, help="Slurm partition")
    p.add_argument("--account", default=None)
    p.add_argument("--walltime", default="04:00:00")
    p.add_argument("--local-directory", default="$TMPDIR", help="node-local scratch for Dask's spill files")
    p.add_argument("--scheduler-file", required=True, help="written once the scheduler is up")
    args = p.parse_args()

    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(cores=args.cores, processes=args.cores, memory=args.memory, queue=args.queue,
                           account=args.account, walltime=args.walltime, local_directory=args.local_directory,
                           job_extra_directives=["--exclusive"],
                           worker_extra_args=["--nthreads", "1"])
    cluster.scale(jobs=args.jobs)
    client = Client(cluster)
    with open(args.scheduler_file, "w", encoding="utf-8") as fh:
        json.dump(client.scheduler_info(), fh)
    print(f"scheduler {cluster.scheduler_address}; scheduler file {args.scheduler_file}; job script:")
    print(cluster.job_script())
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(5)
    except KeyboardInterrupt:
        pass
    client.close()
    cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
