"""Talking to Slurm: values for #SBATCH lines, time limits, sbatch and job states.

Values that must appear in ``#SBATCH`` lines (which cannot be quoted) are checked against a safe character
set, so a sweep file can never inject a command (script.py shell-quotes everything else).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
