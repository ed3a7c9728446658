"""Sweep files of `bench model` points (driver = "model"): validation, launches, job scripts (golden files),
estimates, and a real `bench sweep local` whose model records `bench sweep status` counts as done."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ringx_drivers import sweeps as sweep
from ringx_drivers.points.step import StepPoint
from ringx_drivers.sweeps import commands, plan, profiles
from ringx_suite.store import Store, claim, validate
from tests.cli import run_cli
from tests.test_sweep import GOLDEN, render_golden, write

ROOT = profiles.PROFILES.parent.parent

BASE = """
campaign = "m1"
machine = "{machine}"
driver = "model"
nodes = 1
ranks_per_node = {rpn}
out = "{out}"
{extra}
[bench]
warmup = 0
iters = 2
[params]
{params}
"""


def model_sweep(tmp_path, params='algorithms = ["ring", "ringx4"]\nseq = 256', machine="local", rpn="[1, 2]",
                extra="") -> Path:
    return write(tmp_path, BASE.format(machine=machine, rpn=rpn, out=tmp_path / "res", extra=extra, params=params))


def launches(script: str) -> list[list[str]]:
    """The `bench model` command lines of a job script, as argument lists after `ringx-bench model`."""
    lines = [shlex.split(line) for line in script.splitlines() if "ringx-bench model " in line]
    return [words[words.index("model") + 1:] for words in lines]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_a_model_sweep_renders_one_bench_model_per_configuration(tmp_path):
    f = model_sweep(tmp_path, rpn="2", machine="cpu-slurm", params="""
