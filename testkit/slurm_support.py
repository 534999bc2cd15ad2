"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd of our own.

Debian's ``slurm-wlm`` and ``munge`` (``scripts/system-deps.sh`` installs them) run here as a
one-node cluster, started as root and stopped by PID: nothing else on the machine is touched.
Every file the three daemons write (munge socket, pid and log files, Slurm's state and spool
directories) lives in one temporary folder, and the Slurm ports are picked free, so two test runs
on the same machine (other developers' sessions, ``pytest -n``) each get a cluster of their own and
never talk to each other's daemons.  Only the munge key is shared: ``/etc/munge/munge.key``,
created when missing, with ``/run/munge``, ``/var/log/munge``, ``/var/lib/munge`` and
``/etc/munge`` owned by the ``munge`` user as Debian's package expects.

Clients find this cluster through ``SLURM_CONF`` (set in ``os.environ`` while the cluster is up;
batch jobs inherit it, so ``srun`` inside a job finds it too).  There is no accounting daemon:
``sacct`` fails and submitit only warns; notegrade reads the states from ``squeue`` and the logs.

Example
-------
>>> with SlurmCluster.start(tmp) as cluster:              # doctest: +SKIP
...     subprocess.run(["sinfo"], env=cluster.env)
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_DIRS = (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge"), Path("/etc/munge"))


class SlurmUnavailable(RuntimeError):
    """Slurm can't start here; the message says why (the tests skip with it)."""


def _free_ports(count: int) -> list[int]:
    """``count`` TCP ports that are free now (bound together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _real_memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024 - 512  # keep some for the OS, as slurmd -C would
    return 1024


def cluster_problem() -> str | None:
    """Why no cluster can start here (None: it can try)."""
    missing = [name for name in (*DAEMONS, "sbatch", "squeue", "sinfo", "srun", "scancel") if shutil.which(name) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge "
                "(scripts/system-deps.sh)")
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root (slurmd runs jobs as their users)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no 'munge' user (the munge package creates it)"
    return None


def _prepare_munge() -> pwd.struct_passwd:
    """Debian's munge directories owned by munge, and a key when there is none."""
    munge = pwd.getpwnam("munge")
    for path in MUNGE_DIRS:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, munge.pw_uid, munge.pw_gid)
    os.chmod("/etc/munge", 0o700)
    if not MUNGE_KEY.is_file():
        fd = os.open(MUNGE_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as key:
            key.write(os.urandom(1024))
        os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
    return munge


SLURM_CONF = """\
# A one-node test cluster (testkit/slurm_support.py); everything it writes is under {root}.
ClusterName={cluster}
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SrunPortRange={srun_low}-{srun_high}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# Finished jobs stay visible to squeue for this long (no accounting daemon keeps them).
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=120
SchedulerParameters=sched_interval=2
# Two stand-in GPUs (gres.conf: /dev/null and /dev/zero): jobs may ask for --gpus, get
# CUDA_VISIBLE_DEVICES, and find no CUDA there, i.e. they take the CPU fallback.
GresTypes=gpu
NodeName={host} CPUs={cpus} RealMemory={memory_mb} Gres=gpu:2 State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A running test cluster: its folder, ``slurm.conf``, the client environment and its daemons."""

    root: Path
    conf: Path
    partition: str
    cpus: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @classmethod
    def start(cls, root: Path | None = None, *, cpus: int = 2, partition: str = "debug",
              timeout_s: float = 90.0) -> "SlurmCluster":
        """Write the configuration, start munged, slurmctld and slurmd, wait for the node to be idle.

        Raises :class:`SlurmUnavailable` (with the daemons' logs) when the cluster does not come up.
        """
        problem = cluster_problem()
        if problem:
            raise SlurmUnavailable(problem)
        munge = _prepare_munge()
        # /tmp, not pytest's tmp_path: the munge user must traverse it, and the unix socket path
        # must stay short (108 bytes).
        root = Path(tempfile.mkdtemp(prefix="ngslurm-", dir=root))
        os.chmod(root, 0o755)
        for sub in ("state", "spool"):
            (root / sub).mkdir(mode=0o755)
        munge_dir = root / "munge"
        munge_dir.mkdir(mode=0o711)  # munged: clients need x on the socket's folder
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        host = socket.gethostname().split(".")[0]
        ctld_port, slurmd_port, srun_low = _free_ports(3)
        conf = root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(
            root=root, cluster=f"ng{os.getpid()}", host=host, ctld_port=ctld_port, slurmd_port=slurmd_port,
            srun_low=srun_low, srun_high=srun_low + 20, munge_socket=munge_dir / "munge.socket",
            cpus=cpus, memory_mb=_real_memory_mb(), partition=partition))
        (root / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\nName=gpu File=/dev/zero\n")
        cluster = cls(root=root, conf=conf, partition=partition, cpus=cpus)
        try:
            cluster._start_daemons(munge, munge_dir, timeout_s)
        except BaseException:
            cluster.stop()
            raise
        os.environ["SLURM_CONF"] = str(conf)
        return cluster

    def _spawn(self, name: str, argv: list[str], **kwargs) -> None:
        log = open(self.root / f"{name}.stdout", "wb")
        # Own session: our signals (Ctrl-C in pytest) don't reach the daemons; stop() does.
        self.processes[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, env={**os.environ, "SLURM_CONF": str(self.conf)},
                                                **kwargs)
        log.close()

    def _start_daemons(self, munge: pwd.struct_passwd, munge_dir: Path, timeout_s: float) -> None:
        self._spawn("munged", ["munged", "--foreground", f"--socket={munge_dir / 'munge.socket'}",
                               f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
                               f"--seed-file={munge_dir / 'munged.seed'}", f"--key-file={MUNGE_KEY}"],
                    user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        self._wait(lambda: (munge_dir / "munge.socket").exists(), "munged to open its socket", 20)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._run(["scontrol", "ping"]).returncode == 0, "slurmctld to answer", timeout_s)
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(lambda: "idle" in self._run(["sinfo", "-h", "-N", "-o", "%t"]).stdout, "the node to be idle", timeout_s)

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)

    def _wait(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with status {process.returncode} while waiting for {what}:\n"
                                           + self.logs())
            if ready():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"timed out after {timeout_s:.0f} s waiting for {what}:\n" + self.logs())

    def logs(self, tail: int = 15) -> str:
        """The last lines of every daemon log, for a failure message."""
        parts = []
        for path in sorted([*self.root.glob("*.log"), *self.root.glob("*.stdout"), *self.root.glob("munge/*.log")]):
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def _cancel_jobs(self, timeout_s: float = 20.0) -> None:
        """Cancel whatever is still queued or running on this cluster (a test that failed midway):
        its job steps run under slurmstepd, which outlives slurmd."""
        if "slurmctld" not in self.processes or self.processes["slurmctld"].poll() is not None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            jobs = self._run(["squeue", "-h", "-o", "%A"]).stdout.split()
            if jobs:
                self._run(["scancel", *sorted(set(jobs))])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self._run(["squeue", "-h", "-o", "%A"]).stdout.strip():
                time.sleep(0.5)

    def stop(self) -> None:
        """Cancel leftover jobs, stop our three daemons by PID (slurmd first, munged last), delete the folder."""
        self._cancel_jobs()
        if os.environ.get("SLURM_CONF") == str(self.conf):
            del os.environ["SLURM_CONF"]
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
