"""A real, private Slurm cluster on this one machine, for tests.

``SlurmCluster`` writes a ``slurm.conf`` into a fresh private directory and starts its own
``munged``, one ``slurmctld`` and one ``slurmd`` per simulated node (all on ``localhost``, on
free ports picked at run time), then waits until every node is idle::

    with SlurmCluster(nodes=2) as cluster:
        job = cluster.run("sbatch", "--parsable", "-N", "2", script).stdout.strip()
        assert cluster.wait_job(job, timeout=60) == "COMPLETED"

The daemons run in the foreground as children of this process (``munged -F``, ``slurmctld -D``,
``slurmd -D``), so this process reaps them when they stop: no zombies, and no pid-file races.
They still write their pid files and logs under ``cluster.dir``. Stopping cancels the cluster's
jobs, stops the daemons (SIGTERM, then SIGKILL after a bound) and then kills any process left
that belongs to this cluster (job steps, ``slurmstepd``, ``slurmscriptd``): those are found by
``SLURM_CONF=<this cluster's slurm.conf>`` in their environment or by descending from one that
has it. Processes of any other cluster (another run, another temp dir) are never touched.

Needs root (``SlurmUser=root``) and the Debian packages ``slurmctld slurmd slurm-client munge``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

REQUIRED_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel",
                     "munged", "mungekey")
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                             "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
# Variables of an enclosing Slurm job (or of a user's shell) that would steer our clients elsewhere.
_STRIPPED_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCONTROL_")
_STOP_WAIT_S = 10.0
_UNIX_SOCKET_MAX = 107


def slurm_available() -> str | None:
    """None when this machine can run a ``SlurmCluster``, else why not (a pytest skip reason)."""
    missing = [name for name in REQUIRED_BINARIES if shutil.which(name) is None]
    if missing:
        return (f"Slurm/munge binaries not on PATH: {', '.join(missing)} "
                "(apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        return "a private Slurm cluster needs root (SlurmUser=root, slurmd runs jobs as root)"
    return None


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (``Z`` for a zombie), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rpartition(")")[2].split()[0]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as stopped: nobody here may ever reap it)."""
    return _proc_state(pid) not in (None, "Z", "X")


def _wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for ``pids`` to stop; return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if _alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as err:
        return f"  ({err})"
    return "\n".join("  " + line for line in text[-lines:]) or "  (empty)"


