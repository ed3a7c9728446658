"""A job's script, from its profile: the software stack, the environment, the preflight and the commands.

Every value substituted into a job script is shell-quoted; values that go into ``#SBATCH`` lines are checked
by slurm.sbatch_value instead. The profile itself is trusted (its set-up lines are shell by design). The script
calls the suite's installed command (``ringx-bench``) from the stack's environment: the compute nodes need the
suite installed there, not a checkout, and the script changes into no directory.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from .profiles import Profile, Stack
from .schedulers import JobShape


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


def command(prof: Profile, nodes: int, ranks_per_node: int, program: list[str], mpiexec: str) -> str:
    """Launcher, the container's exec words (if any) and ``program`` (the interpreter, or the suite's command)."""
    q = shlex.quote
    launcher = prof.launcher.format(nodes=nodes, ranks=nodes * ranks_per_node, ranks_per_node=ranks_per_node,
                                    mpiexec=q(mpiexec))
    words = [launcher]
    if prof.stack.kind == "container":
        words.append(prof.stack.exec.format(image=q(prof.stack.image)))
    return " ".join(words + [q(w) for w in program])


def render(prof: Profile, shape: JobShape, *, suite: list[str], mpiexec: str, commands: list[list[str]],
           job: str = "", preflight_dir: Path | None = None, preflight_args: list[str] = ()) -> str:
    """The job script for one job of a sweep: its ``commands`` (each the words after ``ringx-bench``, e.g.
    ``["run", "--points", ...]``) one after the other with the profile's launcher; ``suite`` is the command that
    runs them (the stack's ``ringx-bench``, see Stack.suite).

    With ``preflight_dir`` (schedulers whose jobs check their allocation), ``bench preflight`` runs first with
    the same launcher; when it fails, its verdict stays in ``preflight_dir/JOB-SLURMID.json`` and the script
    stops before any point.
    """
    q = shlex.quote
    rpn = shape.ranks_per_node
    lines = ["#!/bin/bash",
             f"# Rendered by ringx-bench (bench sweep) for profile {prof.name}: {shape.nodes} node(s) x {rpn} "
             f"rank{'s' if rpn != 1 else ''}.",
             "# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.",
             *prof.scheduler.header(shape, prof.directives),
             "set -euo pipefail"]
    lines += stack_lines(prof.stack)
    lines += prof.setup  # written by the profile's author: shell, on purpose
    lines += [f"export {k}={q(str(v))}" for k, v in prof.env.items() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    run = command(prof, shape.nodes, rpn, suite, mpiexec)
    if preflight_dir is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job):
            raise ValueError(f"job name {job!r} must be letters, digits, '.', '_' or '-'")
        lines += [
            "# Preflight on this allocation: the MPI world against Slurm's, bench selftest on every rank's device and",
            "# the network transport. A failure is recorded (bench sweep status shows it) and no point runs.",
            f"RINGX_PREFLIGHT={q(str(preflight_dir) + '/' + job + '-')}\"${{SLURM_JOB_ID:-0}}.json\"",
            f"mkdir -p {q(str(preflight_dir))}",
            "rc=0",
            f"{run} preflight --record \"$RINGX_PREFLIGHT\" " + " ".join(q(x) for x in preflight_args)
            + " || rc=$?",
            'if [ "$rc" -ne 0 ]; then',
            f'  [ -s "$RINGX_PREFLIGHT" ] || printf \'{{"job": "{job}", "ok": false, "checks": [{{"check": '
            '"preflight", "ok": false, "detail": "the preflight step exited with status %s before writing '
            'its verdict: see the job log"}]}\\n\' "$rc" > "$RINGX_PREFLIGHT"',
            '  echo "ringx: preflight failed (status $rc): no point runs; see $RINGX_PREFLIGHT" >&2',
            "  exit 3",
            "fi"]
    lines += [f"{run} " + " ".join(q(a) for a in cmd) for cmd in commands] + [""]
    return "\n".join(lines)
