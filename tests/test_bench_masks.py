"""The suite's --mask (bench run, quick, kernels, model), sweep files' masks = [...], and their checks.

Real mpiexec runs at 2 ranks, many cases per launch; bad specs are refused in one line before anything runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import ringx
from ringx.flops import attention_flops, mask_flops
from ringx_drivers.points.attention import make_point, record_config
from ringx_suite import masks
from ringx_suite.cli import UserError
from ringx_suite.store import Store, config_key, validate
from tests.cli import run_cli
from tests.mpi import CHECKOUT, cli_batch, launch, run_cases

SMALL = ["--seq", "128", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--iters", "2", "--warmup", "1",
         "--quiet", "--campaign", "c"]


def bench(nprocs: int, *args: str, timeout: float = 300):
    return launch(nprocs, ["-m", "ringx_bench", *args], timeout=timeout)


def one_line_error(proc, *words: str) -> str:
    """The run was refused with one `error:` line (once, however many ranks) naming ``words``, no traceback."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(errors) == 1, text
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


# ---------------------------------------------------------------------------------------------------------
# bench run


def test_run_records_carry_masks_and_check_them(tmp_path):
    specs = ["causal", "window:16", "docs:lognormal:24+window:8", "docs:40x2,48", "shared:32/16x6"]
    proc = bench(2, "run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring,zigzag,ringx4o,ulysses",
                 "--mask", ",".join(specs), "--mode", "fwd,fwd+bwd", "--check", "--mask-seed", "5")
    assert proc.returncode == 0, proc.stderr
    recs = Store(tmp_path, "c").records()
    assert len(recs) == 5 * 4 * 2
    by_mask: dict = {}
    for r in recs:
        assert validate(r) == [], r
        assert r["status"] == "ok", r
        assert r["check_max_error"] <= r["check_tolerance"] and r["check_seq"] == 128
        by_mask.setdefault(r.get("mask"), []).append(r)
    drawn = masks.parse("docs:lognormal:24+window:8", 128, 5)
    assert set(by_mask) == {None, "window:16", str(drawn), "docs:40x2,48", "shared:32/16x6"}
    for r in by_mask[None]:  # --mask causal is --causal true: no mask fields, the same record as ever
        assert r["causal"] is True and "mask_spec" not in r
    for r in by_mask[str(drawn)]:
        assert r["mask_lengths"] == list(drawn.lengths) and sum(r["mask_lengths"]) == 128
        assert r["mask_spec"] == "docs:lognormal:24+window:8" and r["mask_seed"] == 5
        assert r["flops"] == mask_flops(1, 128, 4, 16, drawn, r["mode"])
    for r in by_mask["docs:40x2,48"]:
        assert r["mask_lengths"] == [40, 40, 48] and "mask_spec" not in r and "mask_seed" not in r
    w = ringx.Mask.window(16)
    for r in by_mask["window:16"]:
        assert r["flops"] == mask_flops(1, 128, 4, 16, w, r["mode"]) < attention_flops(1, 128, 4, 16, True, r["mode"])
        assert r["causal"] is True and r["layout"] == ringx.ALGORITHMS[r["algorithm"]].layout(mask=w)
    # a rerun with the same masks and seed finds every record done; another seed is another mask
    again = bench(2, "run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring", "--mask",
                  "docs:lognormal:24+window:8", "--mode", "fwd", "--mask-seed", "5")
    assert again.returncode == 0 and len(Store(tmp_path, "c").records()) == len(recs)


def test_mask_causal_is_causal_true_and_full_is_false():
    for spec, causal in (("causal", True), ("full", False)):
        a = make_point({"algorithm": "ring", "seq": 256, "mask": spec}, 2)
        b = make_point({"algorithm": "ring", "seq": 256, "causal": causal}, 2)
        assert a == b
        assert config_key(record_config(a, 2, 1, 0, None, 2, 10)) == config_key(record_config(b, 2, 1, 0, None, 2, 10))
    m = make_point({"algorithm": "ring", "seq": 256, "mask": "window:32"}, 2)
    key = config_key(record_config(m, 2, 1, 0, None, 2, 10))
    assert key != config_key(record_config(make_point({"algorithm": "ring", "seq": 256}, 2), 2, 1, 0, None, 2, 10))
    d1 = make_point({"algorithm": "ring", "seq": 256, "mask": "docs:lognormal:32"}, 2, seed=1)
    d2 = make_point({"algorithm": "ring", "seq": 256, "mask": "docs:lognormal:32"}, 2, seed=2)
    assert d1.the_mask() != d2.the_mask() and d1.mask_fields()["mask_seed"] == 1


