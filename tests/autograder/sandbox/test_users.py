"""sandbox.users: a fresh uid per submission, never reused while a process or file of it remains.

The reservations live in a test-only state folder; the uids are real (processes and files are
made with them), taken from the top of the host range so that no grader of the machine meets them.
"""
from __future__ import annotations

import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from autograder.errors import NotegradeError
from autograder.instructor.grading.docker import container as docker_run
from autograder.sandbox import processes, users

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="student uids need root")


def test_uid_ranges_are_high_disjoint_and_clear_of_other_users():
    host, containers = users.HOST_UIDS, users.CONTAINER_UIDS
    assert not set(host) & set(containers)
    assert not set(host) & set(range(60_000, 61_000))  # older notegrade versions' named users
    assert host.start >= 65_536 and host.stop <= 100_000  # above nobody, below rootless containers' subuids
    assert containers.start >= 60_000 and containers.stop <= 65_000
    if os.path.exists("/etc/login.defs"):  # never where useradd puts people (UID_MAX, 60000 on Debian)
        with open("/etc/login.defs") as defs:
            uid_max = [int(line.split()[1]) for line in defs if line.split()[:1] == ["UID_MAX"]]
        assert all(host.start >= value for value in uid_max)


def test_uid_candidates_come_from_the_environment_when_set():
    assert users.student_uid_candidates({}) == users.HOST_UIDS
    assert list(users.student_uid_candidates({users.STUDENT_UID_ENV: "61234"})) == [61_234]
    for bad in ("0", "abc", "999", "70000", "-5"):
        with pytest.raises(NotegradeError, match=users.STUDENT_UID_ENV):
            users.student_uid_candidates({users.STUDENT_UID_ENV: bad})


class _FakeContainers:
    def __init__(self, uids):
        self.uids = uids

    def list(self, *, all, filters):
        assert all and filters == {"label": docker_run.UID_LABEL}
        return [SimpleNamespace(labels={docker_run.UID_LABEL: str(uid)}) for uid in self.uids]


def test_container_uids_avoid_running_containers_and_each_other(monkeypatch):
    monkeypatch.setattr(docker_run, "_UIDS_STARTING", set())
    start = users.CONTAINER_UIDS[(os.getpid() * 97) % len(users.CONTAINER_UIDS)]
    client = SimpleNamespace(containers=_FakeContainers([start, start + 1]))
    first, second = docker_run.pick_student_uid(client), docker_run.pick_student_uid(client)
    assert {first, second} <= set(users.CONTAINER_UIDS) - {start, start + 1}
    assert first != second  # the first is reserved until its container exists
    client.containers.uids = list(users.CONTAINER_UIDS)
    with pytest.raises(NotegradeError, match="student uids for containers are in use"):
        docker_run.pick_student_uid(client)


