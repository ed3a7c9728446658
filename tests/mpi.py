"""Launching real MPI jobs from pytest (through the suite's own launcher)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench import mpirun


def run_mpi(nprocs: int, script: str, *args: str, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``python script args`` on ``nprocs`` ranks; kill the job after ``timeout`` s."""
    return mpirun.run(nprocs, [str(mpirun.ROOT / script), *args], timeout=timeout, env=env)


def run_cases(nprocs: int, script: str, out: Path, seed: int, env: dict | None = None) -> dict[str, list[dict]]:
    """Run a case worker (it writes ``rank{r}.jsonl`` rows with a "case" id into ``out``) on ``nprocs`` ranks;
    case id -> the rows of every rank."""
    proc = run_mpi(nprocs, script, str(out), str(seed), timeout=600, env=env)
    assert proc.returncode == 0, f"worker failed (seed {seed}):\n{proc.stdout}\n{proc.stderr}"
    by_case: dict[str, list[dict]] = {}
    for r in range(nprocs):
        for line in (out / f"rank{r}.jsonl").read_text().splitlines():
            row = json.loads(line)
            by_case.setdefault(row["case"], []).append(row)
    return by_case