def test_split_specs_keeps_commas_inside_a_spec():
    assert masks.split_specs("causal,window:4,2,docs:64x8,32+window:3,full") == [
        "causal", "window:4,2", "docs:64x8,32+window:3", "full"]


def test_masked_float64_reference_matches_a_dense_softmax():
    from tests.workers.mask_cases import dense

    g = torch.Generator().manual_seed(3)
    q, do = (torch.randn(1, 96, 4, 8, generator=g, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(1, 96, 2, 8, generator=g, dtype=torch.float64) for _ in range(2))
    for m in (ringx.Mask.window(10), ringx.Mask.window(5, 3), ringx.Mask.documents([30, 2, 64], window=7),
              ringx.Mask.documents([50, 46], causal=False)):
        got = ringx.verify.full_attention(q, k, v, do, m, 8**-0.5, budget=4 * 2 * 96 * 17)  # several chunks
        want = dense(q, k, v, do, m)
        for x, y in zip(got, want):
            assert torch.allclose(x, y, atol=1e-12, rtol=0), m


def test_checks_pass_for_the_mask_and_fail_for_a_wrong_one(tmp_path):
    rows = run_cases(2, "tests/workers/suite_mask_cases.py", tmp_path, seed=11)
    assert len(rows) == 4 * 2 * 4 + 2 * 3
    for case, per_rank in rows.items():
        assert len(per_rank) == 2 and per_rank[0] == per_rank[1], case  # every rank agrees
        row = per_rank[0]
        tol = 1e-9 if case.startswith("model") else 1e-10
        assert row["good"] <= tol, row
        assert row["wrong"] > 1e-3, row
        if "moved" in row:
            assert row["moved"] > 1e-3, row
    assert any("moved" in r[0] for r in rows.values())


def test_bad_mask_specs_are_refused_in_one_line(tmp_path):
    out = ["--out", str(tmp_path)]
    cases = [(["run", "--seq", "128", *out, "--mask", "docs:lognormal:x"], ("mean 'x'",)),
             (["run", "--seq", "128", *out, "--mask", "docs:100,20"], ("sum to 120", "128")),
             (["run", "--seq", "128", *out, "--mask", "window:4", "--causal", "false"], ("disagree", "--mask causal")),
             (["run", "--seq", "128", *out, "--mask", "bogus"], ("bogus",)),
             (["model", "--seq", "128", *out, "--mask", "full"], ("later tokens",)),
             (["model", "--seq", "128", *out, "--mask", "window:8", "--layer-masks", "window:8,causal"], ("not both",)),
             (["model", "--seq", "128", *out, "--mask", "window:8,causal"], ("one --mask",))]
    procs = cli_batch(2, [argv for argv, _ in cases], tmp_path / "batch")  # one launch: no work is expected
    for proc, (_, words) in zip(procs, cases, strict=True):
        one_line_error(proc, *words)
    assert not list(tmp_path.glob("*/records/*.jsonl"))  # nothing ran


def test_kernels_and_quick_refuse_what_they_cannot_time(tmp_path):
    env = dict(os.environ)
    k = subprocess.run([sys.executable, "-m", "ringx_bench", "kernels", "--block", "128", "--mask", "docs:64x2",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    one_line_error(k, "one block", "bench run")
    q = run_cli("quick", "--ranks", "1", "--seq", "128", "--mask", "docs:lognormal:0", "--out", str(tmp_path))
    assert q.returncode == 2 and "at least 1" in q.stderr and "Traceback" not in q.stderr


def test_kernels_time_windows_as_band_blocks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ringx_bench", "kernels", "--block", "128", "--kv-heads", "2",
                           "--mask", "causal,window:32", "--iters", "2", "--warmup", "1", "--out", str(tmp_path),
                           "--quiet"],
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    recs = Store(tmp_path, "kernels").records()
    assert {r.get("mask") for r in recs} == {None, "window:32"} and all(validate(r) == [] for r in recs)
    for r in recs:
        m = ringx.Mask.window(32) if r.get("mask") else ringx.Mask.causal()
        assert r["status"] == "ok" and r["flops"] == mask_flops(1, 128, 8, 64, m, r["direction"])


def test_quick_times_every_mask(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ringx_bench", "quick", "--ranks", "1,2", "--seq", "128", "--iters",
                           "2",
                           "--warmup", "1", "--algorithms", "ring,zigzag", "--mask", "window:16,docs:40x2,48",
                           "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {(r["world"], r["algorithm"], r["mask"]) for r in rows} == {
        (1, "kernel", "window:16"), *((P, a, m) for P in (1, 2) for a in ("ring", "zigzag")
                                       for m in ("window:16", "docs:40x2,48"))}
    assert "window:16 fwd" in (tmp_path / "table.md").read_text()


# ---------------------------------------------------------------------------------------------------------
# bench model


@pytest.mark.parametrize("flags", [["--mask", "docs:lognormal:48"], ["--layer-masks", "window:16,causal"]])
def test_model_steps_with_masks_check_exactly(tmp_path, flags):
    proc = bench(2, "model", "--preset", "tiny", "--seq", "256", "--algorithms", "ring,zigzag,ringx4o", "--dtype",
                 "float64", "--warmup", "1", "--iters", "2", "--check", "--out", str(tmp_path), "--campaign", "m",
                 "--quiet", *flags)
    assert proc.returncode == 0, proc.stderr
    recs = Store(tmp_path, "m").records()
    assert len(recs) == 3
    for r in recs:
        assert validate(r) == [] and r["status"] == "ok", r
        assert r["check_loss_error"] <= 1e-9 and r["check_grad_error"] <= 1e-9 and r["check_seq"] == 256
        if flags[0] == "--mask":
            m = masks.parse("docs:lognormal:48", 256, 0)
            assert r["mask"] == str(m) and r["mask_lengths"] == list(m.lengths) and r["mask_spec"] == flags[1]
        else:
            assert r["mask"] == "layers:window:16/causal" and r["layer_masks"] == ["window:16", "causal"]
    # the masked step counts fewer attention FLOPs than the causal one
    from ringx.flops import model_flops_per_token
    from ringx_drivers import models

    cfg = models.preset("tiny")
    causal = model_flops_per_token(models.flops_params(cfg), cfg.layers, 256, cfg.heads, cfg.head_dim, True)
    assert all(r["flops_per_token"] < causal for r in recs)


# ---------------------------------------------------------------------------------------------------------
# sweep files


def test_sweep_masks_plan_render_and_keys(tmp_path, monkeypatch):
    from ringx_drivers import sweeps as sweep
    from ringx_drivers.sweeps import kinds, plan

    text = """
campaign = "m"
machine = "local"
nodes = 1
ranks_per_node = 2
out = "OUT"
[bench]
iters = 3
mask_seed = 4
[params]
algorithms = ["ring", "zigzag"]
seq = [256]
masks = ["causal", "window:32", "docs:lognormal:40", "docs:64x4"]
""".replace("OUT", str(tmp_path / "runs"))
    f = tmp_path / "s.toml"
    f.write_text(text)
    sw = sweep.load(f)
    pts = sw.jobs[0].points
    assert [p.mask_text() for p in pts[:4]] == ["causal", "window:32", str(masks.parse("docs:lognormal:40", 256, 4)),
                                                 "docs:64x4"]
    script = plan.write_job(sw, sw.jobs[0], pts)
    listed = json.loads((sw.dir / "points" / "N1x2.json").read_text())
    assert listed[0] == {"algorithm": "ring", "seq": 256, "batch": 1, "heads": 8, "kv_heads": 8, "head_dim": 64,
                         "dtype": "float32", "causal": True, "mode": "fwd+bwd"}  # unmasked: as before masks
    assert listed[2] == {**{k: v for k, v in listed[0].items() if k != "causal"}, "mask": "docs:lognormal:40",
                         "mask_seed": 4}
    # the job's bench run makes the same points, so its records have the keys sweep status looks for
    again = [make_point(d, 2) for d in listed]
    assert again == pts
    b = sw.bench
    assert [kinds.KINDS["run"].key(p, 2, 1, 0, b) for p in pts] == [
        config_key(record_config(p, 2, 1, 0, b["kernel"], b["warmup"], b["iters"])) for p in again]
    assert "--points" in script.read_text()
    out = run_cli("sweep", "plan", "-v", str(f))
    assert out.returncode == 0 and "window:32" in out.stdout and "docs:64x4" in out.stdout, out.stderr


def test_sweep_masks_refuse_bad_specs_and_both_spellings(tmp_path):
    from ringx_drivers import sweeps as sweep

    base = ('campaign = "m"\nmachine = "local"\nnodes = 1\nranks_per_node = 2\nout = "%s"\n[params]\n'
            'algorithms = ["ring"]\nseq = [256]\n' % (tmp_path / "runs"))
    for extra, words in (('masks = ["docs:fixed:0"]', "positive"), ('masks = ["causal"]\nmask = "full"', "not both"),
                         ('masks = ["docs:100"]', "sum to 100")):
        f = tmp_path / "s.toml"
        f.write_text(base + extra + "\n")
        with pytest.raises(UserError) as e:
            sweep.load(f)
        assert words in str(e.value) and "\n" not in str(e.value).strip()


def test_shipped_masks_sweep_plans():
    from ringx_drivers import sweeps as sweep

    sw = sweep.load(CHECKOUT / "jobs" / "sweeps" / "masks-demo.toml")
    got = {p.mask_text().split(":")[0] for j in sw.jobs for p in j.points}
    assert got == {"causal", "window", "docs"}


def test_model_sweep_masks_become_the_jobs_flags_and_keys(tmp_path):
    from ringx_drivers import sweeps as sweep
    from ringx_drivers.drivers import step
    from ringx_drivers.points import step as step_points
    from ringx_drivers.sweeps import kinds, plan

    f = tmp_path / "m.toml"
    f.write_text(f'''campaign = "mm"
machine = "local"
nodes = 1
ranks_per_node = 2
out = "{tmp_path / 'runs'}"
driver = "model"
[bench]
mask_seed = 3
[params]
preset = "tiny"
algorithms = ["ring", "zigzag"]
seq = [256]
masks = ["docs:lognormal:48", "window:32"]
''')
    g = tmp_path / "l.toml"
    g.write_text(f.read_text().replace('masks = ["docs:lognormal:48", "window:32"]',
                                       'layer_masks = "window:32,docs:lognormal:48"'))
    for path, flag in ((f, "--mask"), (g, "--layer-masks")):
        sw = sweep.load(path)
        pts = sw.jobs[0].points
        cmds = plan.job_commands(sw, pts, tmp_path / "p.json")
        assert all(flag in c for c in cmds) and all("--mask-seed" in c for c in cmds)
        got = set()
        for c in cmds:  # the records each job's bench model writes have the keys sweep status looks up
            inv, _, pl, _ = step.resolve(c[1:], 2)
            s = inv.settings
            got |= {config_key(step_points.plan_config(pl, a, pl.seqs[0], world=2, nodes=1, repeat=0, dtype="float32",
                                                       checkpoint=False, kernel=s.kernel, warmup=s.warmup,
                                                       iters=s.iters))
                    for a in pl.algorithms}
        assert got == {kinds.KINDS["model"].key(p, 2, 1, 0, sw.bench) for p in pts}
        assert len(got) == len(pts)


def test_gpu_sweep_estimates_and_predicts_masked_points(tmp_path, monkeypatch):
    from ringx_drivers import sweeps as sweep
    from ringx_drivers.sweeps.estimate import call_seconds
    from tests.test_sweep import GOLDEN_ENV

    for k, v in GOLDEN_ENV.items():
        monkeypatch.setenv(k, v.format(tmp=tmp_path))
    f = tmp_path / "g.toml"
    f.write_text('campaign = "g"\nmachine = "perlmutter"\nnodes = 1\naccount = "abc"\n[params]\n'
                 'algorithms = ["ring"]\nseq = [65536]\ndtype = "bfloat16"\nheads = 32\nkv_heads = 8\nhead_dim = 128\n'
                 'masks = ["causal", "window:2048"]\n')
    sw = sweep.load(f)
    job = sw.jobs[0]
    causal, window = (call_seconds(sw, job, p) for p in job.points)
    assert 0 < window < causal  # the cost model skips the window's masked blocks and transfers
    out = run_cli("sweep", "predict", str(f), env={k: v.format(tmp=tmp_path) for k, v in GOLDEN_ENV.items()})
    assert out.returncode == 0, out.stderr
    assert "| window:2048 |" in out.stdout and "| causal |" in out.stdout