class SlurmCluster:
    """A private Slurm cluster (munged, slurmctld, ``nodes`` slurmd) under one fresh directory.

    ``base_dir``: where to create the cluster directory (a fresh ``slurm-*`` subdirectory, kept
    afterwards); by default a temporary directory, removed on a clean exit.
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 4, base_dir: Path | None = None, *,
                 start_timeout: float = 60.0) -> None:
        if nodes < 1 or cpus_per_node < 1:
            raise ValueError(f"need nodes >= 1 and cpus_per_node >= 1, got {nodes} and {cpus_per_node}")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.start_timeout = start_timeout
        self._dir: Path | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: list[Any] = []

    # ----------------------------------------------------------------- public API
    @property
    def dir(self) -> Path:
        """The cluster's private directory (config, key, socket, state, spool, logs, pid files)."""
        if self._dir is None:
            raise RuntimeError("the cluster is not started")
        return self._dir

    @property
    def conf(self) -> Path:
        """Path of this cluster's slurm.conf."""
        return self.dir / "slurm.conf"

    @property
    def node_names(self) -> list[str]:
        """Names of the simulated nodes: n1 .. nN."""
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    @property
    def env(self) -> dict[str, str]:
        """A fresh copy of os.environ (less any outer SLURM_*/SBATCH_*... variables) plus SLURM_CONF."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *args: str | os.PathLike[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a client command (``run("squeue", "-h")``) against this cluster; never raises on rc.

        Defaults: captured text output, ``timeout=60``, ``check=False``, ``cwd=self.dir`` (so a
        job's default ``slurm-%j.out`` lands in the cluster directory); ``env=`` entries are added
        on top of ``self.env``; any other keyword goes to ``subprocess.run``.
        """
        env = self.env
        env.update(kw.pop("env", None) or {})
        kw.setdefault("cwd", self.dir)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        kw.setdefault("check", False)
        return subprocess.run([os.fspath(a) for a in args], env=env, **kw)

    def job_state(self, job_id: str) -> str:
        """The job's current JobState (PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, ...)."""
        job_id = str(job_id).split(";")[0].strip()
        proc = self.run("scontrol", "show", "job", "-o", job_id)
        match = re.search(r"\bJobState=(\S+)", proc.stdout)
        if proc.returncode != 0 or match is None:
            raise RuntimeError(f"scontrol show job {job_id} failed (rc {proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        return match.group(1)

    def wait_job(self, job_id: str, timeout: float = 60.0) -> str:
        """Poll until the job reaches a terminal state and return it; TimeoutError after ``timeout`` s."""
        job_id = str(job_id).split(";")[0].strip()
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in TERMINAL_STATES:
                return state
            if time.monotonic() >= deadline:
                info = self.run("scontrol", "show", "job", job_id)
                raise TimeoutError(f"job {job_id} still {state} after {timeout:g} s:\n"
                                   f"{info.stdout}{info.stderr}\n{self._log_tails()}")
            time.sleep(0.1)

    def start(self) -> SlurmCluster:
        """Write the config, start munged, slurmctld and the slurmds; wait until all nodes are idle."""
        if self._dir is not None:
            raise RuntimeError("the cluster is already started")
        try:
            self._start()
        except BaseException:
            self.stop(remove_dir=False)
            raise
        return self

    def stop(self, remove_dir: bool | None = None) -> None:
        """Cancel jobs, stop every daemon and job process of this cluster (bounded); idempotent.

        ``remove_dir``: delete the cluster directory afterwards; by default only when it is a
        temporary directory (``base_dir`` None).
        """
        if self._dir is None:
            return
        try:
            self._cancel_jobs()
            # Nodes first, then the controller, then munge (which the others talk to while stopping).
            self._stop_procs([name for name in self._procs if name.startswith("slurmd-")])
            self._stop_procs(["slurmctld", "munged"])
            left = self._kill_strays()
            if left:
                warnings.warn(f"SlurmCluster: processes {left} survived SIGKILL", RuntimeWarning, stacklevel=2)
        finally:
            for fh in self._outputs:
                fh.close()
            self._outputs.clear()
            self._procs.clear()
            if remove_dir if remove_dir is not None else self.base_dir is None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Keep the logs of a failed test for inspection; a clean exit removes a temporary directory.
        self.stop(remove_dir=None if exc_type is None else False)

    # ----------------------------------------------------------------- start-up
    def _start(self) -> None:
        if self.base_dir is not None:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="slurm-", dir=self.base_dir)).resolve()
        self._dir.chmod(0o755)  # munged refuses a socket directory that others cannot enter
        socket_path = self._dir / "munge.socket.2"
        if len(str(socket_path)) > _UNIX_SOCKET_MAX:
            raise RuntimeError(f"munge socket path too long for a Unix socket: {socket_path} (use a shorter base_dir)")
        (self._dir / "state").mkdir()
        for name in self.node_names:  # SlurmdSpoolDir=spool/%n; slurmd logs an error if it is missing
            (self._dir / "spool" / name).mkdir(parents=True)
        self.conf.write_text(self._config(socket_path, _free_ports(self.nodes + 1)))

        key = self._dir / "munge.key"
        proc = subprocess.run(["mungekey", "--create", f"--keyfile={key}"], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"mungekey failed (rc {proc.returncode}): {proc.stderr.strip()}")

        deadline = time.monotonic() + self.start_timeout
        d = self._dir
        self._spawn("munged", ["munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
                               f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                               f"--seed-file={d / 'munge.seed'}"])
        self._wait_until(lambda: socket_path.is_socket(), deadline, "munged to create its socket")

        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        self._wait_until(self._controller_up, deadline, "slurmctld to answer `scontrol ping`")

        for name in self.node_names:
            self._spawn(f"slurmd-{name}", ["slurmd", "-D", "-f", str(self.conf), "-N", name])
        self._wait_until(self._all_idle, deadline, f"all {self.nodes} nodes to be idle")

    def _config(self, socket_path: Path, ports: list[int]) -> str:
        d = self._dir
        assert d is not None
        lines = [
            "# Written by tests/slurm_cluster.py: a private test cluster on this machine.",
            "ClusterName=ringxtest",
            "SlurmctldHost=localhost",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={socket_path}",
            "CredType=cred/munge",
            f"SlurmctldPort={ports[0]}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool' / '%n'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'slurmd-%n.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            "MpiDefault=pmi2",
            "EnforcePartLimits=ALL",
            "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "KillWait=2",
            "MailProg=/bin/true",
            "SchedulerParameters=batch_sched_delay=0",
        ]
        for name, port in zip(self.node_names, ports[1:]):
            lines.append(f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={self.cpus_per_node} State=UNKNOWN")
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.dir / f"{name}.out", "wb")  # closed in stop()
        self._outputs.append(out)
        env = self.env  # SLURM_CONF marks every process of this cluster (see _kill_strays)
        self._procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, cwd=self.dir, start_new_session=True)

    def _wait_until(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while True:
            dead = {name: p.returncode for name, p in self._procs.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"Slurm test cluster: daemon(s) exited while waiting for {what}: {dead}\n"
                                   f"{self._log_tails()}")
            if ready():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Slurm test cluster: timed out after {self.start_timeout:g} s waiting for "
                                   f"{what}\n{self._node_report()}{self._log_tails()}")
            time.sleep(0.1)

    def _controller_up(self) -> bool:
        try:
            proc = self.run("scontrol", "ping", timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0 and "is UP" in proc.stdout

    def _node_states(self) -> dict[str, str]:
        try:
            proc = self.run("scontrol", "show", "nodes", "-o", timeout=10)
        except subprocess.TimeoutExpired:
            return {}
        states = {}
        for line in proc.stdout.splitlines():
            name, state = re.search(r"\bNodeName=(\S+)", line), re.search(r"\bState=(\S+)", line)
            if name and state:
                states[name.group(1)] = state.group(1)
        return states

    def _all_idle(self) -> bool:
        states = self._node_states()
        return all(states.get(name) == "IDLE" for name in self.node_names)

    def _node_report(self) -> str:
        return "node states: " + (", ".join(f"{n}={s}" for n, s in sorted(self._node_states().items())) or "?") + "\n"

    def _log_tails(self) -> str:
        if self._dir is None:
            return ""
        parts = []
        for path in sorted(self._dir.glob("*.log")) + sorted(self._dir.glob("*.out")):
            parts.append(f"--- {path} (tail) ---\n{_tail(path)}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- shutdown
    def _cancel_jobs(self) -> None:
        ctld = self._procs.get("slurmctld")
        if ctld is None or ctld.poll() is not None:
            return
        try:
            jobs = self.run("squeue", "-h", "-o", "%i", timeout=10).stdout.split()
            if not jobs:
                return
            self.run("scancel", *jobs, timeout=10)
            deadline = time.monotonic() + _STOP_WAIT_S
            while time.monotonic() < deadline and self.run("squeue", "-h", "-o", "%i", timeout=10).stdout.strip():
                time.sleep(0.1)
        except subprocess.TimeoutExpired:
            pass  # the sweep in _kill_strays still removes the job processes

    def _stop_procs(self, names: list[str]) -> None:
        procs = [self._procs[name] for name in names if name in self._procs]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_WAIT_S
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=_STOP_WAIT_S)

    def _kill_strays(self) -> list[int]:
        """SIGKILL every live process of this cluster that is still around; return any survivors."""
        marker = f"SLURM_CONF={self.conf}".encode()
        me = os.getpid()
        parents: dict[int, int] = {}
        ours: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            try:
                stat = (entry / "stat").read_text()
                parents[pid] = int(stat.rpartition(")")[2].split()[1])
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    ours.add(pid)
            except (OSError, ValueError, IndexError):
                continue
        # Add descendants of our processes (a job may have replaced its environment).
        grew = True
        while grew:
            grew = False
            for pid, ppid in parents.items():
                if ppid in ours and pid not in ours and pid != me:
                    ours.add(pid)
                    grew = True
        victims = [pid for pid in ours if _alive(pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self._procs.values():  # reap anything of ours that the sweep killed
            if p.poll() is None:
                try:
                    p.wait(timeout=_STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
        return _wait_dead(victims, _STOP_WAIT_S)


def require_slurm() -> None:
    """Skip (saying why) where Slurm is absent; under CI, where .ci/run installs it, fail instead."""
    import pytest

    reason = slurm_available()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"Slurm is required in CI: {reason}")
    pytest.skip(f"no Slurm here: {reason}")
