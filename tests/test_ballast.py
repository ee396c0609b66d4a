"""The memory ballast: sized from the cgroup limit when there is one, its unit key independent of free memory."""

from __future__ import annotations

from types import SimpleNamespace

import importlib

import psutil
import pytest

B = importlib.import_module("anomaly_probe.interventions.ballast")  # the module (the package exports a function)

GIB = 2**30


def _free(monkeypatch, nbytes: int) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=nbytes))


def _v2(tmp_path, own: str = "/user.slice/job", limits: dict | None = None):
    """A fake cgroup v2 tree: ``limits`` maps a folder under the root to (memory.max, memory.current)."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for folder, (limit, usage) in (limits or {}).items():
        d = root / folder.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.max").write_text(f"{limit}\n")
        (d / "memory.current").write_text(f"{usage}\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def test_cgroup_v2_limit_caps_the_ballast(tmp_path, monkeypatch):
    _free(monkeypatch, 64 * GIB)  # the host's free memory, as a container sees it
    root, proc = _v2(tmp_path, limits={"user.slice/job": (4 * GIB, 1 * GIB), "user.slice": ("max", 0)})
    assert B.cgroup_headroom(root, proc) == 3 * GIB
    assert B.available_bytes(root, proc) == 3 * GIB
    assert B.memory_facts(root, proc) == {"system_available_bytes": 64 * GIB, "cgroup_headroom_bytes": 3 * GIB}
    assert B.ballast_bytes(0.5, 8 * GIB, root, proc) == int(1.5 * GIB)


def test_the_tightest_ancestor_wins_and_unlimited_is_no_limit(tmp_path, monkeypatch):
    _free(monkeypatch, 64 * GIB)
    root, proc = _v2(tmp_path, limits={"a/b": ("max", 5), "a": (2 * GIB, GIB // 2), "": ("max", 0)})
    proc.write_text("0::/a/b\n")
    assert B.cgroup_headroom(root, proc) == GIB + GIB // 2
    root2, proc2 = _v2(tmp_path / "x", limits={"a": ("max", 7)})
    assert B.cgroup_headroom(root2, proc2) is None
    assert B.available_bytes(root2, proc2) == 64 * GIB


def test_cgroup_v1_limit(tmp_path, monkeypatch):
    _free(monkeypatch, 64 * GIB)
    mem = tmp_path / "cgroup" / "memory"
    (mem / "docker" / "abc").mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # the root: no limit
    (mem / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{2 * GIB}\n")
    (mem / "docker" / "abc" / "memory.usage_in_bytes").write_text(f"{GIB}\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert B.cgroup_headroom(tmp_path / "cgroup", proc) == GIB
    # the container sees only its own cgroup at the mount point, at the root of the memory hierarchy
    (mem / "memory.limit_in_bytes").write_text(f"{GIB // 2}\n")
    (mem / "memory.usage_in_bytes").write_text("0\n")
    assert B.cgroup_headroom(tmp_path / "cgroup", proc) == GIB // 2


@pytest.mark.parametrize("content", ["", "garbage", "0::/../../etc\n", "4:memory\n"])
def test_cgroup_files_are_read_defensively(tmp_path, monkeypatch, content):
    _free(monkeypatch, 8 * GIB)
    root, proc = _v2(tmp_path, limits={"": ("not a number", "x")})
    proc.write_text(content)
    assert B.cgroup_headroom(root, proc) is None
    assert B.cgroup_headroom(tmp_path / "missing", tmp_path / "missing-proc") is None
    assert B.available_bytes(root, proc) == 8 * GIB


def test_the_unit_key_does_not_depend_on_free_memory(monkeypatch):
    """A resumed run must find the ballast unit it already scored, whatever memory is free now."""
    from anomaly_probe.hypotheses.base import ExperimentSettings
    from anomaly_probe.hypotheses.memory import Memory

    ctx = SimpleNamespace(settings=ExperimentSettings(), engine="batched")
    names = set()
    for free in (3 * GIB, 17 * GIB + 12345):
        _free(monkeypatch, free)
        names.add(Memory().roles(ctx)["ballast"].intervention)
    assert names == {"ballast-50pct-max8192MiB"}


def test_a_rule_is_sized_when_it_runs(tmp_path, monkeypatch):
    from anomaly_probe.interventions import validate_intervention

    validate_intervention("ballast-50pct-max8192MiB")
    validate_intervention("ballast-1048576")
    root, proc = _v2(tmp_path, limits={"user.slice/job": (4 * GIB, GIB)})
    _free(monkeypatch, 64 * GIB)
    assert B.ballast_size("ballast-50pct-max8192MiB", root, proc) == int(1.5 * GIB)
    assert B.ballast_size("ballast-50pct-max1024MiB", root, proc) == GIB
    assert B.ballast_size("ballast-1048576", root, proc) == 2**20
    _free(monkeypatch, GIB + 12345)
    assert B.ballast_size("ballast-50pct-max8192MiB", root, proc) == GIB // 2  # whole MiB
