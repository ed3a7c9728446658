"""Sweeps of bench infer points (driver = "infer"): a job renders one `bench infer` per model and generation with
its prompt lengths listed (golden scripts), the keys sweep status looks up are the driver's, and bad points are
refused in one line."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from ringx_costmodel.machine import JOBS
from ringx_drivers import sweeps as sweep
from ringx_drivers.points import infer as infer_points
from ringx_drivers.points.infer import InferPoint
from ringx_drivers.sweeps import plan
from tests.test_sweep import GOLDEN, render_golden, write

INFER_GOLDEN = """
campaign = "paper-infer"
machine = "{machine}"
driver = "infer"
nodes = 1
account = "abc123"
{extra}
[bench]
iters = 10
check = true
[params]
preset = "PRESET"
algorithms = ["ring", "ringx1", "tp"]
prompt_len = [PROMPTS]
new_tokens = 16
[[exclude]]
algorithms = "tp"
prompt_len = LONG
"""


def launches(script: str) -> list[list[str]]:
    lines = [shlex.split(line) for line in script.splitlines() if "ringx-bench infer " in line]
    return [words[words.index("infer") + 1:] for words in lines]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("machine", ["perlmutter", "frontier", "local"])
def test_golden_infer_job_scripts(machine, tmp_path, monkeypatch):
    gpu = machine != "local"
    # on GPUs a short prompt that --check verifies (bench infer's --check-max-seq default: 8192), then two long
    # ones it times unchecked (their float64 reference would recompute 32K-128K tokens per token on one CPU)
    preset, checked, short, long = ("llama3-8b", "1024", "32768", "131072") if gpu else ("tiny", "", "128", "256")
    prompts = ", ".join(p for p in (checked, short, long) if p)
    text = INFER_GOLDEN.replace("PRESET", preset).replace("PROMPTS", prompts).replace("LONG", long)
    path = GOLDEN / f"infer-{machine}.sh"
    got = render_golden(machine, tmp_path, monkeypatch, text)
    if os.environ.get("RINGX_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text(), (
        f"rendered {machine} infer script changed; if intended, rerun with RINGX_UPDATE_GOLDEN=1 and review the diff")
    assert subprocess.run(["bash", "-n", "-c", got]).returncode == 0
    runs = launches(got)
    assert [(flag(a, "--prompt-len"), flag(a, "--algorithms")) for a in runs] == [
        (",".join(p for p in (checked, short) if p), "ring,ringx1,tp"), (long, "ring,ringx1")]
    for a in runs:
        assert flag(a, "--preset") == preset and flag(a, "--dtype") == ("bfloat16" if gpu else "float32")
        assert flag(a, "--new-tokens") == "16" and "--check" in a and flag(a, "--campaign") == "paper-infer"
        assert flag(a, "--check-max-seq") == str(infer_points.CHECK_MAX_SEQ)  # bench infer's default, not bench run's


def test_the_demo_sweep_plans_and_its_keys_are_the_drivers(tmp_path):
    sw = sweep.load(JOBS / "sweeps" / "infer-demo.toml")
    assert sw.driver == "infer" and [j.ranks for j in sw.jobs] == [1, 2]
    job = sw.jobs[1]
    pt = job.points[0]
    assert isinstance(pt, InferPoint) and pt.dtype == "float64" and pt.new_tokens == 8
    assert len(job.points) == 6 * 2
    # the key sweep status looks up is the one bench infer writes for the same point
    p = infer_points.ServingPlan(pt.preset, pt.config, pt.batch, pt.new_tokens, (pt.prompt_len,), (pt.algorithm,),
                                 pt.dtype)
    b = sw.bench
    want = infer_points.plan_config(p, pt.algorithm, pt.prompt_len, world=2, nodes=1, repeat=0, dtype=pt.dtype,
                                    kernel=b["kernel"], warmup=b["warmup"], iters=b["iters"])
    from ringx_suite.store import config_key

    assert config_key(want) in sw.keys(job)
    cmds = sw.kind.commands(job.points, "")
    assert cmds == [["infer", "--preset", "tiny", "--dtype", "float64", "--batch", "1", "--new-tokens", "8",
                     "--prompt-len", "128,256", "--algorithms", "ring,zigzag,ringx1,ringx3,ulysses,tp"]]
    assert plan.write_job(sw, job, job.points).read_text().count("ringx-bench infer ") == 1


@pytest.mark.parametrize("params,message", [
    ('algorithms = ["ring"]\nprompt_len = [33]\nalgorithms_ = 1', "algorithms_"),
    ('algorithms = ["zigzag"]\nprompt_len = [34]', "prompt length 34 cannot be split by zigzag"),
    ('algorithms = ["ring"]\nprompt_len = [32]\nnew_tokens = 0', "new_tokens must be >= 1"),
    ('prompt_len = [32]', "needs algorithms"),
])
def test_bad_infer_points_are_refused_in_one_line(tmp_path, params, message):
    text = f'campaign = "c"\nmachine = "local"\ndriver = "infer"\nnodes = 1\nranks_per_node = 2\nout = "{tmp_path}"\n' \
           f"[params]\n{params}\n"
    with pytest.raises(sweep.SweepError) as e:
        sweep.load(write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value).strip()
