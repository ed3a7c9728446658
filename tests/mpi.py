"""Launching real MPI jobs from pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"  # the venv's MPICH, never /usr/bin/mpiexec


def run_mpi(nprocs: int, script: str, *args: str, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``python script args`` on ``nprocs`` ranks; kill the whole job after ``timeout`` s."""
    if not MPIEXEC.exists():
        raise RuntimeError(f"{MPIEXEC} not found: install the dev extras (pip install mpi4py mpich)")
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [str(MPIEXEC), "-n", str(nprocs), sys.executable, str(ROOT / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)
