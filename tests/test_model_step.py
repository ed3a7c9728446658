"""bench model: the model step exact at 1-4 ranks for every algorithm and layout, RoPE and label shifting
against direct constructions, the FLOP convention, bad input refused before any collective, the driver's
records and resume."""

from __future__ import annotations

import math
import os

import pytest
import torch

import ringx
from ringx_drivers import models
from ringx_drivers.drivers.step import CHECK_TOLERANCE, shard_batch
from ringx_suite.store import Store, validate
from tests.model_cases import RANKS_PER_NODE, TOL, WORLDS, ModelCase, model_cases
from tests.mpi import assert_refused_in_one_line, launch, matrix_launcher, refused_batch

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


@pytest.fixture(scope="session")
def launched(tmp_path_factory):
    """world size -> case id -> per-rank rows (one mpiexec launch per world size)."""
    get = matrix_launcher(tmp_path_factory, "tests/workers/model_cases.py", SEED, extras="never")
    return lambda world: get(world, RANKS_PER_NODE.get(world, 0))[0]


ALL = [c for w in WORLDS for c in model_cases(w)]


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_step_matches_the_unsharded_float64_model(launched, case: ModelCase):
    rows = launched(case.world)[case.id]
    assert sorted(r["rank"] for r in rows) == list(range(case.world)), "a rank reported nothing"
    for row in rows:
        if case.wrong:  # the check must see a classic mistake, on every rank
            assert max(row["loss_error"], row["grad_error"]) > 1e3 * TOL, f"rank {row['rank']}: {case.wrong} missed"
            continue
        assert row["loss_error"] <= TOL, f"rank {row['rank']}: loss error {row['loss_error']:.2e} (seed {row['seed']})"
        assert row["grad_error"] <= TOL, (f"rank {row['rank']}: gradient error {row['grad_error']:.2e} in "
                                          f"{row['worst']} (seed {row['seed']})")


def test_the_matrix_covers_every_algorithm_and_layout():
    layouts = set()
    for w in WORLDS:
        for c in model_cases(w):
            cfg = models.preset(c.preset)
            layouts.add(ringx.ALGORITHMS[c.algorithm].layout(cfg.causal, c.degree or w))
    assert {c.algorithm for c in ALL} == set(ringx.ALGORITHMS)
    assert {"contiguous", "zigzag", "stripe", "zigzag-u1", "zigzag-u2", "zigzag-u3", "zigzag-u4"} <= layouts


# ------------------------------------------------------------------------------------ RoPE and labels


