"""Talking to Slurm: job scripts from a profile, sbatch, and job states.

Every value substituted into a job script is shell-quoted; values that must
appear in ``#SBATCH`` lines (which cannot be quoted) are checked against a
safe character set instead, so a sweep file can never inject a command. The
profile itself is trusted (its set-up lines are shell by design).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from .profiles import Profile, Stack

SAFE = re.compile(r"^[A-Za-z0-9._:,=/@+%-]+$")


def sbatch_value(name: str, value: str) -> str:
    """A value for an #SBATCH line, which the shell never sees and so cannot be quoted: checked instead."""
    if not SAFE.fullmatch(str(value)):  # fullmatch: '$' alone would let a trailing newline through
        raise ValueError(f"{name} {value!r} may only contain letters, digits and ._:,=/@+%- "
                         "(it goes into an #SBATCH line, where quoting is impossible)")
    return str(value)


def time_limit(seconds: float) -> str:
    """Slurm's D-HH:MM:SS, rounded up to whole minutes."""
    minutes = max(1, -(-int(seconds) // 60))
    d, rem = divmod(minutes, 24 * 60)
    h, m = divmod(rem, 60)
    return f"{d}-{h:02d}:{m:02d}:00" if d else f"{h:02d}:{m:02d}:00"


def stack_lines(st: Stack) -> list[str]:
    """The lines that put a job on its software stack: modules, the prefix's bin/, the network plugin's lib/."""
    q = shlex.quote
    lines = [f"# software stack: {st.describe()}"]
    if st.modules:
        lines.append("module load " + " ".join(q(m) for m in st.modules))
    if st.kind == "prefix":
        lines.append(f"export PATH={q(st.prefix.rstrip('/') + '/bin')}\"${{PATH:+:$PATH}}\"")
    if st.plugin_path:
        lines.append(f"export LD_LIBRARY_PATH={q(st.plugin_path)}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\""
                     "  # the network plugin first")
    return lines


def command(prof: Profile, nodes: int, ranks_per_node: int, python: str, mpiexec: str) -> str:
    """Launcher, the container's exec words (if any) and the interpreter: what precedes ``-m bench ...``."""
    q = shlex.quote
    launcher = prof.launcher.format(nodes=nodes, ranks=nodes * ranks_per_node, ranks_per_node=ranks_per_node,
                                    mpiexec=q(mpiexec))
    words = [launcher]
    if prof.stack.kind == "container":
        words.append(prof.stack.exec.format(image=q(prof.stack.image)))
    return " ".join(words + [q(python)])


def render(prof: Profile, *, job_name: str, nodes: int, ranks_per_node: int, limit_s: float, log_dir: Path,
           workdir: Path, python: str, mpiexec: str, commands: list[list[str]], account: str = "",
           partition: str = "", qos: str = "", job: str = "", preflight_dir: Path | None = None,
           preflight_args: list[str] = ()) -> str:
    """The job script for one job of a sweep: its ``commands`` (each the words after ``python -m bench``, e.g.
    ``["run", "--points", ...]``) one after the other with the profile's launcher.

    With ``preflight_dir`` (Slurm jobs), ``bench preflight`` runs first with the same launcher; when it fails,
    its verdict stays in ``preflight_dir/JOB-SLURMID.json`` and the script stops before any point.
    """
    q = shlex.quote
    lines = ["#!/bin/bash",
             f"# Rendered by ringx-bench (bench sweep) for profile {prof.name}: {nodes} node(s) x {ranks_per_node} "
             f"rank{'s' if ranks_per_node != 1 else ''}.",
             "# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set."]
    if prof.scheduler == "slurm":
        sb = [f"--job-name={sbatch_value('job name', job_name)}", f"--nodes={nodes}",
              f"--ntasks-per-node={ranks_per_node}", f"--time={time_limit(limit_s)}",
              f"--output={sbatch_value('log directory', str(log_dir))}/%x-%j.out",
              f"--error={sbatch_value('log directory', str(log_dir))}/%x-%j.err"]
        for key, value in (("account", account or prof.account), ("partition", partition or prof.partition),
                           ("qos", qos or prof.qos)):
            if value:
                sb.append(f"--{key}={sbatch_value(key, value)}")
        lines += [f"#SBATCH {d}" for d in sb + prof.directives]
    lines.append("set -euo pipefail")
    lines += stack_lines(prof.stack)
    lines += prof.setup  # written by the profile's author: shell, on purpose
    lines += [f"export {k}={q(str(v))}" for k, v in prof.env.items() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    run = command(prof, nodes, ranks_per_node, python, mpiexec)
    lines.append(f"cd {q(str(workdir))}")
    if preflight_dir is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job):
            raise ValueError(f"job name {job!r} must be letters, digits, '.', '_' or '-'")
        lines += [
            "# Preflight on this allocation: the MPI world against Slurm's, bench selftest on every rank's device and",
            "# the network transport. A failure is recorded (bench sweep status shows it) and no point runs.",
            f"RINGX_PREFLIGHT={q(str(preflight_dir) + '/' + job + '-')}\"${{SLURM_JOB_ID:-0}}.json\"",
            f"mkdir -p {q(str(preflight_dir))}",
            "rc=0",
            f"{run} -m bench preflight --record \"$RINGX_PREFLIGHT\" " + " ".join(q(x) for x in preflight_args)
            + " || rc=$?",
            'if [ "$rc" -ne 0 ]; then',
            f'  [ -s "$RINGX_PREFLIGHT" ] || printf \'{{"job": "{job}", "ok": false, "checks": [{{"check": '
            '"preflight", "ok": false, "detail": "the preflight step exited with status %s before writing '
            'its verdict: see the job log"}]}\\n\' "$rc" > "$RINGX_PREFLIGHT"',
            '  echo "ringx: preflight failed (status $rc): no point runs; see $RINGX_PREFLIGHT" >&2',
            "  exit 3",
            "fi"]
    lines += [f"{run} -m bench " + " ".join(q(a) for a in cmd) for cmd in commands] + [""]
    return "\n".join(lines)


def sbatch(script: Path, env: dict | None = None) -> str:
    """Submit a script; return its job id."""
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {script} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]


def job_state(job_id: str, env: dict | None = None) -> str:
    """PENDING, RUNNING, COMPLETED, ... from squeue, else scontrol; UNKNOWN when Slurm forgot the job."""
    try:
        sq = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, env=env,
                            timeout=30)
        if sq.returncode == 0 and sq.stdout.strip():
            return sq.stdout.split()[0]
        sc = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env,
                            timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    m = re.search(r"JobState=(\w+)", sc.stdout)
    return m.group(1) if m else "UNKNOWN"
