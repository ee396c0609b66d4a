"""What a Ray worker does for one cell: score it in a local folder and send the folder's files back.

The worker keeps a :class:`~anomaly_probe.sweep.models.ModelCache` for its lifetime, so a worker that
gets several cells of one model loads it once. No filesystem is shared with the driver: the cell's
files (an unfinished run, to resume) come in as bytes and the finished folder goes back as bytes.
"""

from __future__ import annotations

_MODELS = None


def score_cell(settings: dict, out: str, files: dict, cpus: float) -> dict:
    """Run one cell in a temporary folder.

    Parameters
    ----------
    settings : dict
        The cell's settings (:attr:`~anomaly_probe.sweep.grid.Cell.settings`).
    out : str
        The cell's folder as the driver names it (saved as ``config.out``, so both executors write the
        same results.json).
    files : dict
        Relative path -> bytes of what the driver's folder already holds (empty for a new cell).
    cpus : float
        CPUs reserved for the task: torch uses that many threads.

    Returns
    -------
    dict
        ``outcome`` (the :class:`~anomaly_probe.sweep.cellrun.CellOutcome` fields) and ``files`` (the
        finished folder, relative path -> bytes).
    """
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from anomaly_probe.sweep.cellrun import run_cell
    from anomaly_probe.sweep.folderfiles import pack, unpack
    from anomaly_probe.sweep.grid import Cell
    from anomaly_probe.sweep.models import ModelCache

    global _MODELS
    if _MODELS is None:
        _MODELS = ModelCache()
    torch.set_num_threads(max(1, int(cpus)))
    with tempfile.TemporaryDirectory(prefix="anomaly-probe-cell-") as tmp:
        folder = Path(tmp) / "run"
        folder.mkdir()
        unpack(files, folder)
        outcome = run_cell(Cell(settings).config(out), folder, _MODELS)
        return {"outcome": asdict(outcome), "files": pack(folder)}
