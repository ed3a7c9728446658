"""A private 2-node Slurm cluster runs a real multi-node MPI job through ``srun --mpi=pmi2``."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.slurm_cluster import SlurmCluster, require_slurm

MPI_PROGRAM = ("from mpi4py import MPI; import os; "
               "print(MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size(), os.environ['SLURMD_NODENAME'])")


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_two_node_mpi_job_via_srun_pmi2():
    require_slurm()

    with SlurmCluster(nodes=2, cpus_per_node=4) as cluster:
        assert cluster.node_names == ["n1", "n2"]
        assert cluster.env["SLURM_CONF"] == str(cluster.conf)
        out = cluster.dir / "mpi.out"
        script = cluster.dir / "mpi_job.sh"
        script.write_text(f'#!/bin/bash\nsrun --mpi=pmi2 {sys.executable} -c "{MPI_PROGRAM}"\n')

        submit = cluster.run("sbatch", "--parsable", "-N", "2", "--ntasks-per-node=1", "-t", "2",
                             "-o", out, script)
        assert submit.returncode == 0, submit.stderr
        job_id = submit.stdout.strip().split(";")[0]
        state = cluster.wait_job(job_id, timeout=60)
        text = out.read_text() if out.exists() else "(no output file)"
        assert state == "COMPLETED", f"job {job_id} ended {state}; output:\n{text}"

        rows = sorted(tuple(line.split()) for line in text.splitlines() if line.strip())
        assert [(rank, size) for rank, size, _ in rows] == [("0", "2"), ("1", "2")], text
        assert sorted(node for _, _, node in rows) == ["n1", "n2"], text  # one rank on each node

        # A job that cannot fit is refused at submission (EnforcePartLimits=ALL), not left pending.
        too_big = cluster.run("sbatch", "--parsable", "-N", "3", "--wrap", "hostname")
        assert too_big.returncode != 0, too_big.stdout
        assert "node count" in too_big.stderr.lower(), too_big.stderr

        pids = [int(p.read_text()) for p in sorted(cluster.dir.glob("*.pid"))]
        assert len(pids) == 4  # munged, slurmctld, slurmd-n1, slurmd-n2
    assert not [pid for pid in pids if _running(pid)], "daemons left running after the cluster stopped"
