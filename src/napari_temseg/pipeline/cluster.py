"""Where a batch runs: in this process, on a local dask cluster, or on an existing one.

``temseg denoise|segment --scheduler ADDRESS`` sends one task per file to the workers of a
running dask.distributed scheduler (``tcp://host:8786``; one worker per GPU, see
``docs/batch.md``); ``--scheduler local`` starts a :class:`distributed.LocalCluster` on
this machine for the run. Every worker runs the same :class:`~napari_temseg.pipeline.files.FileJob`
the local batch runs, loading the model once, so results are the same wherever they are
computed. No Qt; distributed is an optional dependency (``napari-temseg[cluster]``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: how long to keep trying to reach a scheduler before giving up
CONNECT_TIMEOUT_S = 20


class ClusterError(RuntimeError):
    """The cluster could not be used (not installed, unreachable scheduler, ...)."""


def default_workers() -> int:
    """One worker per GPU when there are GPUs, else one per two CPU cores."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 2) // 2)


def threads_per_worker(workers: int) -> int:
    """torch CPU threads each local worker may use without oversubscribing the machine."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def worker_device(device: str) -> str:
    """On a worker of a multi-GPU machine, ``auto``/``cuda`` picks the worker's own GPU.

    Workers of a :class:`LocalCluster` are named 0, 1, ...; worker *i* uses GPU *i* modulo
    the number of GPUs. Anywhere else (no cluster, one GPU, an explicit ``cuda:N``) the
    device is left as given.
    """
    if device not in ("auto", "cuda"):
        return device
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return device
    if count < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    try:
        return f"cuda:{int(name) % count}"
    except (TypeError, ValueError):
        return device


@contextmanager
def batch_client(scheduler: str | None, workers: int | None = None) -> Iterator[Any]:
    """``None`` (run in this process), or a connected ``distributed.Client``.

    ``scheduler`` is None, ``"local"`` (start a LocalCluster of ``workers`` processes,
    default :func:`default_workers`, closed at the end) or a scheduler address.
    """
    if not scheduler:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusterError(
            "--scheduler needs dask.distributed: pip install 'napari-temseg[cluster]'"
        ) from exc
    if scheduler == "local":
        n = workers or default_workers()
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=40,
        )
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"could not reach the dask scheduler at {scheduler}: {exc}") from exc
    try:
        if not client.scheduler_info().get("workers"):
            client.wait_for_workers(1, timeout=60)
    except TimeoutError as exc:
        client.close()
        raise ClusterError(f"the scheduler at {scheduler} has no workers") from exc
    try:
        yield client
    finally:
        client.close()


__all__ = [
    "ClusterError",
    "batch_client",
    "default_workers",
    "threads_per_worker",
    "worker_device",
]