TEST_UIDS = range(99_900, 99_910)  # the top of the host range: no grader reaches it in a test run


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private state folder and a host range of ten uids for the test."""
    monkeypatch.setattr(users, "HOST_UIDS", TEST_UIDS)
    monkeypatch.delenv(users.STUDENT_UID_ENV, raising=False)
    folder = tmp_path / "state"
    yield str(folder)
    for uid in TEST_UIDS:
        users.clean_uid(uid)


def _process_of(uid: int) -> subprocess.Popen:
    """A long-lived process of ``uid`` in a session of its own (what a killed grader leaves behind)."""
    return subprocess.Popen(["sleep", "600"], user=uid, group=uid, extra_groups=[], start_new_session=True)


@needs_root
def test_each_allocation_is_fresh_and_released_uids_come_back_last(state):
    first = users.StudentUid.allocate(state_dir=state)
    second = users.StudentUid.allocate(state_dir=state)
    assert first.uid != second.uid and {first.uid, second.uid} <= set(TEST_UIDS)
    assert os.path.exists(os.path.join(state, f"uid-{first.uid}"))
    assert first.release() == [] and not os.path.exists(os.path.join(state, f"uid-{first.uid}"))
    third = users.StudentUid.allocate(state_dir=state)
    assert third.uid not in (first.uid, second.uid)  # the rotation moves on
    second.release(), third.release()


@needs_root
def test_a_uid_with_a_live_process_is_never_handed_out(state):
    squatter = _process_of(TEST_UIDS[0])
    try:
        with open(os.path.join(os.makedirs(state, mode=0o700) or state, "next"), "w") as handle:
            handle.write(f"{TEST_UIDS[0]}\n")
        user = users.StudentUid.allocate(state_dir=state)
        assert user.uid != TEST_UIDS[0]
        user.release()
    finally:
        squatter.kill()
        squatter.wait()


@needs_root
def test_a_killed_graders_uid_is_cleaned_before_the_next_allocation(state, tmp_path):
    """State file left unlocked (the grader was SIGKILLed): its processes and files go first."""
    uid = TEST_UIDS[3]
    os.makedirs(state, mode=0o700, exist_ok=True)
    open(os.path.join(state, f"uid-{uid}"), "w").close()
    survivor = _process_of(uid)
    leftovers = [f"/tmp/notegrade-test-leftover-{uid}", f"/dev/shm/notegrade-test-leftover-{uid}"]
    for path in leftovers:
        with open(path, "w") as handle:
            handle.write("x")
        os.chown(path, uid, uid)
    deep = f"/var/tmp/notegrade-test-deep-{uid}"
    os.makedirs(deep + "/a" * 300)
    os.chown(deep, uid, uid)
    user = users.StudentUid.allocate(state_dir=state)
    try:
        survivor.wait(timeout=10)  # killed (the cleanup may have reaped it already: our child)
        assert not os.path.exists(f"/proc/{survivor.pid}")
        assert not any(os.path.lexists(p) for p in leftovers + [deep])
        assert not os.path.exists(os.path.join(state, f"uid-{uid}"))
        assert not processes.processes_of_uid(uid)
    finally:
        user.release()


MAIN_THREAD_EXITS = """
import ctypes, threading, time
threading.Thread(target=lambda: time.sleep(600), daemon=True).start()
time.sleep(0.1)
ctypes.CDLL(None).pthread_exit(None)  # /proc/PID/stat says Z; the other thread runs on as the uid
"""


@needs_root
def test_a_process_whose_main_thread_exited_still_holds_its_uid(state, tmp_path):
    """Its leader is a zombie while a thread runs: the uid is neither free nor left with that thread."""
    uid = TEST_UIDS[5]
    # started through a shell that exits at once: the process is nobody's child here, as a student's orphan
    started = subprocess.run(["sh", "-c", '/usr/bin/python3 -c "$0" >/dev/null 2>&1 & echo $!', MAIN_THREAD_EXITS],
                             user=uid, group=uid, extra_groups=[], check=True, capture_output=True, text=True, cwd="/")
    pid = int(started.stdout)
    deadline = time.monotonic() + 10
    while processes._read_proc(pid) is None or processes._read_proc(pid).state != "Z":
        assert time.monotonic() < deadline, "the main thread never exited"
        time.sleep(0.02)
    assert processes.has_live_thread(pid)
    assert [p.pid for p in processes.processes_of_uid(uid)] == [pid]
    with open(os.path.join(os.makedirs(state, mode=0o700) or state, "next"), "w") as handle:
        handle.write(f"{uid}\n")
    user = users.StudentUid.allocate(state_dir=state)
    user.release()
    assert user.uid != uid  # skipped while the thread lives
    assert processes.kill_uid_until_gone(uid, uid)
    assert not processes.has_live_thread(pid) and not processes.processes_of_uid(uid)


@needs_root
def test_release_keeps_the_reservation_while_something_remains(state, monkeypatch):
    user = users.StudentUid.allocate(state_dir=state)
    monkeypatch.setattr(users, "clean_uid", lambda uid, **_: ["/tmp/x: Device or resource busy"])
    assert user.release() == ["/tmp/x: Device or resource busy"]
    assert os.path.exists(os.path.join(state, f"uid-{user.uid}"))  # reclaimed by a later allocation
    monkeypatch.undo()
    users.reclaim_stale(state)
    assert not os.path.exists(os.path.join(state, f"uid-{user.uid}"))


@needs_root
def test_a_containers_uid_is_used_as_given_after_cleanup(state, monkeypatch):
    uid = users.CONTAINER_UIDS[-7]
    survivor = _process_of(uid)
    user = users.StudentUid.allocate(state_dir=state, environ={users.STUDENT_UID_ENV: str(uid)})
    try:
        assert user.uid == user.gid == uid
        survivor.wait(timeout=10)
        assert not os.path.exists(f"/proc/{survivor.pid}")
    finally:
        user.release()
        users.clean_uid(uid)


@needs_root
def test_the_state_folder_must_be_private(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    with pytest.raises(NotegradeError, match="owned by root with mode 0700"):
        users.StudentUid.allocate(state_dir=str(folder))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(NotegradeError, match="owned by root with mode 0700"):
        users.StudentUid.allocate(state_dir=str(link))