def _direct_positions(layout: str, rank: int, world: int, seq: int) -> list[int]:
    """Global positions of a rank's tokens, written out from each layout's definition."""
    if layout == "contiguous":
        n = seq // world
        return list(range(rank * n, (rank + 1) * n))
    if layout == "stripe":
        return list(range(rank, seq, world))
    if layout == "zigzag":
        c = seq // (2 * world)
        return list(range(rank * c, (rank + 1) * c)) + list(range((2 * world - 1 - rank) * c, (2 * world - rank) * c))
    u = int(layout.removeprefix("zigzag-u"))  # USP: group g = r // u holds the zigzag pair of a ring of P/u
    pair = _direct_positions("zigzag", rank // u, world // u, seq)
    part = len(pair) // u
    return pair[(rank % u) * part:(rank % u + 1) * part]


LAYOUT_CASES = [(lay, w) for w in (1, 2, 3, 4) for lay in ("contiguous", "zigzag", "stripe")] + [
    ("zigzag-u2", 4), ("zigzag-u1", 2), ("zigzag-u2", 2), ("zigzag-u3", 3)]


@pytest.mark.parametrize("layout,world", LAYOUT_CASES)
def test_positions_and_labels_are_global_under_every_layout(layout, world):
    cfg = models.preset("tiny")
    seq = 48
    tokens, labels, n = models.global_batch(cfg, 2, seq, seed=3)
    seen = []
    for r in range(world):
        lb = shard_batch(tokens, labels, n, layout, r, world)
        pos = lb.positions.tolist()
        assert pos == _direct_positions(layout, r, world, seq)
        for j, p in enumerate(pos):  # each token's label is the next token of the *global* sequence
            want = tokens[:, p + 1] if p + 1 < seq else torch.full((2,), models.IGNORE)
            assert torch.equal(lb.targets[:, j], want), (r, p)
            assert torch.equal(lb.inputs[:, j], tokens[:, p])
        seen += pos
    assert sorted(seen) == list(range(seq)) and n == 2 * (seq - 1)


def test_label_shift_direct():
    t = torch.tensor([[5, 6, 7, 8]])
    assert models.shift_labels(t).tolist() == [[6, 7, 8, models.IGNORE]]


def test_rope_is_the_complex_rotation_at_each_position():
    g = torch.Generator().manual_seed(0)
    b, s, h, d, theta = 2, 10, 3, 8, 500000.0
    x = torch.randn(b, s, h, d, generator=g, dtype=torch.float64)
    pos = torch.tensor([0, 1, 2, 7, 11, 12, 40, 41, 99, 100])
    cos, sin = models.rope_tables(pos, d, theta, torch.float64)
    got = models.apply_rope(x, cos, sin)
    # direct: the pair (x_j, x_{j+d/2}) as one complex number, turned by angle p * theta^(-2j/d)
    z = torch.complex(x[..., : d // 2], x[..., d // 2:])
    freqs = torch.tensor([theta ** (-2 * j / d) for j in range(d // 2)], dtype=torch.float64)
    turn = torch.polar(torch.ones(s, d // 2, dtype=torch.float64), pos[:, None].double() * freqs[None, :])
    want = z * turn[None, :, None, :]
    assert torch.allclose(got, torch.cat([want.real, want.imag], dim=-1), atol=1e-12)
    # the rotation keeps norms, and relative positions are all q.k sees
    assert torch.allclose(got.norm(dim=-1), x.norm(dim=-1))
    q, k = x[:, :1], x[:, 1:2]
    def dot(pq, pk):
        cq, sq = models.rope_tables(torch.tensor([pq]), d, theta, torch.float64)
        ck, sk = models.rope_tables(torch.tensor([pk]), d, theta, torch.float64)
        return (models.apply_rope(q, cq, sq) * models.apply_rope(k, ck, sk)).sum(-1)
    assert torch.allclose(dot(5, 3), dot(105, 103), atol=1e-9)


@pytest.mark.parametrize("layout,world", [("zigzag", 2), ("stripe", 3), ("zigzag-u2", 4)])
def test_rope_on_a_shard_is_the_shard_of_rope(layout, world):
    x = torch.randn(1, 24, 2, 8, dtype=torch.float64)
    cos, sin = models.rope_tables(torch.arange(24), 8, 10000.0, torch.float64)
    full = models.apply_rope(x, cos, sin)
    for r in range(world):
        pos = ringx.shard(torch.arange(24)[None], layout, r, world)[0]
        c, s = models.rope_tables(pos, 8, 10000.0, torch.float64)
        mine = models.apply_rope(ringx.shard(x, layout, r, world), c, s)
        assert torch.equal(mine, ringx.shard(full, layout, r, world))


# ------------------------------------------------------------------------------------ config and FLOPs


def test_presets_and_bad_configs_are_named():
    with pytest.raises(ValueError,
                       match="unknown preset 'nope'; choose one of tiny, tiny-vit, llama3-8b, vit-l, ra-sp"):
        models.preset("nope")
    assert "not divisible by kv_heads" in models.preset("tiny", kv_heads=5).problem()
    assert "not divisible by heads" in models.preset("tiny", d_model=100).problem()
    assert "even" in models.preset("tiny", d_model=36, heads=12).problem()
    c = models.preset("llama3-8b")
    assert (c.d_model, c.heads, c.kv_heads, c.mlp, c.vocab, c.head_dim, c.causal) == (4096, 32, 8, 14336, 128256, 128,
                                                                                       True)
    assert not models.preset("vit-l").causal and models.preset("vit-l").problem() == ""


@pytest.mark.parametrize("name", ["tiny", "tiny-vit", "llama3-8b", "vit-l"])
def test_flop_params_are_the_matmul_weights(name):
    cfg = models.preset(name)
    with torch.device("meta"):
        m = models.Model(cfg)
    skipped = sum(p.numel() for n, p in m.named_parameters() if "norm" in n or n.endswith("bias"))
    if cfg.causal:
        skipped += m.embed.weight.numel()  # a lookup, not a matmul
    assert models.flops_params(cfg) == models.count_params(m) - skipped


def test_model_flops_convention_known_answer():
    from ringx.flops import attention_flops, model_flops_per_token

    cfg = models.preset("llama3-8b")
    n = 4 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) + 4096 * 128256
    assert models.flops_params(cfg) == n
    s = 8192
    got = model_flops_per_token(n, 4, s, 32, 128, causal=True)
    assert got == 6 * n + 12 * 4 * s * 4096 / 2  # PaLM: 6N + 12 L H Q T, halved when causal
    assert model_flops_per_token(n, 4, s, 32, 128, causal=False) - 6 * n == pytest.approx(
        3 * 4 * attention_flops(1, s, 32, 128, False) / s)


# ------------------------------------------------------------------------------------ the driver


def bench(nprocs: int, *args: str, timeout: float = 300):
    return launch(nprocs, ["-m", "ringx_bench", "model", *args], timeout=timeout)


BAD_MODEL = [
    (["--preset", "nope"], "preset 'nope': choose one of tiny, tiny-vit, llama3-8b, vit-l, ra-sp"),
    (["--seq", "50", "--algorithms", "ring,zigzag"], "sequence length 50 cannot be split for zigzag (causal) over 2 "
                                                     "ranks: it must be a multiple of 4"),
    (["--heads", "12", "--kv-heads", "5"], "heads 12 is not divisible by kv_heads 5"),
    (["--preset", "tiny-vit", "--heads", "5", "--d-model", "60", "--kv-heads", "5", "--seq", "64",
      "--algorithms", "ulysses"], "ulysses: 5 query heads do not divide over 2 ranks"),
]


@pytest.fixture(scope="module")
def bad_model(tmp_path_factory):
    """Every BAD_MODEL mistake given to `bench model`, all in one launch."""
    out = tmp_path_factory.mktemp("bad_model")
    return out, refused_batch(out, "model", BAD_MODEL)


@pytest.mark.parametrize("i", range(len(BAD_MODEL)), ids=[m for _, m in BAD_MODEL])
def test_bad_input_is_refused_before_any_collective(bad_model, i):
    out, procs = bad_model
    assert_refused_in_one_line(procs[i], BAD_MODEL[i][1], out / str(i))


def _model_records(root, campaign="c") -> list[dict]:
    return [r for r in Store(root, campaign).records() if r["kind"] == "model"]


def test_driver_records_phases_check_and_resume(tmp_path):
    args = ["--preset", "tiny", "--seq", "64", "--iters", "3", "--warmup", "1", "--check", "--quiet",
            "--algorithms", "ring,zigzag,ringx3,ringx4o", "--out", str(tmp_path), "--campaign", "c", "--tag", "t"]
    proc = bench(2, *args)
    assert proc.returncode == 0, proc.stderr
    recs = _model_records(tmp_path)
    assert [r["algorithm"] for r in recs] == ["ring", "zigzag", "ringx3", "ringx4o"]
    assert len({r["timing_group"] for r in recs}) == 1  # timed side by side
    for r in recs:
        assert validate(r) == [] and r["status"] == "ok" and r["world_size"] == 2 and r["tag"] == "t", r
        assert r["check_loss_error"] <= CHECK_TOLERANCE and r["check_grad_error"] <= CHECK_TOLERANCE
        assert r["check_loss"] == pytest.approx(math.log(256), rel=0.05)  # untrained: about ln(vocab)
        assert len(r["samples_s"]) == 3
        for ph in ("forward", "backward", "grad_allreduce", "optimizer"):
            assert len(r["phase_samples_s"][ph]) == 3 and r[f"{ph}_s"] > 0
        assert r["tokens_per_s_per_rank"] == pytest.approx(64 / 2 / r["median_s"])
        assert r["flops"] == pytest.approx(r["flops_per_token"] * 64)
        assert r["tflops_per_rank"] == pytest.approx(r["flops"] / 2 / r["median_s"] / 1e12)
        assert r["mfu"] is None and r["peak_tflops"] is None  # CPU: no MFU
        assert len(r["mem_peak_bytes_per_rank"]) == 2 and all(m > 0 for m in r["mem_peak_bytes_per_rank"])
        assert all(b > 0 for b in r["bytes_sent_per_rank"]) and r["grad_allreduce_bytes"] == 4 * r["params"]
        assert r["layout"] == ringx.ALGORITHMS[r["algorithm"]].layout(True)
    assert bench(2, *args).returncode == 0
    assert len(_model_records(tmp_path)) == 4  # resumed: nothing re-run


def test_vit_bf16_autocast_checkpointing_and_a_config_file(tmp_path):
    """The GPU code paths that CPU can run: bf16 autocast (here on CPU) and activation checkpointing, from a
    TOML file overridden by flags."""
    cfg = tmp_path / "m.toml"
    cfg.write_text('preset = "tiny-vit"\nlayers = 1\nseq = [64]\ndtype = "bfloat16"\ncheckpoint = true\n')
    proc = bench(1, "--config", str(cfg), "--seq", "32", "--iters", "2", "--warmup", "0", "--quiet",
                 "--algorithms", "ring,ringx4", "--check", "--out", str(tmp_path), "--campaign", "c")
    assert proc.returncode == 0, proc.stderr
    recs = _model_records(tmp_path)
    assert len(recs) == 2
    for r in recs:
        assert r["status"] == "ok", r["error"]
        assert (r["model"], r["arch"], r["layers"], r["seq"], r["dtype"], r["checkpoint"], r["causal"]) == (
            "tiny-vit", "vit", 1, 32, "bfloat16", True, False)
        assert r["check_grad_error"] <= CHECK_TOLERANCE  # the check itself runs in float64


# ------------------------------------------------------------------------------------ failures, as bench run's


def test_a_failing_rank_is_recorded_as_bench_run_records_it(tmp_path):
    """The shared recorder (bench/measure/failures.py): the failing rank's own cause, not its peer's collective
    timeout waiting on it; every failing rank in failed_ranks; the check fields kept; the others still timed."""
    proc = bench(2, "--preset", "tiny", "--seq", "64", "--iters", "2", "--warmup", "0", "--quiet", "--check",
                 "--algorithms", "ring,ringx4,ringx3", "--timeout", "5", "--out", str(tmp_path), "--campaign", "c",
                 "--inject", "1:1:raise@run")
    assert proc.returncode == 0, proc.stderr
    recs = {r["algorithm"]: r for r in _model_records(tmp_path)}
    bad = recs["ringx4"]
    assert validate(bad) == [] and bad["status"] == "failed" and bad["failure"] == "exception", bad
    assert "rank 1: Injected: injected failure on rank 1 at run" in bad["error"] and 1 in bad["failed_ranks"]
    assert bad["check_loss_error"] <= CHECK_TOLERANCE and "samples_s" not in bad
    assert recs["ring"]["status"] == recs["ringx3"]["status"] == "ok"
    assert recs["ring"]["timing_group"] and recs["ring"]["timing_group"] == recs["ringx3"]["timing_group"]


def test_a_hung_rank_is_named_in_the_records_and_the_others_stop(tmp_path):
    proc = bench(2, "--preset", "tiny", "--seq", "64,128", "--iters", "2", "--warmup", "0", "--quiet",
                 "--algorithms", "ring,ringx4", "--timeout", "2", "--out", str(tmp_path), "--campaign", "c",
                 "--inject", "1:3:hang@time", timeout=120)
    assert proc.returncode != 0
    recs = _model_records(tmp_path)
    assert [(r["seq"], r["status"]) for r in recs] == [(64, "ok"), (64, "ok"), (128, "failed"), (128, "failed")]
    for r in recs[2:]:
        assert validate(r) == [] and r["failure"] == "timeout" and r["failed_ranks"] == [1], r
        assert r["error"].startswith("rank 1 did not report") and "during timing ring, ringx4 at seq=128" in r["error"]
    assert "bench model (rank 0): rank 1 did not report" in proc.stderr and "Traceback" not in proc.stderr
