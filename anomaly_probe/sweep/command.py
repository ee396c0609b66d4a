"""``anomaly-probe sweep``: expand the grid, run the cells that are not complete, index them, write the trend report.

Exit code: 0 every cell complete (no unit failed inside), 1 some cell failed (the others still ran),
2 bad input, 130 interrupted (``sweep --resume SWEEP_DIR`` continues; complete cells are skipped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomaly_probe.errors import UserError
from anomaly_probe.sweep.grid import Grid
from anomaly_probe.sweep.index import CELLS_DIR, CellEntry, SweepIndex, is_sweep, read_index

GRID_FLAGS = ("model", "trained_context", "max_tokens", "num_samples", "method", "sink_size", "recent_size",
              "position_mode", "dtype", "device", "seed", "hypothesis", "engine", "chunk_size", "probes",
              "stepwise_tokens", "text", "cpus", "gpus")
"""Argparse destinations that describe the grid (the rest say where and how it runs)."""


def run_sweep(args: argparse.Namespace) -> int:
    """The command; ``args`` holds only the flags the user typed (argparse ``SUPPRESS``) plus defaults of
    ``executor``, ``address``, ``retries``, ``grid``, ``out`` and ``resume``."""
    from anomaly_probe.interrupts import sigterm_as_interrupt

    with sigterm_as_interrupt():  # kill / a scheduler's time limit: kept like Ctrl-C
        return _sweep(args)


def _sweep(args: argparse.Namespace) -> int:
    from anomaly_probe.console import console, err_console

    given = {k: v for k, v in vars(args).items() if k in GRID_FLAGS}
    if args.executor == "ray" and args.address is None:
        raise UserError("--executor ray needs --address ADDRESS (a Ray cluster) or --address local")
    if args.executor == "local" and args.address is not None:
        raise UserError("--address is for --executor ray")
    if args.ray_cpus is not None and args.address != "local":
        raise UserError("--ray-cpus sizes the Ray instance that --address local starts; drop it for a cluster")
    if args.ray_cpus is not None and args.ray_cpus < 1:
        raise UserError(f"--ray-cpus {args.ray_cpus}: must be >= 1")
    if args.retries < 0:
        raise UserError(f"--retries {args.retries}: must be >= 0")
    grid, sweep_dir, saved = _grid_and_folder(args, given)
    cells = grid.cells()
    index = SweepIndex(grid=grid.to_dict(), cells=[_entry(c, saved) for c in cells], executor=args.executor)
    jobs = _jobs(cells, index, sweep_dir)
    if not jobs and not any(e.status == "complete" for e in index.cells):
        reasons = [e.reason for e in index.cells if e.reason]
        raise UserError(f"no cell of the grid can run: {reasons[0] if reasons else 'empty grid'}")
    _make_folder(sweep_dir, fresh=saved is None)
    index.write(sweep_dir)
    console.print(f"[bold]anomaly-probe sweep[/]: {len(cells)} cell(s), {len(jobs)} to run "
                  f"({sum(e.status == 'complete' for e in index.cells)} already complete), executor "
                  f"{args.executor}; sweep folder {sweep_dir}", highlight=False, soft_wrap=True)
    for e in index.cells:
        if e.status == "failed":
            err_console.print(f"cell {e.name}: FAILED: {e.reason}", markup=False, highlight=False, soft_wrap=True)
    try:
        _execute(args, jobs, index, sweep_dir)
    except KeyboardInterrupt:
        for e in index.cells:
            if e.status == "running":
                e.status = "interrupted"
        index.status = "interrupted"
        index.write(sweep_dir)
        err_console.print(f"interrupted: {index.counts()['complete']} of {len(index.cells)} cell(s) are complete in "
                          f"{sweep_dir}; continue with `anomaly-probe sweep --resume {sweep_dir}`",
                          markup=False, highlight=False, soft_wrap=True)
        return 130
    index.status = "complete"
    index.write(sweep_dir)
    console.print(cells_table(index))
    _write_trend_report(sweep_dir)
    bad = [e for e in index.cells if not e.succeeded]
    if bad:
        err_console.print(f"{len(bad)} of {len(index.cells)} cell(s) did not succeed (see sweep.json); "
                          f"rerun the failed ones with `anomaly-probe sweep --resume {sweep_dir}`",
                          markup=False, highlight=False, soft_wrap=True)
    return 1 if bad else 0


def _grid_and_folder(args, given: dict) -> tuple[Grid, Path, SweepIndex | None]:
    """The grid and the sweep folder; with the index saved there when the sweep continues."""
    from anomaly_probe.rundir.prepare import check_out, default_folder
    from anomaly_probe.sweep.gridfile import grid_from_flags, grid_from_toml

    if args.resume is not None:
        extra = sorted(given) + (["grid"] if args.grid else [])
        if extra:
            flag = "--" + extra[0].replace("_", "-")
            raise UserError(f"{flag} cannot be combined with --resume: a resumed sweep runs its saved grid")
        if args.out is not None and Path(args.out).expanduser().resolve() != Path(args.resume).expanduser().resolve():
            raise UserError(f"--out {args.out!r} with --resume: the sweep continues in its own folder; drop --out")
        saved = read_index(args.resume, "--resume")
        rows = saved.grid.get("rows")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise UserError(f"--resume {args.resume!r}: sweep.json holds no grid rows")
        from anomaly_probe.sweep.gridfile import check_row

        grid = Grid([check_row(r, f"--resume {args.resume!r}: the saved grid") for r in rows])
        return grid, Path(args.resume).expanduser(), saved
    if args.grid and given:
        flag = "--" + sorted(given)[0].replace("_", "-")
        raise UserError(f"{flag} with --grid: give the grid either as flags or in the TOML file, not both")
    grid = grid_from_toml(args.grid) if args.grid else grid_from_flags(given)
    check_out(args.out, "sweep")
    sweep_dir = Path(args.out).expanduser() if args.out else default_folder("sweep")
    if not is_sweep(sweep_dir):
        if (sweep_dir / "results.json").exists():
            raise UserError(f"--out {str(sweep_dir)!r} holds a run, not a sweep; choose another folder")
        if sweep_dir.exists() and not sweep_dir.is_dir():
            raise UserError(f"--out {str(sweep_dir)!r} is a file; give a folder for the sweep")
        return grid, sweep_dir, None
    saved = read_index(sweep_dir, "--out")
    if {c.key for c in grid.cells()} != {e.key for e in saved.cells}:
        raise UserError(f"--out {str(sweep_dir)!r} holds a sweep of another grid; continue it with "
                        f"`anomaly-probe sweep --resume {sweep_dir}`, or choose another folder")
    return grid, sweep_dir, saved


def _entry(cell, saved: SweepIndex | None) -> CellEntry:
    entry = CellEntry(key=cell.key, name=cell.name, folder=f"{CELLS_DIR}/{cell.name}", settings=cell.settings,
                      cpus=cell.cpus, gpus=cell.gpus)
    old = {e.key: e for e in saved.cells}.get(cell.key) if saved is not None else None
    if old is not None:
        entry.status, entry.reason, entry.seconds = old.status, old.reason, old.seconds
        entry.attempts, entry.unit_failures = old.attempts, old.unit_failures
    return entry


def _jobs(cells: list, index: SweepIndex, sweep_dir: Path) -> list:
    """(cell, entry) pairs still to run. Complete folders are skipped; a cell whose settings a run refuses
    is failed here with that one-line reason (nothing is loaded for it)."""
    from anomaly_probe.run.session import validate_config

    jobs = []
    for cell, entry in zip(cells, index.cells):
        if _complete(sweep_dir / entry.folder):
            entry.status, entry.reason = "complete", ""
            continue
        try:
            validate_config(cell.config(str(sweep_dir / entry.folder)))
        except UserError as exc:
            entry.status, entry.reason = "failed", str(exc).splitlines()[0][:300]
            continue
        entry.status, entry.reason = "pending", ""
        jobs.append((cell, entry))
    return jobs


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds a run whose results.json says ``complete``."""
    import json

    try:
        return json.loads((folder / "results.json").read_text(encoding="utf-8")).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def _make_folder(sweep_dir: Path, fresh: bool) -> None:
    from anomaly_probe.rundir.prepare import check_writable

    try:
        check_writable(sweep_dir)
    except OSError as exc:
        what = "--out" if fresh else "the sweep folder"
        raise UserError(f"{what} {str(sweep_dir)!r} is not writable ({exc.strerror or exc}); "
                        "choose another folder") from None


