"""A real Slurm cluster (two slurmd acting as two nodes) runs a campaign from `bench sweep submit`.

Skips, saying why, where Slurm is not installed; under CI (where .ci/run
installs it) a missing Slurm is a failure, never a silent pass.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import mpirun
from core.store import Store, validate
from tests.slurm_cluster import SlurmCluster, require_slurm

SWEEP = """
campaign = "slurm-ci"
machine = "cpu-slurm"
nodes = [1, 2]
ranks_per_node = 2
out = "{out}"
[bench]
warmup = 0
iters = 2
timeout = 60
[params]
algorithms = ["ring", "ringx4"]
seq = 64
heads = 2
head_dim = 16
causal = [true, false]
"""


@pytest.fixture(scope="module")
def cluster():
    require_slurm()
    # munged needs world-executable parents, which pytest's private temp dirs are not: default location.
    with SlurmCluster(nodes=2, cpus_per_node=4) as c:
        yield c


def sweep_cmd(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "sweep", *args], capture_output=True, text=True,
                          cwd=mpirun.ROOT, env=cluster.env, timeout=120)


def submitted(out) -> list[dict]:
    return json.loads((out / "slurm-ci" / "sweep" / "manifest.json").read_text())["submissions"]


def test_submit_status_and_resubmit_on_a_real_cluster(cluster, tmp_path):
    f = tmp_path / "sweep.toml"
    f.write_text(SWEEP.format(out=tmp_path / "res"))
    proc = sweep_cmd(cluster, "submit", str(f))
    assert proc.returncode == 0, proc.stderr
    subs = submitted(tmp_path / "res")
    assert [s["job"] for s in subs] == ["N1x2", "N2x2"]
    for s in subs:
        state = cluster.wait_job(s["job_id"], timeout=240)
        logs = "".join(p.read_text() for p in (tmp_path / "res/slurm-ci/sweep/logs").glob(f"*{s['job_id']}*"))
        assert state == "COMPLETED", logs

    store = Store(tmp_path / "res", "slurm-ci")
    recs = store.records()
    assert len(recs) == 2 * 4
    runs = {p.stem: json.loads(p.read_text()) for p in (store.dir / "runs").glob("*.json")}
    job_of = {s["job"]: s["job_id"] for s in subs}
    for r in recs:
        assert validate(r) == [] and r["status"] == "ok"
        assert r["world_size"] == 2 * r["nodes"]
        prov = runs[r["run_id"]]
        assert prov["slurm"]["job_id"] == job_of[f"N{r['nodes']}x2"]
        assert prov["nodes"] == r["nodes"] and len(prov["node_names"]) == r["nodes"]
        assert prov["env"].get("SLURM_JOB_ID") == prov["slurm"]["job_id"]
    assert {n for p in runs.values() for n in p["node_names"]} == set(cluster.node_names)

    status = sweep_cmd(cluster, "status", str(f))
    assert status.returncode == 0
    assert status.stdout.count("done 4  failed 0  running 0  pending 0  missing 0") == 2, status.stdout

    # Lose one point of the 2-node job (as a job killed by its time limit would), then resubmit it alone.
    path = next(f for f in store.files() if '"nodes":2' in f.read_text())  # the 2-node job's run file
    lines = path.read_text().splitlines()
    lost = next(i for i, line in enumerate(lines) if json.loads(line)["nodes"] == 2)
    lost_rec = json.loads(lines[lost])
    path.write_text("".join(line + "\n" for line in lines[:lost] + lines[lost + 1:]))
    status = sweep_cmd(cluster, "status", str(f))
    assert "done 3  failed 0  running 0  pending 0  missing 1" in status.stdout, status.stdout
    proc = sweep_cmd(cluster, "resubmit", str(f))
    assert proc.returncode == 0, proc.stderr
    again = submitted(tmp_path / "res")[-1]
    assert again["job"] == "N2x2" and again["points"] == 1
    assert cluster.wait_job(again["job_id"], timeout=240) == "COMPLETED"
    redone = [r for r in store.records() if r["key"] == lost_rec["key"]]
    assert len(redone) == 1 and redone[0]["status"] == "ok" and redone[0]["nodes"] == 2
    status = sweep_cmd(cluster, "status", str(f))
    assert status.stdout.count("missing 0") == 2, status.stdout
    assert "nothing to resubmit" in sweep_cmd(cluster, "resubmit", str(f)).stdout
