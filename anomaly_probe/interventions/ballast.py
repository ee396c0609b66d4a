"""Memory pressure on demand: a bounded ballast allocation whose pages are really touched.

Its size is decided when the unit runs, from what is free then: ``fraction`` of the available memory,
at most ``cap_bytes``, where the available memory is the smaller of the system's
(``psutil.virtual_memory().available``) and the process's cgroup headroom (limit minus usage, the
tightest of its cgroup and their ancestors; cgroup v2 ``memory.max``/``memory.current``, v1
``memory.limit_in_bytes``/``memory.usage_in_bytes``). In a memory-limited container the system figure
is the host's, and a ballast sized from it invites the kernel's OOM killer.

The unit's intervention name states the rule, never the bytes (``ballast-50pct-max8192MiB``), so a
resumed run finds the unit again whatever memory is free; the bytes held are in ``intervention_info``.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import psutil
import torch

PAGE = 4096
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge page-rounded number
RULE = re.compile(r"ballast-(\d+)pct-max(\d+)MiB")


def ballast_name(fraction: float, cap_bytes: int) -> str:
    """The intervention name of a ballast sized when it runs: ``ballast-50pct-max8192MiB``."""
    return f"ballast-{round(fraction * 100)}pct-max{cap_bytes // 2**20}MiB"


def ballast_size(name: str, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """Bytes to hold for intervention ``name``: ``ballast-<bytes>`` as given, or the rule of
    :func:`ballast_name` applied to the memory available now (:func:`ballast_bytes`), in whole MiB."""
    rule = RULE.fullmatch(name)
    if rule is None:
        return int(name.rsplit("-", 1)[1])
    nbytes = ballast_bytes(int(rule.group(1)) / 100, int(rule.group(2)) * 2**20, cgroup_root, proc_cgroup)
    return nbytes // 2**20 * 2**20


def ballast_bytes(fraction: float, cap_bytes: int, cgroup_root: Path = CGROUP_ROOT,
                  proc_cgroup: Path = PROC_CGROUP) -> int:
    """``fraction`` of the memory available now (:func:`available_bytes`), at most ``cap_bytes``."""
    return int(min(available_bytes(cgroup_root, proc_cgroup) * fraction, cap_bytes))


def available_bytes(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The smaller of the system's available memory and the cgroup headroom (bytes)."""
    system = int(psutil.virtual_memory().available)
    headroom = cgroup_headroom(cgroup_root, proc_cgroup)
    return system if headroom is None else min(system, headroom)


def memory_facts(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> dict:
    """What a ballast was sized from, for ``intervention_info``: ``system_available_bytes`` and
    ``cgroup_headroom_bytes`` (None without a cgroup limit)."""
    return {"system_available_bytes": int(psutil.virtual_memory().available),
            "cgroup_headroom_bytes": cgroup_headroom(cgroup_root, proc_cgroup)}


def cgroup_headroom(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """Bytes this process's memory cgroup still allows (limit - usage), the tightest over its cgroup and
    every ancestor; None when no limit is set or nothing can be read (every read is defensive).

    Parameters
    ----------
    root : Path
        Where the cgroup file system is mounted (``/sys/fs/cgroup``; v1 keeps the memory controller in
        ``root/memory``).
    proc_cgroup : Path
        The process's cgroup membership (``/proc/self/cgroup``: ``0::/path`` for v2,
        ``N:memory:/path`` for v1).
    """
    v2, v1 = _memberships(proc_cgroup)
    found = []
    for base, own, limit_file, usage_file in ((root, v2, "memory.max", "memory.current"),
                                              (root / "memory", v1, "memory.limit_in_bytes", "memory.usage_in_bytes")):
        if own is None and not (base / limit_file).is_file():
            continue
        for folder in _up_to(base, own or "/"):
            limit = _read_int(folder / limit_file)
            if limit is None or limit >= UNLIMITED:
                continue
            usage = _read_int(folder / usage_file) or 0
            found.append(max(limit - usage, 0))
    return min(found) if found else None


def _memberships(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) from ``/proc/self/cgroup``; None where absent or unreadable."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None, None
    v2 = v1 = None
    for line in lines:
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _up_to(base: Path, own: str) -> list[Path]:
    """``base/own`` and each of its parents up to ``base`` (those that exist); never outside ``base``."""
    parts = [p for p in own.split("/") if p and p not in (".", "..")]
    folders = [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [f for f in folders if f.is_dir()]


def _read_int(path: Path) -> int | None:
    """An integer file (``max`` and anything unreadable or malformed: None)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def ballast(nbytes: int, device: torch.device | None = None) -> Iterator[dict]:
    """Hold ``nbytes`` of touched host memory (and as much on ``device`` if it is a GPU).

    Yields
    ------
    dict
        ``host_bytes``, ``device_bytes`` actually held, and swap counters before the run
        (``swap_in_before``, ``swap_out_before``) so the caller can report swap activity.
    """
    swap = psutil.swap_memory()
    info = {"host_bytes": 0, "device_bytes": 0, "swap_in_before": swap.sin, "swap_out_before": swap.sout}
    host = np.ones(max(nbytes, 0) // 8, dtype=np.float64)  # ones: every page written, so resident
    info["host_bytes"] = host.nbytes
    dev = None
    if device is not None and device.type in ("cuda", "mps"):
        try:
            dev = torch.ones(max(nbytes, 0) // 4, dtype=torch.float32, device=device)
            info["device_bytes"] = dev.numel() * 4
        except RuntimeError:  # not enough device memory for the ballast: host pressure only
            dev = None
    try:
        yield info
    finally:
        del host, dev