preset = "tiny"
algorithms = ["ring", "zigzag", "ringx4o"]
seq = [256, 512]
layers = [1, 3]
checkpoint = true
[[exclude]]
algorithms = "zigzag"
seq = 512
layers = 3
""")
    sw = sweep.load(f)
    assert sw.driver == "model" and [len(j.points) for j in sw.jobs] == [2 * 3 * 2 - 1]
    pt = sw.jobs[0].points[0]
    assert isinstance(pt, StepPoint) and pt.config.layers == 1 and pt.config.d_model == 96
    assert pt.dtype == "float32"  # auto on CPU ranks, resolved when planned
    assert sw.bench["check_max_seq"] == 512  # bench model's default, not bench run's
    text = plan.write_job(sw, sw.jobs[0], sw.jobs[0].points).read_text()
    assert "ringx-bench run " not in text and text.index("ringx-bench preflight") < text.index("ringx-bench model")
    runs = launches(text)
    # layers 1: one launch for both lengths; layers 3: zigzag only at 256, so the lengths split
    assert [(flag(a, "--layers"), flag(a, "--seq"), flag(a, "--algorithms")) for a in runs] == [
        ("1", "256,512", "ring,zigzag,ringx4o"), ("3", "256", "ring,zigzag,ringx4o"), ("3", "512", "ring,ringx4o")]
    for a in runs:
        assert flag(a, "--preset") == "tiny" and flag(a, "--dtype") == "float32" and "--checkpoint" in a
        assert flag(a, "--campaign") == "m1" and flag(a, "--iters") == "2" and flag(a, "--warmup") == "0"
        assert flag(a, "--out") == str((tmp_path / "res").resolve()) and flag(a, "--check-max-seq") == "512"
    # every launch pays its start-up: three launches cost more than one with the same points
    one = sweep.load(model_sweep(tmp_path, rpn="2", machine="cpu-slurm",
                                 params='algorithms = ["ring", "zigzag", "ringx4o"]\nseq = [256, 512]'))
    assert len(launches(plan.write_job(one, one.jobs[0], one.jobs[0].points).read_text())) == 1
    job = sw.jobs[0]
    assert plan.estimate(sw, job, job.points) - plan.estimate(sw, job, job.points[:1]) > 2 * sw.profile.startup(2)


def test_weak_scaling_gpu_dtype_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PSCRATCH", str(tmp_path / "ps"))
    f = model_sweep(tmp_path, machine="perlmutter", rpn="4",
                    params='preset = "tiny-vit"\nalgorithms = ["ring", "ulysses"]\nseq_per_rank = [128, 256]\n'
                           'batch = 2')
    sw = sweep.load(f)
    assert {(p.seq, p.seq_per_rank, p.scaling, p.dtype) for p in sw.jobs[0].points} == {
        (512, 128, "weak", "bfloat16"), (1024, 256, "weak", "bfloat16")}
    assert sw.bench["peak_tflops"] == 312.0  # the GPU's published peak gives MFU
    (args,) = launches(plan.write_job(sw, sw.jobs[0], sw.jobs[0].points).read_text())
    assert flag(args, "--seq-per-rank") == "128,256" and "--seq" not in args and flag(args, "--batch") == "2"
    assert flag(args, "--dtype") == "bfloat16" and flag(args, "--peak-tflops") == "312.0"
    assert "--checkpoint" not in args and flag(args, "--algorithms") == "ring,ulysses"
    # the preflight checks what the steps' attention runs
    assert "--dtypes bfloat16 --algorithms ring,ulysses" in plan.write_job(sw, sw.jobs[0], sw.jobs[0].points
                                                                           ).read_text()


def test_memory_and_duration_grow_with_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PSCRATCH", str(tmp_path / "ps"))
    text = 'preset = "llama3-8b"\nalgorithms = ["ring"]\nseq = {seq}\ncheckpoint = {ck}'
    ok = sweep.load(model_sweep(tmp_path, machine="perlmutter", rpn="4", params=text.format(seq=8192, ck="true")))
    bigger = sweep.load(model_sweep(tmp_path, machine="perlmutter", rpn="4", params=text.format(seq=16384,
                                                                                               ck="true")))
    assert ok.jobs[0].estimate_s < bigger.jobs[0].estimate_s
    # Llama-3-8B's 4 layers hold ~31 GB of weights, gradients and AdamW state: 32K tokens over 4 A100s of 40 GB
    # do not fit without checkpointing
    with pytest.raises(sweep.SweepError, match=r"impossible point: .*needs at least \d+\.\d GiB per rank, more "
                                               r"than the 37\.3 GiB a rank has on perlmutter"):
        sweep.load(model_sweep(tmp_path, machine="perlmutter", rpn="4", params=text.format(seq=65536, ck="false")))


@pytest.mark.parametrize("params,message", [
    ('preset = "nope"\nalgorithms = ["ring"]\nseq = 256',
     "[params] of s.toml: preset 'nope': choose one of tiny, tiny-vit, llama3-8b, vit-l"),
    ('algorithms = ["ring", "zigzag"]\nseq = 250',
     "impossible point: 1 node(s) x 2 ranks, point {\"algorithm\": \"zigzag\", \"seq\": 250}: sequence length 250 "
     "cannot be split for zigzag (causal) over 2 ranks: it must be a multiple of 4"),
    ('algorithms = ["ring"]\nseq = 256\nkv_heads = 5', "model tiny: heads 12 is not divisible by kv_heads 5"),
    ('algorithms = ["ring"]\nseq = 256\nd_model = 100', "model tiny: d_model 100 is not divisible by heads 12"),
    ('preset = "tiny-vit"\nalgorithms = ["ulysses"]\nseq = 256\nheads = 3\nkv_heads = 3\nd_model = 96',
     "ulysses: 3 query heads do not divide over 2 ranks"),
    ('algorithms = ["ring", "ringx9"]\nseq = 256', "unknown algorithm 'ringx9'"),
    ('seq = 256', "[params] of s.toml needs algorithms"),
    ('algorithms = ["ring"]', "[params] of s.toml needs seq (global tokens) or seq_per_rank"),
    ('algorithms = ["ring"]\nseq = 256\ncheckpoint = "maybe"', "checkpoint must be true or false, got 'maybe'"),
    ('algorithms = ["ring"]\nseq = 256\nmode = "fwd"', "unknown key 'mode' in [params] of s.toml"),  # attention's
    ('algorithms = ["ring"]\nseq = 256\nlayres = 4', "unknown key 'layres' in [params] of s.toml; did you mean "
                                                      "'layers'?"),
])
def test_bad_model_points_are_refused_in_one_line(tmp_path, capsys, params, message):
    f = model_sweep(tmp_path, params=params)
    assert commands.main(["plan", str(f)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "res").exists()


def test_a_bad_driver_is_one_line_without_traceback(tmp_path):
    f = write(tmp_path, model_sweep(tmp_path).read_text().replace('driver = "model"', 'driver = "modle"'))
    proc = run_cli("sweep", "plan", str(f))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["bench sweep plan: error: driver 'modle': choose run (attention "
                                                "points, bench run) or model (training steps, bench model) or infer "
                                                "(serving, bench infer)"]


MODEL_GOLDEN = """
campaign = "paper-model"
machine = "{machine}"
driver = "model"
nodes = 2
account = "abc123"
{extra}
[bench]
iters = 10
check = true
[params]
preset = "PRESET"
algorithms = ["ring", "ringx3", "ringx4o"]
seq = [SEQ, BIGSEQ]
checkpoint = [false, true]
[[exclude]]
algorithms = "ringx3"
seq = BIGSEQ
checkpoint = false
"""


@pytest.mark.parametrize("machine", ["perlmutter", "local"])
def test_golden_model_job_scripts(machine, tmp_path, monkeypatch):
    """A model sweep's job, whole: the same stack, scratch and preflight as attention jobs, one `bench model` per
    model configuration and set of algorithms."""
    gpu = machine != "local"
    preset, seq, big = ("llama3-8b", "16384", "32768") if gpu else ("tiny", "256", "512")
    text = MODEL_GOLDEN.replace("PRESET", preset).replace("BIGSEQ", big).replace("SEQ", seq)
    path = GOLDEN / f"model-{machine}.sh"
    got = render_golden(machine, tmp_path, monkeypatch, text)
    if os.environ.get("RINGX_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text(), (
        f"rendered {machine} model script changed; if intended, rerun with RINGX_UPDATE_GOLDEN=1 and review the diff")
    assert subprocess.run(["bash", "-n", "-c", got]).returncode == 0
    runs = launches(got)
    assert [(flag(a, "--seq"), flag(a, "--algorithms"), "--checkpoint" in a) for a in runs] == [
        (seq, "ring,ringx3,ringx4o", False), (big, "ring,ringx4o", False), (f"{seq},{big}", "ring,ringx3,ringx4o",
                                                                               True)]
    for a in runs:
        assert flag(a, "--preset") == preset and flag(a, "--dtype") == ("bfloat16" if gpu else "float32")
        assert "--check" in a and flag(a, "--campaign") == "paper-model"
    if gpu:
        attention = render_golden(machine, tmp_path, monkeypatch)  # the attention sweep's job on the machine

        def setup(script: str) -> str:  # stack, environment, workdir and the preflight's guard
            return script.split("set -euo pipefail")[1].split("RINGX_PREFLIGHT=")[0]
        assert setup(got) == setup(attention)
        assert "module load pytorch/2.6.0" in got and "export NCCL_NET='AWS Libfabric'" in got
        assert flag(runs[0], "--peak-tflops") == "312.0" and "--network libfabric" in got


def test_local_model_sweep_records_steps_and_status_counts_them(tmp_path, capsys):
    """The tiny decoder at 1 and 2 ranks through `bench sweep local`: model records in the campaign store, and
    `bench sweep status` finds each point's record by the key bench model wrote."""
    f = model_sweep(tmp_path, params='preset = "tiny"\nalgorithms = ["ring", "ringx4o"]\nseq = 256',
                    extra='tag = "sweep of steps"')
    assert commands.main(["status", str(f)]) == 0
    assert [line.split()[-10:] for line in capsys.readouterr().out.splitlines()] == [
        ["done", "0", "failed", "0", "running", "0", "pending", "0", "missing", "2"]] * 2
    cmd = [sys.executable, "-m", "ringx_bench", "sweep", "local", str(f), "--quiet"]
    # bench model claims the keys the sweep computes: held by another (living) run, they are refused
    sw = sweep.load(f)
    held = claim(sw.store.dir, "other-run", set(sw.keys(sw.jobs[0])), "a test")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    held.release()
    assert proc.returncode != 0 and "2 of the 2 records this run would measure are being measured by run " \
        "other-run" in proc.stderr, proc.stderr
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list((sw.store.dir / "claims").glob("*.json"))  # each run's claim ended with it
    recs = Store(tmp_path / "res", "m1").records()
    assert sorted((r["world_size"], r["algorithm"]) for r in recs) == [(1, "ring"), (1, "ringx4o"), (2, "ring"),
                                                                        (2, "ringx4o")]
    for r in recs:
        assert validate(r) == [] and r["kind"] == "model" and r["status"] == "ok", r.get("error")
        assert (r["model"], r["seq"], r["iters"], r["warmup"], r["dtype"], r["tag"]) == (
            "tiny", 256, 2, 0, "float32", "sweep of steps")
        assert len(r["samples_s"]) == 2 and r["forward_s"] > 0
    assert commands.main(["status", str(f), "-v"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-10:] for line in out if line.startswith("N1")] == [
        ["done", "2", "failed", "0", "running", "0", "pending", "0", "missing", "0"]] * 2
    assert sum("done     ringx4o  seq=256      model tiny (2 layers, d 96, 12/4 heads) float32 b1" in line
               for line in out) == 2
    assert commands.main(["resubmit", str(f), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("nothing to resubmit: every point is done")
