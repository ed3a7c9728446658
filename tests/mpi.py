"""Launching real MPI jobs from pytest (through the suite's own launcher)."""

from __future__ import annotations

import subprocess

from bench import mpirun


def run_mpi(nprocs: int, script: str, *args: str, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``python script args`` on ``nprocs`` ranks; kill the job after ``timeout`` s."""
    return mpirun.run(nprocs, [str(mpirun.ROOT / script), *args], timeout=timeout, env=env)
