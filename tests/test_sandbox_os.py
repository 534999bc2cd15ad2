"""sandbox.system: student uids from a high range (host vs containers), reuse of existing users."""
from __future__ import annotations

import grp
import os
import pwd
import subprocess
from types import SimpleNamespace

import pytest

from autograder.sandbox import system as sandbox_os
from autograder.errors import NotegradeError
from autograder.instructor import docker_run

ROOT = os.geteuid() == 0


def test_uid_ranges_are_high_disjoint_and_below_nobody():
    host, containers = sandbox_os.HOST_UIDS, sandbox_os.CONTAINER_UIDS
    assert host.start >= 60_000 and containers.start >= 60_000
    assert not set(host) & set(containers)
    assert max(host.stop, containers.stop) <= 65_000 < 65_534  # nobody; and 16-bit-safe tools
    if os.path.exists("/etc/login.defs"):  # never where useradd puts people (UID_MAX, 60000 on Debian)
        with open("/etc/login.defs") as defs:
            uid_max = [int(line.split()[1]) for line in defs if line.split()[:1] == ["UID_MAX"]]
        assert all(host.start >= value for value in uid_max)


def test_pick_free_uid_skips_uids_and_gids_in_use():
    taken = {60_000, 60_001, 60_003}
    assert sandbox_os.pick_free_uid(range(60_000, 60_005), in_use=taken.__contains__) == 60_002
    with pytest.raises(NotegradeError, match="no free uid in 60000-60001"):
        sandbox_os.pick_free_uid(range(60_000, 60_002), in_use=lambda n: True)
    existing_gid = grp.getgrnam("root").gr_gid  # a gid in use counts, so user and group can share the id
    assert sandbox_os.pick_free_uid(range(existing_gid, existing_gid + 100_000)) != existing_gid


def test_uid_candidates_come_from_the_environment_when_set():
    assert sandbox_os.student_uid_candidates({}) == sandbox_os.HOST_UIDS
    assert sandbox_os.student_uid_candidates({sandbox_os.STUDENT_UID_ENV: "61234"})[0] == 61_234
    for bad in ("0", "abc", "999", "70000", "-5"):
        with pytest.raises(NotegradeError, match=sandbox_os.STUDENT_UID_ENV):
            sandbox_os.student_uid_candidates({sandbox_os.STUDENT_UID_ENV: bad})


class _FakeContainers:
    def __init__(self, uids):
        self.uids = uids

    def list(self, *, all, filters):
        assert all and filters == {"label": docker_run.UID_LABEL}
        return [SimpleNamespace(labels={docker_run.UID_LABEL: str(uid)}) for uid in self.uids]


def test_container_uids_avoid_running_containers_and_each_other(monkeypatch):
    monkeypatch.setattr(docker_run, "_UIDS_STARTING", set())
    start = sandbox_os.CONTAINER_UIDS[(os.getpid() * 97) % len(sandbox_os.CONTAINER_UIDS)]
    client = SimpleNamespace(containers=_FakeContainers([start, start + 1]))
    first, second = docker_run.pick_student_uid(client), docker_run.pick_student_uid(client)
    assert {first, second} <= set(sandbox_os.CONTAINER_UIDS) - {start, start + 1}
    assert first != second  # the first is reserved until its container exists
    client.containers.uids = list(sandbox_os.CONTAINER_UIDS)
    with pytest.raises(NotegradeError, match="student uids for containers are in use"):
        docker_run.pick_student_uid(client)


def _delete_user(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


@pytest.fixture
def temporary_slots(tmp_path, monkeypatch):
    """StudentUser slots under a test-only name and lock dir; their users are deleted afterwards."""
    base = f"ngtest{os.getpid() % 100000}-"
    names = [base] + [f"{base}{slot}" for slot in range(1, 3)]
    monkeypatch.setattr(sandbox_os, "USER_BASE_NAME", base)
    monkeypatch.setattr(sandbox_os, "LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv(sandbox_os.STUDENT_UID_ENV, raising=False)
    for name in names:
        _delete_user(name)
    yield names
    for name in names:
        _delete_user(name)


@pytest.mark.skipif(not ROOT, reason="creating users needs root")
def test_existing_users_are_reused_and_new_ones_get_a_high_uid_with_their_own_group(temporary_slots):
    existing, new = temporary_slots[0], temporary_slots[1]
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group",
                    existing], check=True, capture_output=True)
    old_uid = pwd.getpwnam(existing).pw_uid
    assert old_uid < 60_000  # made the old way, in the system range
    first, second = sandbox_os.StudentUser(), sandbox_os.StudentUser()
    try:
        assert (first.name, first.uid) == (existing, old_uid)  # reused as it is
        assert second.name == new and second.uid in sandbox_os.HOST_UIDS
        assert second.gid == second.uid and grp.getgrgid(second.gid).gr_name == new
        assert pwd.getpwnam(new).pw_shell == "/usr/sbin/nologin"
    finally:
        first.release()
        second.release()


@pytest.mark.skipif(not ROOT, reason="creating users needs root")
def test_the_environment_sets_the_uid_of_a_new_user(temporary_slots, monkeypatch):
    uid = sandbox_os.pick_free_uid(sandbox_os.CONTAINER_UIDS)
    monkeypatch.setenv(sandbox_os.STUDENT_UID_ENV, str(uid))
    user = sandbox_os.StudentUser()
    try:
        assert user.name == temporary_slots[0] and user.uid == user.gid == uid
    finally:
        user.release()
