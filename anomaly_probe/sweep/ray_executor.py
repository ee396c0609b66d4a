"""``--executor ray``: every cell a Ray task on an existing cluster (``--address``) or a throwaway local one.

The task (:func:`anomaly_probe.sweep.ray_task.score_cell`) reserves the cell's CPUs and GPUs from the
grid, runs the cell in a temporary folder on the worker and returns the folder's files; the driver
writes them under the sweep folder. A worker that dies is retried up to ``retries`` times by Ray, then
the cell is recorded as failed with Ray's one-line reason; an error inside the run is a failed cell
at once (a bad setting fails the same way every time).
"""

from __future__ import annotations

from pathlib import Path

from anomaly_probe.errors import UserError


def import_ray():
    """``ray``, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'anomaly-probe[ray]'") from None
    return ray


def run_ray(jobs: list, sweep_dir: Path, events, address: str, retries: int = 2, local_cpus: int | None = None) -> None:
    """Run every job (pairs of Cell and CellEntry) as a Ray task; ``events`` as in :func:`~anomaly_probe.sweep.local.run_local`.

    Parameters
    ----------
    address : str
        A Ray cluster address (``ray://host:10001``, ``host:6379``, ``auto``), or ``local`` to start a
        local Ray instance for the length of the sweep. When Ray is already initialised in this process,
        that instance is used.
    retries : int
        How many times Ray retries a cell whose worker died.
    local_cpus : int or None
        CPUs of the local instance ``address="local"`` starts (None: every CPU of this machine).
    """
    ray = import_ray()
    from anomaly_probe.sweep.cellrun import CellOutcome
    from anomaly_probe.sweep.folderfiles import pack, unpack
    from anomaly_probe.sweep.ray_task import score_cell

    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, address, local_cpus)
    task = ray.remote(score_cell)
    pending = {}
    try:
        for cell, entry in jobs:
            folder = Path(sweep_dir) / entry.folder
            files = pack(folder) if folder.is_dir() else {}
            ref = task.options(num_cpus=cell.cpus, num_gpus=cell.gpus, max_retries=retries,
                               retry_exceptions=False).remote(cell.settings, str(folder), files, cell.cpus)
            pending[ref] = (entry, folder)
            events.started(entry)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            entry, folder = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
                events.finished(entry, CellOutcome("failed", f"Ray task failed after {retries + 1} attempt(s): "
                                                             f"{type(exc).__name__}: {first}"))
                continue
            unpack(result["files"], folder)
            events.finished(entry, CellOutcome(**result["outcome"]))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _init(ray, address: str, local_cpus: int | None) -> None:
    import os

    try:
        if address == "local":
            ray.init(num_cpus=local_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"--address {address!r}: cannot connect to Ray ({first})") from None
