"""The seeds' own experiments (jobs/sweeps/seed-*.toml, docs/experiments.md): each renders into the job script a
Frontier or H100-cluster user would submit (golden files), and a scaled-down copy of each (the same keys, lists and
zips; tiny models and shapes, CPU ranks, --check on) runs through `bench sweep local`.

By default the serving copy (tp1pp2, two pipeline stages, against the ring family at 2 ranks, one launch; tp2pp2 at
4 ranks is in tests/test_serving.py) and the ViT copy run (~10 s); the attention and llama3 copies cost more:
RINGX_TEST_FULL=1 runs them too (the attention one with all 5 (batch, seq) pairs; measured 2026-12-07 under load: 42 s
with 2 pairs, llama3 60 s, vit 34 s)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ringx_costmodel.machine import JOBS
from ringx_drivers import sweeps as sweep
from ringx_suite.store import Store
from tests.mpi import FULL
from tests.test_sweep import GOLDEN, render_golden, write

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = {"seed-ringx-attention": "frontier", "seed-ringx-llama3": "frontier", "seed-ringx-vit": "frontier",
          "seed-ra-sp-serving": "nvidia-slurm"}


def replaced(text: str, **values: str) -> str:
    """``text`` with each ``key = ...`` line (a list may span lines) set to ``values[key]``; every key must be
    there, so a sweep file whose structure changes fails here rather than being copied wrongly."""
    for k, v in values.items():
        text, n = re.subn(rf"^{k} = (\[[^\]]*\]|[^\n]*)", lambda _, line=f"{k} = {v}": line, text, count=1, flags=re.M)
        assert n == 1, f"no {k} = ... line"
    return text


def source(name: str) -> str:
    return (JOBS / "sweeps" / f"{name}.toml").read_text()


@pytest.mark.parametrize("name", SWEEPS)
def test_each_seed_sweep_renders_its_golden_job(name, tmp_path, monkeypatch):
    """The first job of each file as `bench sweep render` writes it (an account filled in; the attention sweep's
    other node counts are the same script at other sizes, and tracing 512 ranks for their limits takes minutes)."""
    text = replaced(source(name), account='"abc123"')
    if name == "seed-ringx-attention":
        text = replaced(text, nodes="1")
    if SWEEPS[name] == "nvidia-slurm":  # no scratch in that profile: the output root given, as its users do
        text = replaced(text, account=f'"abc123"\nout = "{tmp_path}/runs"')
    got = render_golden(SWEEPS[name], tmp_path, monkeypatch, text)
    path = GOLDEN / f"{name}.sh"
    if os.environ.get("RINGX_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text(), f"rendered {name} changed; if intended, rerun with RINGX_UPDATE_GOLDEN=1"
    assert subprocess.run(["bash", "-n", "-c", got]).returncode == 0
    if SWEEPS[name] == "frontier":  # the seed's environment over the profile's, before any launch
        for line in ("export NCCL_ALGO=Tree", "export FI_MR_CACHE_MONITOR=disabled", "export FI_PROVIDER=cxi"):
            assert line in got and got.index(line) < got.index("ringx-bench preflight")
        assert "FI_MR_CACHE_MONITOR=kdreg2" not in got
    else:
        assert "--algorithms ring,zigzag,stripe,tp8pp2" in got and "--preset ra-sp --dtype float16" in got


SCALED = {  # the same structure at CPU size: ranks, shapes and models shrunk, lists kept as lists
    "seed-ringx-attention": dict(
        ranks_per_node="2", batch="[2, 4, 8, 16, 32]" if FULL else "[2, 4]",
        seq="[256, 128, 64, 32, 16]" if FULL else "[64, 32]", heads="2", kv_heads="2", head_dim="8"),
    "seed-ringx-llama3": dict(ranks_per_node="2", preset='"tiny"', seq="128"),
    "seed-ringx-vit": dict(ranks_per_node="2", preset='"tiny-vit"', seq="[64, 128]"),
    "seed-ra-sp-serving": dict(ranks_per_node="2", preset='"tiny"', algorithms='["ring", "zigzag", "stripe", "tp1pp2"]',
                               prompt_len="[64]", batch="[3]", new_tokens="3"),
}


CI_COPIES = ("seed-ra-sp-serving", "seed-ringx-vit")  # the cheapest; the other two cost 40-100 s each here


@pytest.mark.parametrize("name", [n if FULL or n in CI_COPIES else pytest.param(
    n, marks=pytest.mark.skip(reason="RINGX_TEST_FULL=1 runs it (40-100 s)")) for n in SWEEPS])
def test_a_scaled_down_copy_of_each_seed_sweep_runs_and_checks(name, tmp_path):
    text = replaced(source(name), machine='"local"', nodes="1", account='""', campaign='"c"', iters="2",
                    warmup="0", check="true", dtype='"float64"', **SCALED[name])
    text = text.replace('tag = ', f'out = "{tmp_path}/res"\ntag = ', 1)
    f = tmp_path / f"{name}.toml"
    f.write_text(text)
    sw = sweep.load(f)
    want = sum(len(j.points) for j in sw.jobs)
    proc = subprocess.run([sys.executable, "-m", "ringx_bench", "sweep", "local", str(f), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = Store(tmp_path / "res", "c").records()
    assert len(recs) == want
    bad = [(r["algorithm"], r.get("error")) for r in recs if r["status"] != "ok" or r.get("checked") is False]
    assert not bad
    if sw.driver == "infer":  # exact in float64 with identical ids, and the pipeline baseline compared against
        from ringx_drivers.summary import infer_tables

        assert all(r["check_ids_equal"] and r["check_logits_error"] <= 1e-9 for r in recs)
        assert "vs tp1pp2" in infer_tables(recs)


def test_env_in_a_sweep_file_is_checked_in_one_line(tmp_path):
    base = f'campaign = "c"\nmachine = "local"\nnodes = 1\nranks_per_node = 2\nout = "{tmp_path}"\n'
    params = '[params]\nalgorithms = ["ring"]\nseq = 64\n'
    sw = sweep.load(write(tmp_path, base + '[env]\nNCCL_ALGO = "Tree"\n' + params))
    assert sw.profile.env["NCCL_ALGO"] == "Tree" and sw.profile.env["OMP_NUM_THREADS"] == "1"  # over the profile's
    for bad in ('"NCCL ALGO" = "Tree"', "NCCL_ALGO = 1"):
        with pytest.raises(sweep.SweepError) as e:
            sweep.load(write(tmp_path, base + f"[env]\n{bad}\n" + params))
        assert "[env] of s.toml" in str(e.value) and "\n" not in str(e.value)


def test_predict_takes_the_batch(capsys):
    """The seeds ran batch 16-256; `predict` at batch 1 made every message 16-256x smaller (issue 36's 9.4x)."""
    from ringx_analysis.__main__ import main

    def ring_ms(batch: int) -> float:
        assert main(["predict", "--machine", "frontier", "--ranks", "8", "--seq", "1024", "--heads", "4",
                     "--kv-heads", "4", "--head-dim", "16", "--causal", "false", "--batch", str(batch)]) == 0
        out = capsys.readouterr().out
        assert f"batch {batch}, seq 1024" in out
        return float(next(line for line in out.splitlines() if line.startswith("| 8 | 1 | ring |")).split("|")[5])

    assert ring_ms(8) > ring_ms(1)
    assert main(["predict", "--machine", "frontier", "--batch", "0"]) == 2
    assert "--batch must be a positive integer, got 0" in capsys.readouterr().err
