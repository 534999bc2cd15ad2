"""The worker's memory limit stays below what a memory-limited cgroup (a container) has left.

The cgroup parsing runs on fake /proc/self/cgroup files and cgroup trees (v2, v1, nested limits,
a container whose /proc path does not exist under its mount); one real sandbox checks that the
budget lowers the worker's headroom so that a big allocation gets the sandbox's MemoryError.
The same in a real 768 MB container: tests/instructor/grading/test_docker.py (memory_bomb_gradual).
"""
from __future__ import annotations

import pathlib
import shutil
import tempfile

import pytest

from autograder.sandbox import memory as sandbox_memory
from autograder.sandbox import Sandbox, SandboxLimits
from autograder.sandbox.memory import CgroupMemory, cgroup_memory, worker_memory_budget_mb
from testkit.autograder_dir import ensure_worker_python

MB = 1 << 20
V1_UNLIMITED = "9223372036854771712"


def _cgroup_dir(path: pathlib.Path, *, limit: str, usage: int, inactive: int = 0, v2: bool = True) -> None:
    path.mkdir(parents=True, exist_ok=True)
    names = ("memory.max", "memory.current", "inactive_file") if v2 else \
        ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    (path / names[0]).write_text(limit + "\n")
    (path / names[1]).write_text(f"{usage}\n")
    (path / "memory.stat").write_text(f"anon {usage}\n{names[2]} {inactive}\nactive_file 0\n")


def _proc(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return str(path)


def test_v2_container_root_is_the_cgroup_and_inactive_cache_counts_as_free(tmp_path):
    mount = tmp_path / "sys-fs-cgroup"
    _cgroup_dir(mount, limit=str(768 * MB), usage=400 * MB, inactive=100 * MB)
    memory = cgroup_memory(proc_cgroup=_proc(tmp_path, "0::/\n"), mount=str(mount))
    assert memory == CgroupMemory(limit=768 * MB, used=300 * MB, directory=str(mount))
    assert memory.available == 468 * MB


def test_v2_nested_limits_the_tightest_ancestor_binds(tmp_path):
    mount = tmp_path / "cg"
    _cgroup_dir(mount / "outer", limit=str(2048 * MB), usage=1900 * MB)  # 148 MB left: binds
    _cgroup_dir(mount / "outer" / "inner", limit=str(1024 * MB), usage=200 * MB)
    _cgroup_dir(mount / "outer" / "inner" / "leaf", limit="max", usage=150 * MB)
    memory = cgroup_memory(proc_cgroup=_proc(tmp_path, "0::/outer/inner/leaf\n"), mount=str(mount))
    assert memory.directory == str(mount / "outer") and memory.available == 148 * MB


def test_v1_container_whose_proc_path_is_not_under_the_mount(tmp_path):
    mount = tmp_path / "cg"
    _cgroup_dir(mount / "memory", limit=str(805306368), usage=160 * MB, inactive=10 * MB, v2=False)
    text = "5:devices:/docker/4b09\n4:memory:/docker/4b09\n0::/docker/4b09\n"  # hybrid: v2 has no memory.max
    memory = cgroup_memory(proc_cgroup=_proc(tmp_path, text), mount=str(mount))
    assert memory == CgroupMemory(limit=768 * MB, used=150 * MB, directory=str(mount / "memory"))


def test_no_limit_or_nothing_readable_means_none(tmp_path):
    mount = tmp_path / "cg"
    _cgroup_dir(mount / "memory" / "job", limit=V1_UNLIMITED, usage=MB, v2=False)
    _cgroup_dir(mount / "memory", limit=V1_UNLIMITED, usage=MB, v2=False)
    _cgroup_dir(mount, limit="max", usage=MB)
    assert cgroup_memory(proc_cgroup=_proc(tmp_path, "4:memory:/job\n0::/\n"), mount=str(mount)) is None
    assert cgroup_memory(proc_cgroup=str(tmp_path / "missing"), mount=str(mount)) is None
    assert cgroup_memory(proc_cgroup=_proc(tmp_path, "garbage\n\n4:memory\n"), mount=str(tmp_path / "none")) is None
    broken = tmp_path / "broken"
    _cgroup_dir(broken, limit="lots", usage=MB)
    assert cgroup_memory(proc_cgroup=_proc(tmp_path, "0::/\n"), mount=str(broken)) is None
    escaping = cgroup_memory(proc_cgroup=_proc(tmp_path, "0::/../../etc\n"), mount=str(mount))
    assert escaping is None  # a path leaving the mount falls back to the mount's root (unlimited here)


def test_budget_keeps_the_reserve_for_the_grader():
    full = CgroupMemory(limit=768 * MB, used=760 * MB, directory="/")
    assert worker_memory_budget_mb(reserve_mb=128, memory=CgroupMemory(768 * MB, 268 * MB, "/")) == 372
    assert worker_memory_budget_mb(reserve_mb=128, memory=full) == 1  # never 0, which would mean "no cap"
    assert worker_memory_budget_mb(reserve_mb=128, memory=None) == 0


@pytest.fixture
def hog_submission():
    """A submission whose model.py allocates (and touches) 600 MB at import; reachable by other users."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-memory-test-"))
    path.chmod(0o755)
    (path / "model.py").write_text("_hog = bytearray(600 * 1024 * 1024)\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_cgroup_budget_lowers_the_headroom_so_a_big_allocation_is_a_memory_error(hog_submission, monkeypatch):
    ensure_worker_python()
    grader_used = 300 * MB
    fake = CgroupMemory(limit=grader_used + (128 + 700) * MB, used=grader_used, directory="/fake")
    monkeypatch.setattr(sandbox_memory, "cgroup_memory", lambda: fake)
    limits = SandboxLimits(memory_headroom_mb=1024, memory_reserve_mb=128)
    with Sandbox(hog_submission, limits=limits) as sandbox:
        result = sandbox.call("import_module", {"module": "model"}, timeout_s=60)
        info, description = sandbox.worker_info, sandbox.describe()
    assert info["memory_budget_mb"] == 700
    # 700 MB minus what the worker's imports hold (~150 MB with CPU torch, ~280 MB with the CUDA build)
    assert 64 <= info["headroom_mb"] < 600, info
    assert f"lowered to {info['headroom_mb']} MB" in description and "828 MB left" in description
    assert result.status == "error" and result.error["kind"] == "memory", result
    assert "more memory than the sandbox allows" in result.error["message"]


def test_without_a_cgroup_limit_the_headroom_is_the_configured_one(hog_submission, monkeypatch):
    ensure_worker_python()
    monkeypatch.setattr(sandbox_memory, "cgroup_memory", lambda: None)
    with Sandbox(hog_submission, limits=SandboxLimits(memory_headroom_mb=1024)) as sandbox:
        result = sandbox.call("import_module", {"module": "model"}, timeout_s=60)
        info, description = sandbox.worker_info, sandbox.describe()
    assert info["memory_budget_mb"] == 0 and info["headroom_mb"] == 1024
    assert "lowered" not in description
    assert result.ok, result  # the same 600 MB fits in 1024 MB of headroom
