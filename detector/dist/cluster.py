"""``--cluster``: a Dask client for a local cluster or a running scheduler."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from detector.errors import DetectorError

WORKER_WAIT_S = 300  # a scheduler whose workers are still being scheduled (Slurm) gets this long
USAGE = "expected local, local:N (N worker processes), tcp://HOST:PORT, tls://HOST:PORT or a scheduler file"


def _dask():
    try:
        from dask import config as dask_config
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise DetectorError("--cluster needs Dask distributed: pip install 'detector[dist]'") from None
    return Client, LocalCluster, dask_config


def parse(spec: str) -> tuple[str, int | None]:
    """("local", workers or None) or ("address", spec) or ("file", path); DetectorError if none."""
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        if n and (not n.isdigit() or int(n) < 1):
            raise DetectorError(f"--cluster {spec}: the worker count must be a positive number ({USAGE})")
        return "local", int(n) if n else None
    if spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return "address", None
    if os.path.isfile(spec):
        return "file", None
    raise DetectorError(f"--cluster {spec}: {USAGE}")


@contextmanager
def connect(spec: str, gpu: bool = False, retries: int = 3):
    """A Dask client for ``spec``. Local clusters run one single-threaded worker process per
    core (per GPU with dask-cuda, when the GPU backend is asked for). ``retries``: how often
    a task is restarted after its worker died."""
    kind, n = parse(spec)
    Client, LocalCluster, dask_config = _dask()
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.ERROR)
    cluster = client = None
    with dask_config.set({"distributed.scheduler.allowed-failures": retries}):
        try:
            if kind == "local":
                cluster = _local_cluster(LocalCluster, n, gpu)
                client = Client(cluster)
            elif kind == "file":
                client = Client(scheduler_file=spec, timeout="30s")
            else:
                client = Client(spec, timeout="30s")
            if kind != "local":
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (OSError, TimeoutError, RuntimeError, ValueError, AssertionError) as exc:
            # AssertionError/ValueError: a scheduler file that is not one
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
            raise DetectorError(f"--cluster {spec}: cannot start or reach the cluster: {exc}") from None
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _local_cluster(LocalCluster, n: int | None, gpu: bool):
    if gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            logging.getLogger("detector.dist").info("dask-cuda is not installed: local CPU worker processes")
        else:
            return LocalCUDACluster(n_workers=n, threads_per_worker=1, dashboard_address=None)
    from detector.flows.engine import available_cores

    return LocalCluster(n_workers=n or available_cores(), threads_per_worker=1, processes=True,
                        dashboard_address=None)


def describe(client) -> dict:
    """Workers and their threads, for the run's summary."""
    threads = client.nthreads()  # every worker (scheduler_info() may list only a few)
    return {"scheduler": client.scheduler.address, "workers": len(threads), "threads": sum(threads.values())}
