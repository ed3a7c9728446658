"""Where a sweep's jobs run, behind one interface: here (``local``) or through Slurm (``slurm``).

A profile's ``scheduler`` names one of ``SCHEDULERS``. The scheduler says what heads a job script (its
``#SBATCH`` lines), whether the job checks its allocation first (the preflight), how a job is started, and
what state a started job is in. Plan, state and commands ask it; none of them compares scheduler names.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ringx_suite.cli import UserError

from . import slurm


@dataclass(frozen=True)
class JobShape:
    """What a scheduler needs to know of one job to head its script."""

    name: str
    nodes: int
    ranks_per_node: int
    limit_s: float
    log_dir: Path
    account: str = ""
    partition: str = ""
    qos: str = ""


class Scheduler:
    name = ""
    preflight = False  # the job checks its allocation (bench preflight) before any point
    queues = False  # jobs are submitted and wait in a queue (states, resubmit)
    here = False  # jobs run on this machine (its memory is the node's)

    def header(self, shape: JobShape, directives: list[str]) -> list[str]:
        """The lines between the shebang comment and ``set -euo pipefail``."""
        return []

    def submit(self, script: Path, env: dict | None = None) -> str:
        """Start the job; its id."""
        raise UserError(f"the {self.name} scheduler submits nothing: use `bench sweep local`")

    def states(self, job_ids: dict[str, str], env: dict | None = None) -> dict[str, str]:
        """Job name -> its scheduler state (PENDING, RUNNING, ...) for the ids given."""
        return {}

    def log(self, log_dir: Path, job_name: str, job_id: str) -> Path:
        """Where a started job's output goes (what ``--output`` names on Slurm)."""
        return log_dir / f"{job_name}-{job_id}.out"


class Local(Scheduler):
    """This machine: the job script runs here, its output in the campaign's logs/ (bench sweep local)."""

    name = "local"
    here = True

    def start(self, script: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
        """Run a job script in the background, stdout and stderr into ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            return subprocess.Popen(["bash", str(script)], stdout=f, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)


class Slurm(Scheduler):
    """A Slurm cluster: #SBATCH lines, sbatch, squeue/scontrol; jobs check their allocation first."""

    name = "slurm"
    preflight = True
    queues = True

    def header(self, shape: JobShape, directives: list[str]) -> list[str]:
        logs = slurm.sbatch_value("log directory", str(shape.log_dir))
        sb = [f"--job-name={slurm.sbatch_value('job name', shape.name)}", f"--nodes={shape.nodes}",
              f"--ntasks-per-node={shape.ranks_per_node}", f"--time={slurm.time_limit(shape.limit_s)}",
              f"--output={logs}/%x-%j.out", f"--error={logs}/%x-%j.err"]
        for key, value in (("account", shape.account), ("partition", shape.partition), ("qos", shape.qos)):
            if value:
                sb.append(f"--{key}={slurm.sbatch_value(key, value)}")
        return [f"#SBATCH {d}" for d in sb + directives]

    def submit(self, script: Path, env: dict | None = None) -> str:
        return slurm.sbatch(script, env)

    def states(self, job_ids: dict[str, str], env: dict | None = None) -> dict[str, str]:
        return {name: slurm.job_state(jid, env) for name, jid in job_ids.items()}


SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (Local(), Slurm())}
