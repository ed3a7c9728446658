"""The field's implementations as plugins (bench/peers/): their layouts are the same permutations as ours, the CPU
stand-in for flash-attn answers every argument the pinned ring-flash-attention passes, and under bench run at 2
and 4 ranks each is checked against float64 and timed beside ours, or recorded with what the check found."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import types
from pathlib import Path

import pytest
import torch

import ringx
from ringx_suite.store import Store
from tests.mpi import launch
from tests.test_plugins import by_name

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "tests" / "standins"
SMALL = ["--seq", "64", "--heads", "4", "--kv-heads", "4", "--head-dim", "16", "--iters", "2", "--warmup", "1",
         "--quiet", "--causal", "true"]


def shards_by(extract, world: int, seq: int) -> list[list[int]]:
    """Each rank's global positions under an implementation's own sharding function."""
    x = torch.arange(seq).reshape(1, seq, 1)
    return [extract(x, r).flatten().tolist() for r in range(world)]


def ours(layout: str, world: int, seq: int) -> list[list[int]]:
    return [ringx.layouts.positions(layout, world, r, seq // world).tolist() for r in range(world)]


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_torch_cp_load_balanced_layout_is_our_zigzag(world):
    from torch.distributed.tensor.experimental._context_parallel._load_balancer import _HeadTailLoadBalancer

    seq = 4 * world
    order = _HeadTailLoadBalancer(seq, world, "cpu")._generate_indices()[0].tolist()
    n = seq // world
    assert [order[r * n:(r + 1) * n] for r in range(world)] == ours("zigzag", world, seq)


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_yunchang_layouts_are_ours(world, monkeypatch):
    from yunchang.comm import extract_local as yc

    rank = [0]  # a ring of `world` ranks and Ulysses groups of one: USP's layout is then the plain one
    fake = types.SimpleNamespace(get_rank=lambda group=None: rank[0] if group == "ring" else 0,
                                 get_world_size=lambda group=None: world if group == "ring" else 1)
    monkeypatch.setattr(yc, "dist", fake)
    monkeypatch.setattr(yc, "PROCESS_GROUP", types.SimpleNamespace(RING_PG="ring", ULYSSES_PG="ulysses"))

    def at(fn):
        def extract(x, r):
            rank[0] = r
            return fn(x, r, world, world, 1)
        return extract

    seq = 4 * world
    assert shards_by(at(yc.basic_extract_local), world, seq) == ours("contiguous", world, seq)
    assert shards_by(at(yc.zigzag_extract_local), world, seq) == ours("zigzag", world, seq)


def test_the_flash_attn_standin_takes_every_argument_ring_flash_attention_passes():
    """ring-flash-attention builds each call from the stand-in's own signature (get_default_args) and updates it
    with its keys: every key it sets, in every module of the pinned version, must be a parameter here."""
    spec = importlib.util.find_spec("ring_flash_attn")
    assert spec is not None, "ring-flash-attn is installed by ./dev (the peers extra)"
    standin = importlib.util.spec_from_file_location("standin_fa", STANDINS / "flash_attn" / "flash_attn_interface.py")
    mod = importlib.util.module_from_spec(standin)
    standin.loader.exec_module(mod)
    takes = {name: set(inspect.signature(getattr(mod, name)).parameters) for name in
             ("_flash_attn_forward", "_flash_attn_backward", "_flash_attn_varlen_forward",
              "_flash_attn_varlen_backward")}
    seen = 0
    for f in ("ring_flash_attn.py", "zigzag_ring_flash_attn.py", "stripe_flash_attn.py", "llama3_flash_attn_varlen.py"):
        tree = ast.parse((Path(spec.submodule_search_locations[0]) / f).read_text())
        for node in ast.walk(tree):  # params = get_default_args(_flash_attn_X).copy(); params.update({...})
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update" and node.args and \
                    isinstance(node.args[0], ast.Dict):
                keys = {k.value for k in node.args[0].keys if isinstance(k, ast.Constant)}
                if not keys:
                    continue  # params.update({"window_size": ...}): the key the check below allows
                which = ("_flash_attn_varlen" if "cu_seqlens_q" in keys else "_flash_attn") + \
                    ("_backward" if "dout" in keys else "_forward")
                missing = keys - takes[which] - {"window_size"}  # it asks `"window_size" in params` first
                assert not missing, f"{f}: {which} is passed {sorted(missing)}, which the stand-in does not take"
                seen += 1
    assert seen >= 8


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory):
    """Every peer beside ours at 2 and 4 ranks, causal, bf16 and float32, checked (the stand-in on the path)."""
    out = tmp_path_factory.mktemp("peers")
    env = {"PYTHONPATH": f"{STANDINS}:{ROOT}"}
    runs = {}
    for world in (2, 4):
        proc = launch(world, ["-m", "ringx_bench", "run", "--algorithms",
                              "ring,zigzag,ulysses,tcp-ring,tcp-allgather,rfa-ring,rfa-zigzag,rfa-stripe,yc-ulysses,"
                              "yc-usp", "--dtype", "bfloat16,float32", "--check", "--out", str(out),
                              "--campaign", f"p{world}", *SMALL], timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr
        runs[world] = {(r["algorithm"], r["dtype"]): r for r in Store(out, f"p{world}").records()}
    return runs


@pytest.mark.parametrize("world", [2, 4])
def test_peers_run_checked_beside_ours(peers_run, world):
    recs = peers_run[world]
    for name in ("tcp-ring", "tcp-allgather"):  # PyTorch CP: exact to float32's tolerance, timed with ours
        for dtype in ("bfloat16", "float32"):
            r = recs[name, dtype]
            assert r["status"] == "ok" and r["family"] == "peer", (name, dtype, r.get("error"))
            assert r["timing_group"] == recs["ring", dtype]["timing_group"]
            assert sum(r["bytes_sent_per_rank"]) > 0
    for name in ("rfa-ring", "rfa-zigzag", "rfa-stripe"):  # ring-flash-attention's real code, through the stand-in
        assert recs[name, "bfloat16"]["status"] == "ok", recs[name, "bfloat16"].get("error")
        # what the check finds in float32 (0.1.8): its first block's gradient accumulators alias the block buffers
        # it reuses (.to(float32) copies nothing for float32 inputs), and dq comes back in bfloat16
        bad = recs[name, "float32"]
        assert bad["status"] == "failed" and "check failed" in bad["error"] and not bad.get("samples_s")


@pytest.mark.parametrize("world", [2, 4])
def test_what_yunchang_does_on_cpu_is_recorded_in_one_line(peers_run, world):
    recs = peers_run[world]
    for name in ("yc-ulysses", "yc-usp"):
        for dtype in ("bfloat16", "float32"):
            r = recs[name, dtype]
            assert r["status"] == "failed" and "\n" not in r["error"], r.get("error")


def test_ring_flash_attentions_llama3_varlen_runs_packed_documents(tmp_path):
    """Its llama3 varlen function on a fresh random document mask at 2 ranks, through the stand-in: checked
    against float64 (in float32: flash-attn has no float64, and its log-sum-exp is float32) and timed beside ring."""
    import random

    rng = random.Random()
    cuts = sorted(rng.sample(range(1, 64), rng.randint(1, 4)))
    docs = ",".join(str(b - a) for a, b in zip([0, *cuts], [*cuts, 64]))
    args = [a for a in SMALL if a not in ("--causal", "true")]
    proc = launch(2, ["-m", "ringx_bench", "run", "--algorithms", "ring,rfa-llama3", "--mask", f"docs:{docs}",
                      "--dtype", "float32", "--check", "--out", str(tmp_path), "--campaign", "d", *args],
                  timeout=300, env={"PYTHONPATH": f"{STANDINS}:{ROOT}"})
    assert proc.returncode == 0, proc.stderr
    recs = by_name(tmp_path, "d")
    assert recs["rfa-llama3"]["status"] == "ok", (docs, recs["rfa-llama3"].get("error"))
    assert recs["rfa-llama3"]["timing_group"] == recs["ring"]["timing_group"] and recs["rfa-llama3"]["samples_s"]
