"""A real Slurm cluster (two slurmd acting as two nodes) runs a campaign from `bench sweep submit`.

Skips, saying why, where Slurm is not installed; under CI (where .ci/run
installs it) a missing Slurm is a failure, never a silent pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ringx_suite.store import Store, validate
from tests.mpi import CHECKOUT
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
    return subprocess.run([sys.executable, "-m", "ringx_bench", "sweep", *args], capture_output=True, text=True,
                          cwd=CHECKOUT, env=cluster.env, timeout=120)


def submitted(out, campaign: str = "slurm-ci") -> list[dict]:
    return json.loads((out / campaign / "sweep" / "manifest.json").read_text())["submissions"]


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
    # Each run writes its own file (records/<run_id>.jsonl): drop the line from the 2-node run's file.
    path = next(p for p in store.files() if any(json.loads(x)["nodes"] == 2 for x in p.read_text().splitlines()))
    lines = path.read_text().splitlines()
    lost = next(i for i, line in enumerate(lines) if json.loads(line)["nodes"] == 2)
    lost_rec = json.loads(lines[lost])
    path.write_text("\n".join(lines[:lost] + lines[lost + 1:]) + "\n")
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


PREFIX_PROFILE = """
description = "CPU ranks under Slurm, Python from a named environment prefix"
scheduler = "slurm"
gpus_per_node = 0
peak_tflops = 0.05
efficiency = 1.0
launcher = "srun {mpi} -N {{nodes}} -n {{ranks}} --ntasks-per-node={{ranks_per_node}}"
scratch = "$RINGX_TEST_SCRATCH/ringx-runs"
startup_s = 10.0
[env]
OMP_NUM_THREADS = "1"
[stack]
kind = "prefix"
prefix = "$RINGX_TEST_ENV"
"""
PREFIX_SWEEP = """
campaign = "{campaign}"
nodes = {nodes}
ranks_per_node = 2
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


def named_prefix(where: Path) -> Path:
    """A venv of its own at ``where`` (its own bin/python and prefix) whose lib/ is this environment's, with the
    suite's console script in its bin/ (what `pip install .` writes there): the job scripts call it."""
    import os

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    lib = Path(sys.executable).parent.parent / "lib"
    shutil.rmtree(where / "lib")
    os.symlink(lib.resolve(), where / "lib")
    script = where / "bin" / "ringx-bench"
    script.write_text(f"#!{where}/bin/python\nimport sys\nfrom ringx_bench import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return where


def test_a_sweep_runs_from_a_named_environment_prefix_with_its_preflight(cluster, tmp_path):
    env_dir = named_prefix(tmp_path / "envs" / "ringx")
    (tmp_path / "prefix-cpu.toml").write_text(PREFIX_PROFILE.format(mpi="--mpi=pmi2"))
    f = tmp_path / "sweep.toml"
    f.write_text(PREFIX_SWEEP.format(campaign="prefix-ci", nodes=[1, 2]))
    prof = ["--profile", str(tmp_path / "prefix-cpu.toml")]  # a profile outside jobs/profiles: named on the CLI
    env = {**cluster.env, "RINGX_TEST_SCRATCH": str(tmp_path / "scratch"), "RINGX_TEST_ENV": str(env_dir)}
    proc = subprocess.run([sys.executable, "-m", "ringx_bench", "sweep", "submit", str(f), *prof], capture_output=True,
                          text=True, cwd=CHECKOUT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "scratch" / "ringx-runs"  # the profile's scratch root, not the checkout
    subs = submitted(out, "prefix-ci")
    for s in subs:
        state = cluster.wait_job(s["job_id"], timeout=300)
        logs = "".join(p.read_text() for p in (out / "prefix-ci/sweep/logs").glob(f"*{s['job_id']}*"))
        assert state == "COMPLETED", logs
        assert "bench preflight: passed" in logs
        verdict = json.loads((out / "prefix-ci/sweep/preflight" / f"{s['job']}-{s['job_id']}.json").read_text())
        assert verdict["ok"] and verdict["python"] == f"{env_dir}/bin/python", verdict
        assert [c["check"] for c in verdict["checks"]] == ["MPI world against Slurm",
                                                           "bench selftest on every rank's device"]
    store = Store(out, "prefix-ci")
    recs = store.records()
    assert len(recs) == 2 * 4 and all(r["status"] == "ok" for r in recs)
    for p in (store.dir / "runs").glob("*.json"):
        assert json.loads(p.read_text())["command"][0] == f"{env_dir}/bin/python"  # the prefix's interpreter ran
    status = subprocess.run([sys.executable, "-m", "ringx_bench", "sweep", "status", str(f), *prof],
                            capture_output=True, text=True, cwd=CHECKOUT, env=env, timeout=120)
    assert status.stdout.count("missing 0  preflight ok") == 2, status.stdout


def test_a_failed_preflight_is_recorded_and_runs_no_point(cluster, tmp_path):
    """srun without the MPI's PMI starts N copies of rank 0: the preflight says so and the job stops."""
    env_dir = named_prefix(tmp_path / "env")
    (tmp_path / "nopmi.toml").write_text(PREFIX_PROFILE.format(mpi="--mpi=none"))
    f = tmp_path / "sweep.toml"
    f.write_text(PREFIX_SWEEP.format(campaign="nopmi", nodes=[1]))
    prof = ["--profile", str(tmp_path / "nopmi.toml")]
    env = {**cluster.env, "RINGX_TEST_SCRATCH": str(tmp_path / "scratch"), "RINGX_TEST_ENV": str(env_dir)}
    proc = subprocess.run([sys.executable, "-m", "ringx_bench", "sweep", "submit", str(f), *prof], capture_output=True,
                          text=True, cwd=CHECKOUT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "scratch" / "ringx-runs"
    (s,) = submitted(out, "nopmi")
    assert cluster.wait_job(s["job_id"], timeout=300) == "FAILED"
    logs = "".join(p.read_text() for p in (out / "nopmi/sweep/logs").glob(f"*{s['job_id']}*"))
    assert "ringx: preflight failed" in logs and "bench run" not in logs.replace("bench run:", "")
    verdict = json.loads((out / "nopmi/sweep/preflight" / f"N1x2-{s['job_id']}.json").read_text())
    assert not verdict["ok"] and "2 copies of rank 0" in verdict["checks"][0]["detail"]
    assert not Store(out, "nopmi").records()  # no point was run
    status = subprocess.run([sys.executable, "-m", "ringx_bench", "sweep", "status", str(f), *prof],
                            capture_output=True, text=True, cwd=CHECKOUT, env=env, timeout=120)
    assert "missing 4  preflight FAILED: MPI world against Slurm: Slurm started 2 tasks" in status.stdout, status.stdout