def _execute(args, jobs: list, index: SweepIndex, sweep_dir: Path) -> None:
    from anomaly_probe.console import new_progress, outer_progress
    from anomaly_probe.sweep.progress import SweepEvents

    done = len(index.cells) - len(jobs)
    with outer_progress(new_progress()) as progress:
        task = progress.add_task("cells", total=len(index.cells), completed=done, unit="cells")
        events = SweepEvents(index, sweep_dir, progress, task)
        if args.executor == "ray":
            from anomaly_probe.sweep.ray_executor import run_ray

            run_ray(jobs, sweep_dir, events, args.address, args.retries, args.ray_cpus)
        else:
            from anomaly_probe.sweep.local import run_local

            run_local(jobs, sweep_dir, events)


def cells_table(index: SweepIndex):
    """The cells, their status, time and reason (console)."""
    from rich.table import Table

    table = Table(title="Sweep cells", title_justify="left")
    for col in ("cell", "status", "seconds", "reason"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for e in index.cells:
        status = e.status if not e.unit_failures else f"{e.status} ({e.unit_failures} unit(s) failed)"
        table.add_row(e.name, status, "n/a" if e.seconds is None else f"{e.seconds:.1f}", e.reason or "")
    return table


def _write_trend_report(sweep_dir: Path) -> None:
    from anomaly_probe.console import console, err_console

    try:
        from anomaly_probe.reports.sweep import write_sweep_report

        write_sweep_report(sweep_dir, console=console)  # prints the headline and the report's path
    except Exception as exc:  # noqa: BLE001 - sweep.json and every run are saved; `report` can retry
        err_console.print(f"trend report not written ({type(exc).__name__}: {str(exc)[:200]}); retry with "
                          f"`anomaly-probe report {sweep_dir}`", markup=False, soft_wrap=True)
