"""Sweep files, expansion, validation, job scripts (quoting, golden files) and estimates."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ringx_drivers import sweeps as sweep
from ringx_drivers.points.attention import make_point
from ringx_drivers.sweeps import plan, profiles, script, slurm
from ringx_drivers.sweeps.schedulers import JobShape
from tests.cli import run_cli

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


GOLDEN_SWEEP = """
campaign = "paper"
machine = "{machine}"
nodes = 4
account = "abc123"
{extra}
[bench]
iters = 10
[params]
algorithms = ["ring", "ringx3", "ringx4"]
seq = {seq}
heads = 32
kv_heads = 8
head_dim = 128
dtype = "{dtype}"
causal = true
"""
# What a user exports before rendering (the profiles' comments say which); tmp paths become /scratch.
GOLDEN_ENV = {"MEMBERWORK": "{tmp}/memberwork", "PSCRATCH": "{tmp}/pscratch", "SCRATCH": "{tmp}/scratch",
              "RINGX_ENV": "/lustre/proj/envs/ringx", "RINGX_NET_PLUGIN": "/lustre/proj/aws-ofi-rccl/lib",
              "RINGX_EDF": "/users/u/.edf/ringx.toml"}


def render_golden(machine: str, tmp_path: Path, monkeypatch, text: str = GOLDEN_SWEEP) -> str:
    """The first job's script of a sweep on ``machine`` (by default a 4-node attention sweep), as `bench sweep
    render` writes it; ``text`` is the sweep file with {machine}, {extra}, {seq} and {dtype} to fill."""
    from ringx_drivers import mpirun

    for k, v in GOLDEN_ENV.items():
        monkeypatch.setenv(k, v.format(tmp=tmp_path))
    prof = profiles.load_profile(machine)
    gpu = bool(prof.gpus_per_node)
    extra = "" if prof.scratch else f'ranks_per_node = 2\nout = "{tmp_path}/runs"'
    sw = sweep.load(write(tmp_path, text.format(machine=machine, extra=extra, seq=[131072, 262144] if gpu
                                                else [4096, 8192], dtype="bfloat16" if gpu else "float32")))
    text = plan.write_job(sw, sw.jobs[0], sw.jobs[0].points).read_text()
    # Without a stack the job runs the environment that rendered it: its mpiexec, and its python's bin/ (the
    # ringx-bench there). The golden files show that environment as /home/u/ringx/.venv wherever the suite is
    # installed (a checkout's .venv, or another environment as on GPU machines).
    for real, shown in ((str(tmp_path), "/scratch"), (mpirun.mpiexec(), "/home/u/ringx/.venv/bin/mpiexec"),
                        (sys.executable, "/home/u/ringx/.venv/bin/python"),
                        (str(Path(sys.executable).parent) + "/", "/home/u/ringx/.venv/bin/"),
                        (str(mpirun.ROOT), "/home/u/ringx")):
        text = text.replace(real, shown)
    return text


@pytest.mark.parametrize("machine", profiles.available_profiles())
def test_golden_job_scripts(machine, tmp_path, monkeypatch):
    """Every profile's rendered job, whole: stack, scratch paths, preflight, time limit from the cost model."""
    path = GOLDEN / f"{machine}.sh"
    text = render_golden(machine, tmp_path, monkeypatch)
    if os.environ.get("RINGX_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), (
        f"rendered {machine} script changed; if intended, rerun with RINGX_UPDATE_GOLDEN=1 and review the diff")
    assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0
    prof = profiles.load_profile(machine)
    assert "\ncd " not in text  # no checkout on the compute nodes: the installed command, from anywhere
    if prof.scheduler.preflight:  # the preflight comes first, with the same launcher, and stops the job
        pre, run = (i for i, line in enumerate(text.splitlines()) if "ringx-bench " in line and "#" not in line[:1])
        assert "ringx-bench preflight" in text.splitlines()[pre] and "ringx-bench run" in text.splitlines()[run]
        assert "exit 3" in text and "/scratch/" in text.split("ringx-bench run")[1]
    if prof.gpus_per_node:
        assert "/home/u/ringx/.venv/bin/python" not in text  # never the checkout's (CPU-only) venv
        assert "--network libfabric" in text or not prof.network
    if machine == "frontier":
        assert "module load PrgEnv-gnu/8.6.0 rocm/6.2.4" in text and "aws-ofi-rccl/lib" in text
        assert text.index("LD_LIBRARY_PATH=/lustre/proj/aws-ofi-rccl/lib") < text.index("ringx-bench preflight")
        assert "/lustre/proj/envs/ringx/bin/ringx-bench run" in text  # the profile's environment's command
        assert "#SBATCH --output=/scratch/memberwork/abc123/ringx-runs/paper/sweep/logs/" in text


def test_every_profile_loads_and_renders():
    for name in profiles.available_profiles():
        prof = profiles.load_profile(name)
        shape = JobShape("j", 2, prof.gpus_per_node or 2, 60, Path("/tmp/l"))
        text = script.render(prof, shape, suite=["ringx-bench"], mpiexec="mpiexec",
                             commands=[["run", "--campaign", "c"]])
        assert ("#SBATCH --nodes=2" in text) == (prof.scheduler.name == "slurm")
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
    out = run_cli("sweep", "plan", str(f), cwd=profiles.PROFILES.parent.parent)
    assert out.returncode == 0 and "job N1x2: 1 node(s) x 2 = 2 ranks, 8 points" in out.stdout
    out = run_cli("sweep", "submit", str(f), "--dry-run", cwd=profiles.PROFILES.parent.parent)
    assert out.returncode == 0 and out.stdout.count("# would run: sbatch --parsable") == 2
    assert not (tmp_path / "res" / "c1" / "sweep" / "manifest.json").exists()
    bad = run_cli("sweep", "plan", str(tmp_path / "nope.toml"), cwd=profiles.PROFILES.parent.parent)
    assert bad.returncode == 2 and "cannot read" in bad.stderr and "Traceback" not in bad.stderr


def test_render_refuses_a_cpu_only_torch_for_gpu_jobs(tmp_path):
    """The checkout's venv has a CPU-only torch: a GPU job would fall back to gloo on CPU. One line, unless asked."""
    venv = Path(sys.executable).parent.parent
    f = write(tmp_path, GOLDEN_SWEEP.format(machine="frontier", extra=f'out = "{tmp_path}/res"', seq=[131072],
                                            dtype="bfloat16"))
    env = {"RINGX_ENV": str(venv), "RINGX_NET_PLUGIN": "/opt/ofi/lib"}
    cmd = ["sweep", "render", str(f)]
    cwd = profiles.PROFILES.parent.parent
    proc = run_cli(*cmd, env=env, cwd=cwd)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "a CPU-only build" in proc.stderr and "--allow-cpu-python" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "res").exists()  # nothing written
    proc = run_cli(*cmd, "--allow-cpu-python", env=env, cwd=cwd)
    assert proc.returncode == 0 and "rendering anyway" in proc.stderr
    assert f"{venv}/bin/ringx-bench run" in (tmp_path / "res/paper/sweep/jobs/N4x8.sh").read_text()
    # the variables a profile names must be set: said in one line, before anything is written
    proc = run_cli(*cmd, env={**env, "RINGX_ENV": None}, cwd=cwd)
    assert proc.returncode == 2 and "needs $RINGX_ENV, which is not set here" in proc.stderr


def test_stack_check_judges_the_torch_build(monkeypatch):
    from dataclasses import replace

    from ringx_drivers.sweeps import stack

    prof = profiles.load_profile("frontier")
    builds = {"cpu": {"torch": "2.13.0+cpu", "cuda": None, "hip": None},
              "cuda": {"torch": "2.6.0+cu124", "cuda": "12.4", "hip": None},
              "rocm62": {"torch": "2.6.0+rocm6.2.4", "cuda": None, "hip": "6.2.41134-65d174c3e"},
              "rocm61": {"torch": "2.5.0+rocm6.1", "cuda": None, "hip": "6.1.40091-a8dbc0c19"}}
    for name, problem in (("cpu", "a CPU-only build"), ("cuda", "built for CUDA, not ROCm"),
                          ("rocm61", "built for ROCm 6.1.40091-a8dbc0c19, but the stack loads rocm/6.2.4"),
                          ("rocm62", None)):
        monkeypatch.setattr(stack, "probe", lambda *a, b=builds[name]: (b, ""))
        if problem is None:
            assert stack.check(prof, "/env/bin/python") == ""
            continue
        with pytest.raises(ValueError, match="--allow-cpu-python") as e:
            stack.check(prof, "/env/bin/python")
        assert problem in str(e.value) and "\n" not in str(e.value)
        assert "rendering anyway" in stack.check(prof, "/env/bin/python", allow_cpu_python=True)
    monkeypatch.setattr(stack, "probe", lambda *a: (None, "there is no `module` command here"))
    assert "cannot check" in stack.check(prof, "python3") and "preflight" in stack.check(prof, "python3")
    assert stack.check(profiles.load_profile("cpu-slurm"), sys.executable) == ""  # CPU ranks: nothing to check
    alps = replace(profiles.load_profile("alps"), stack=replace(profiles.load_profile("alps").stack, image="x"))
    monkeypatch.undo()
    assert stack.probe(alps, "python")[0] is None  # an srun-option container cannot be started here


@pytest.mark.parametrize("stack_toml,message", [
    ('[stack]\nkind = "conda"', "kind 'conda': choose one of none, modules, prefix, container"),
    ('[stack]\nkind = "prefix"', 'needs prefix = "/path/to/env"'),
    ('[stack]\nexec = "rm -rf ~"', "unknown key 'exec' in [stack] of s.toml"),
    ('[stack]\nmodules = "rocm"', "[stack] modules must be a list of strings"),
])
def test_sweep_stack_is_checked(tmp_path, stack_toml, message):
    with pytest.raises(sweep.SweepError) as e:
        sweep.load(sweep_file(tmp_path, params="\n" + stack_toml))
    assert message in str(e.value)


def test_sweep_stack_names_a_prefix_and_profiles_reject_bare_modules(tmp_path):
    sw = sweep.load(sweep_file(tmp_path, params='\n[stack]\nkind = "prefix"\nprefix = "/opt/env"\n'
                                                'modules = ["gcc/12.3"]'))
    script = plan.write_job(sw, sw.jobs[0], sw.jobs[0].points).read_text()
    assert "module load gcc/12.3\nexport PATH=/opt/env/bin" in script and "/opt/env/bin/ringx-bench run" in script
    bad = write(tmp_path, 'description = "x"\nscheduler = "slurm"\ngpus_per_node = 0\npeak_tflops = 1.0\n'
                          'efficiency = 1.0\nlauncher = "srun"\nmodules = ["rocm"]\n', "old.toml")
    with pytest.raises(ValueError, match=r"modules now live in the \[stack\] table"):
        profiles.load_profile(str(bad), explicit=True)


def test_output_goes_to_the_profiles_scratch(tmp_path, monkeypatch):
    text = GOLDEN_SWEEP.format(machine="perlmutter", extra="", seq=[131072], dtype="bfloat16")
    monkeypatch.delenv("PSCRATCH", raising=False)
    with pytest.raises(sweep.SweepError, match=r"needs \$PSCRATCH, which is not set here.*out = "):
        sweep.load(write(tmp_path, text))
    monkeypatch.setenv("PSCRATCH", str(tmp_path / "ps"))
    assert sweep.load(write(tmp_path, text)).out == tmp_path / "ps" / "ringx-runs"
    given = sweep.load(write(tmp_path, text.replace('account = "abc123"', f'out = "{tmp_path}/mine"')))
    assert given.out == tmp_path / "mine"  # the sweep's own root wins
    monkeypatch.setenv("MEMBERWORK", str(tmp_path / "mw"))
    fr = GOLDEN_SWEEP.format(machine="frontier", extra="", seq=[131072], dtype="bfloat16")
    with pytest.raises(sweep.SweepError, match="needs the account"):
        sweep.load(write(tmp_path, fr.replace('account = "abc123"', "")))


def test_time_limit_has_a_startup_allowance_that_grows_with_ranks(tmp_path):
    sw = sweep.load(sweep_file(tmp_path, machine="frontier", rpn="8", nodes="[1, 4]"))
    prof = sw.profile
    small, big = sw.jobs
    assert prof.startup(big.ranks) - prof.startup(small.ranks) == pytest.approx(prof.startup_per_rank_s * 24)
    pts = small.points[:1]
    for job in (small, big):  # two launches (preflight, run), the preflight's checks, then the work
        work = plan.estimate(sw, job, pts) - 2 * prof.startup(job.ranks) - prof.preflight_s
        assert 0 < work < 60
    assert sw.limit_s(600) == 600 * sw.time_margin + 120


def test_status_shows_the_preflight_verdict(tmp_path, capsys):
    from ringx_drivers.sweeps import commands

    f = sweep_file(tmp_path)
    sw = sweep.load(f)
    d = sw.dir / "preflight"
    d.mkdir(parents=True)
    (d / "N1x2-11.json").write_text(json.dumps({"ok": True, "checks": []}))
    (d / "N2x2-12.json").write_text(json.dumps({"ok": False, "checks": [
        {"check": "MPI world against Slurm", "ok": False, "detail": "Slurm started 4 tasks but MPI sees 1 rank"}]}))
    assert commands.main(["status", str(f)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("missing 8  preflight ok")
    assert "preflight FAILED: MPI world against Slurm: Slurm started 4 tasks but MPI sees 1 rank" in out[1]


def test_preflight_world_and_network_verdicts():
    from ringx_drivers.preflight import network_verdict, world_problems

    ranks = [{"rank": r, "procid": str(r), "node": f"n{r // 2}"} for r in range(4)]
    env = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NUM_NODES": "2"}
    assert world_problems(4, ranks, env, nodes=2, ranks_per_node=2) == []
    copies = world_problems(1, ranks[:1], env, nodes=2, ranks_per_node=2)
    assert "4 copies of rank 0" in copies[0] and "--mpi=pmi2" in copies[0]
    assert "run on 1 node(s), the job asked for 2" in " ".join(
        world_problems(4, [{**r, "node": "n0"} for r in ranks], env, 2, 2))
    swapped = [{**r, "procid": str(3 - r["rank"])} for r in ranks]
    assert "MPI rank 0 is Slurm task 3" in world_problems(4, swapped, env, 2, 2)[0]

    sock = ("host:1:1 [0] NCCL INFO NET/Plugin: Could not find: librccl-net.so\n"
            "host:1:1 [0] NCCL INFO Using network Socket\n")
    ofi = "h:1:1 [0] NCCL INFO NET/OFI Selected provider is cxi\nh:1:1 [0] NCCL INFO Using network AWS Libfabric\n"
    ok, detail = network_verdict([ofi, sock], "libfabric", nodes=2)
    assert not ok and "socket transport" in detail and "plugin_path" in detail
    assert network_verdict([ofi, ofi], "libfabric", nodes=2) == (True, "NCCL/RCCL uses AWS Libfabric")
    assert network_verdict(["Using network IB\n"], "libfabric", 2)[0] is False
    assert network_verdict(["", ""], "libfabric", nodes=2)[0] is False  # cannot confirm across nodes: fail
    assert network_verdict([""], "libfabric", nodes=1)[0] is True  # within one node no network is used


def test_every_missing_setting_is_named_in_one_message(tmp_path, monkeypatch):
    """Rendering a Frontier sweep as a new user would: the scratch's $MEMBERWORK, the stack's $RINGX_ENV and
    $RINGX_NET_PLUGIN are all named at once, each with what it is for and where it is set; plan names only what it
    needs and notes the rest."""
    for v in ("MEMBERWORK", "RINGX_ENV", "RINGX_NET_PLUGIN"):
        monkeypatch.delenv(v, raising=False)
    f = write(tmp_path, GOLDEN_SWEEP.format(machine="frontier", extra="", seq=[131072], dtype="bfloat16"))
    with pytest.raises(sweep.SweepError) as e:
        sweep.load(f, for_jobs=True)
    msg = str(e.value)
    assert msg.startswith("machine frontier needs 3 settings that are not given here:")
    for var, where in (("$MEMBERWORK", "out = "), ("$RINGX_ENV", "[stack] prefix"),
                       ("$RINGX_NET_PLUGIN", "[stack] plugin_path")):
        line = next(x for x in msg.splitlines() if x.strip().startswith(var))
        assert "which is not set here" in line and "environment" in line and where in line, line
    with pytest.raises(sweep.SweepError, match=r"needs \$MEMBERWORK, which is not set here"):
        sweep.load(f)  # plan: only the output root is needed
    monkeypatch.setenv("MEMBERWORK", str(tmp_path / "mw"))
    from ringx_drivers.sweeps import commands

    assert commands.main(["plan", str(f)]) == 0  # plan runs, and says what render will need
    with pytest.raises(sweep.SweepError, match=r"needs 2 settings"):
        sweep.load(f, for_jobs=True)


def test_predict_on_a_profile_without_a_model_table_says_what_to_give(capsys):
    from ringx_drivers.sweeps.commands import main as sweep_main

    rc = sweep_main(["predict", str(GOLDEN.parent.parent / "jobs" / "sweeps" / "local-demo.toml")])
    err = capsys.readouterr().err
    assert rc == 2 and "has no [model] table" in err and "--machine" in err and "Traceback" not in err
