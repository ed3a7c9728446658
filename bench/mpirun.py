"""Launch a Python module or script on N local ranks with the environment's MPICH ``mpiexec``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout, or the site-packages of an installed suite
CHECKOUT = (ROOT / "pyproject.toml").is_file()  # running from a checkout (its packages on PYTHONPATH for the ranks)


def mpiexec() -> str:
    """The mpiexec beside this Python (pip's mpich), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    found = shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("no mpiexec found: install MPI (pip install mpi4py mpich) into this environment")
    return found


def run(nprocs: int, args: list[str], timeout: float | None = None, capture: bool = True,
        threads_per_rank: int = 1, env: dict | None = None) -> subprocess.CompletedProcess:
    """``mpiexec -n nprocs python ARGS`` (from the repository root in a checkout; from where we are when the suite
    is installed); killed after ``timeout`` s."""
    path = {"PYTHONPATH": str(ROOT)} if CHECKOUT else {}
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_rank), **path, **(env or {})}
    cmd = [mpiexec(), "-n", str(nprocs), sys.executable, *args]
    return subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, env=full_env,
                          cwd=ROOT if CHECKOUT else None)
