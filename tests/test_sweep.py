"""Sweep files, expansion, validation, job scripts (quoting, golden files) and estimates."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from bench import sweep
from bench.points import make_point
from bench.sweep import plan, profiles, slurm

GOLDEN = Path(__file__).parent / "golden"


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """
campaign = "c1"
machine = "{machine}"
nodes = {nodes}
ranks_per_node = {rpn}
out = "{out}"
{extra}
[bench]
iters = 3
[params]
algorithms = ["ring", "ringx4"]
seq = [4096, 8192]
causal = [true, false]
heads = 8
head_dim = 64
{params}
"""


def sweep_file(tmp_path, machine="cpu-slurm", nodes="[1, 2]", rpn="2", extra="", params=""):
    return write(tmp_path, BASE.format(machine=machine, nodes=nodes, rpn=rpn, out=tmp_path / "res", extra=extra,
                                       params=params))


def test_cross_product_zip_and_exclude():
    pts = sweep.spec.expand({"algorithms": ["ring", "ringx4"], "seq": [1, 2, 3], "heads": [8, 16, 32], "causal": True},
                       [["seq", "heads"]], [{"algorithms": "ringx4", "seq": [3]}])
    assert len(pts) == 2 * 3 - 1
    assert {(p["seq"], p["heads"]) for p in pts} == {(1, 8), (2, 16), (3, 32)}
    assert {"algorithm": "ringx4", "seq": 3, "heads": 32, "causal": True} not in pts
    with pytest.raises(sweep.SweepError, match="equal length"):
        sweep.spec.expand({"seq": [1, 2], "heads": [8]}, [["seq", "heads"]], [])


def test_load_builds_one_job_per_node_count(tmp_path):
    sw = sweep.load(sweep_file(tmp_path))
    assert [(j.nodes, j.ranks_per_node, len(j.points)) for j in sw.jobs] == [(1, 2, 8), (2, 2, 8)]
    # a CPU profile's peak is a guess for estimates only: no MFU from it; a GPU profile's published peak is used
    assert sw.bench["iters"] == 3 and sw.bench["peak_tflops"] is None
    gpu = sweep.load(sweep_file(tmp_path, machine="frontier", rpn="8"))
    assert gpu.bench["peak_tflops"] == gpu.profile.peak_tflops == 191.5


@pytest.mark.parametrize("change,message", [
    (dict(params="dtpye = 'float32'"), "unknown key 'dtpye' in [params] of s.toml; did you mean 'dtype'?"),
    (dict(extra="acount = 'x'"), "did you mean 'account'?"),
    (dict(machine="summit"), "unknown machine 'summit'"),
    (dict(machine="frontier", rpn="16"), "ranks_per_node 16 exceeds the 8 GPUs per node of frontier"),
    (dict(nodes="[1, 3]"), "impossible point"),
    (dict(params="kv_heads = 3"), "heads (8) must be a multiple of kv_heads (3)"),
    (dict(nodes="[0]"), "must be integers from 1 to 100000"),
    (dict(extra='zip = [["seq", "heads"]]'), "equal length"),
])
def test_validation_errors_before_anything_runs(tmp_path, change, message):
    with pytest.raises(sweep.SweepError) as e:
        sweep.load(sweep_file(tmp_path, **change))
    assert message in str(e.value)


def test_impossible_points_are_all_listed(tmp_path):
    with pytest.raises(sweep.SweepError) as e:
        sweep.load(sweep_file(tmp_path, nodes="[3]", rpn="2", params="seq_per_rank = 10\n"))
    # both the seq/seq_per_rank conflict and divisibility problems are reported, per point
    assert "impossible point(s)" in str(e.value)


HOSTILE = ["a b", "it's", 'say "hi"', "$(touch {pwned})", "`touch {pwned}`", "x;touch {pwned}", "line1\nline2",
           "abc\n"]


@pytest.mark.parametrize("value", HOSTILE)
def test_sbatch_values_reject_hostile_input(tmp_path, value):
    value = value.format(pwned=tmp_path / "pwned")
    for field in ("account", "partition", "qos"):  # refused when the sweep is read, before any plan or render
        with pytest.raises(sweep.SweepError, match="may only contain"):
            sweep.load(sweep_file(tmp_path, extra=f"{field} = {json.dumps(value)}"))
    with pytest.raises(ValueError, match="may only contain"):
        slurm.sbatch_value("account", value)
    with pytest.raises(sweep.SweepError, match="must be a plain directory name"):
        text = BASE.format(machine="cpu-slurm", nodes="[1]", rpn="2", out=tmp_path, extra="", params="")
        sweep.load(write(tmp_path, text.replace('campaign = "c1"', f"campaign = {json.dumps(value)}")))


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_values_arrive_intact_and_never_run(tmp_path, value):
    pwned = tmp_path / "pwned"
    tag = value.format(pwned=pwned)
    sw = sweep.load(sweep_file(tmp_path, extra=f"tag = {json.dumps(tag)}"))
    script = plan.write_job(sw, sw.jobs[0], sw.jobs[0].points)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # Run the script with a fake srun that records its arguments instead of launching anything.
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "srun").write_text('#!/usr/bin/env python3\nimport json, sys\n'
                               f'json.dump(sys.argv[1:], open({str(tmp_path / "argv.json")!r}, "w"))\n')
    (fake / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=60)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--tag") + 1] == tag
    assert not pwned.exists()


def render_golden(machine: str) -> str:
    prof = profiles.load_profile(machine)
    return slurm.render(prof, job_name="ringx-paper-N4x8", nodes=4, ranks_per_node=prof.gpus_per_node,
                       limit_s=5400, log_dir=Path("/lustre/results/paper/sweep/logs"), workdir=Path("/home/u/ringx"),
                       python="/home/u/env/bin/python", mpiexec="mpiexec",
                       bench_args=["--points", "/lustre/results/paper/sweep/points/N4x8.json", "--campaign", "paper",
                                   "--out", "/lustre/results", "--iters", "10"],
                       account="abc123", partition="", qos="")


@pytest.mark.parametrize("machine", ["frontier", "perlmutter"])
def test_golden_job_scripts(machine):
    path = GOLDEN / f"{machine}.sh"
    if os.environ.get("RINGX_UPDATE_GOLDEN"):
        path.write_text(render_golden(machine))
    assert render_golden(machine) == path.read_text(), (
        f"rendered {machine} script changed; if intended, rerun with RINGX_UPDATE_GOLDEN=1 and review the diff")


def test_every_profile_loads_and_renders():
    for name in profiles.available_profiles():
        prof = profiles.load_profile(name)
        text = slurm.render(prof, job_name="j", nodes=2, ranks_per_node=prof.gpus_per_node or 2, limit_s=60,
                           log_dir=Path("/tmp/l"), workdir=Path("/tmp"), python="python", mpiexec="mpiexec",
                           bench_args=["--campaign", "c"])
        assert ("#SBATCH --nodes=2" in text) == (prof.scheduler == "slurm")
        assert shlex.split(text.splitlines()[-1])[-2:] == ["--campaign", "c"]


def test_estimates_grow_with_work(tmp_path):
    sw = sweep.load(sweep_file(tmp_path, machine="frontier", rpn="8"))
    job = sw.jobs[0]
    pts = job.points
    longer = [make_point({**p.spec(), "seq": p.seq * 2}, job.ranks) for p in pts]
    base = plan.estimate(sw, job, pts)
    assert plan.estimate(sw, job, pts[:-1]) < base < plan.estimate(sw, job, pts + pts[:1])
    assert base < plan.estimate(sw, job, longer)
    sw.bench["iters"] += 10
    assert base < plan.estimate(sw, job, pts)
    assert slurm.time_limit(59) == "00:01:00" and slurm.time_limit(3601) == "01:01:00"
    assert slurm.time_limit(2 * 86400 + 60) == "2-00:01:00"


def test_plan_and_dry_run_submit_print_without_submitting(tmp_path):
    f = sweep_file(tmp_path)
    out = subprocess.run([os.sys.executable, "-m", "bench", "sweep", "plan", str(f)], capture_output=True, text=True,
                         cwd=profiles.PROFILES.parent.parent)
    assert out.returncode == 0 and "job N1x2: 1 node(s) x 2 = 2 ranks, 8 points" in out.stdout
    out = subprocess.run([os.sys.executable, "-m", "bench", "sweep", "submit", str(f), "--dry-run"],
                         capture_output=True, text=True, cwd=profiles.PROFILES.parent.parent)
    assert out.returncode == 0 and out.stdout.count("# would run: sbatch --parsable") == 2
    assert not (tmp_path / "res" / "c1" / "sweep" / "manifest.json").exists()
    bad = subprocess.run([os.sys.executable, "-m", "bench", "sweep", "plan", str(tmp_path / "nope.toml")],
                         capture_output=True, text=True, cwd=profiles.PROFILES.parent.parent)
    assert bad.returncode == 2 and "cannot read" in bad.stderr and "Traceback" not in bad.stderr
