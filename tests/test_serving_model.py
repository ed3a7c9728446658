"""The serving cost model (costmodel/serving.py): its decode messages are the operations ringx.decode performs
(ledgers of real runs at 2 and 4 ranks), TP's are bench.models.serving's, its model table is bench's presets, and the
predictions move the way they must."""

from __future__ import annotations

import math
import os

import pytest

from ringx_costmodel import machine as machines
from ringx_costmodel import serving as sm
from tests.mpi import run_cases
from tests.workers.serving_model_cases import DECODE, TP_NEW, TP_PROMPT, B, D, H

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
RANKS_PER_NODE = {2: 2, 4: 2}  # 4 ranks as 2 simulated nodes: usp's degree 2 is a real Ulysses x ring decode


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    cache: dict[int, dict] = {}

    def get(world: int) -> dict:
        if world not in cache:
            env = {"RINGX_RANKS_PER_NODE": str(RANKS_PER_NODE[world])}
            cache[world] = run_cases(world, "tests/workers/serving_model_cases.py",
                                     tmp_path_factory.mktemp(f"sm{world}"), SEED, env=env)
        return cache[world]

    return get


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("algorithm", DECODE)
def test_decode_messages_are_what_ringx_decode_moves(launched, world, algorithm):
    rows = launched(world)[f"decode-{algorithm}"]
    assert sorted(r["rank"] for r in rows) == list(range(world))
    shape = sm.decode_shape(algorithm, world, heads=H, gpus_per_node=RANKS_PER_NODE[world])
    assert {(r["u"], r["shards"]) for r in rows} == {(shape.u, shape.shards)}
    msgs = sm.decode_messages(shape, batch=B, heads=H, head_dim=D, dtype="float64")
    for r in rows:
        assert r["ledger"], "the schedule moved nothing"
        assert sm.ledger(msgs, shape, r["rank"]) == r["ledger"], f"rank {r['rank']}"


@pytest.mark.parametrize("world", [2, 4])
def test_tp_all_reduces_are_bench_serving_s(launched, world):
    """Two all-reduces of (batch, tokens, d_model) per layer, at prefill and at each decode step; one broadcast of
    the ids per generated token."""
    tiny = sm.MODELS["tiny"]
    per_token = [sm.tp_messages(tiny, world, batch=B, tokens=t, dtype="float64") for t in
                 [TP_PROMPT] + [1] * (TP_NEW - 1)]
    assert all(len(m) == 2 for m in per_token)
    want_bytes = tiny.layers * sum(m.nbytes for ms in per_token for m in ms)
    for r in launched(world)["tp"]:
        led = r["ledger"]
        assert led["all_reduce"] == {"calls": 2 * tiny.layers * TP_NEW, "sent": want_bytes, "received": want_bytes}
        assert led["broadcast"]["calls"] == TP_NEW
        assert set(led) == {"all_reduce", "broadcast"}


def test_the_model_table_is_bench_s_presets():
    from ringx_drivers import models

    for name, d in sm.MODELS.items():
        c = models.PRESETS[name]
        assert (d.layers, d.d_model, d.heads, d.kv_heads, d.mlp, d.vocab) == (
            c.layers, c.d_model, c.heads, c.kv_heads, c.mlp, c.vocab)
    # the parameter formulas, against the real modules of the small preset (llama3-8b's would be 8 GB)
    tiny = models.build(models.PRESETS["tiny"], 0)
    per_layer = sum(p.numel() for n, p in tiny.blocks[0].named_parameters() if "norm" not in n)
    assert sm.MODELS["tiny"].layer_params == per_layer
    assert sm.MODELS["tiny"].head_params == tiny.head.weight.numel()
    decoders = {n for n, c in models.PRESETS.items() if c.arch == "decoder"}
    assert decoders == set(sm.MODELS)


def test_every_algorithm_has_a_decode_shape():
    import ringx

    for name in ringx.ALGORITHMS:
        shape = sm.decode_shape(name, 8, heads=32, gpus_per_node=4)
        assert shape.world == 8 and shape.shards * shape.u == 8


def test_ring_merge_is_2_r_minus_1_sequential_hops():
    m, gpn = machines.load("frontier")
    shape = sm.decode_shape("ring", 64, heads=32)
    (msg,) = sm.decode_messages(shape, batch=1, heads=32, head_dim=128)
    hop_intra = m.comm_s("sendrecv", msg.nbytes, 2, 1)
    hop_inter = m.comm_s("sendrecv", msg.nbytes, 2, 2)
    # 8 nodes of 8: the acc chain crosses 7 node boundaries, the result chain 8 (it wraps around)
    assert sm.message_s(msg, shape, m, gpn) == pytest.approx(15 * hop_inter + (2 * 63 - 15) * hop_intra)


LLAMA = sm.MODELS["llama3-8b"]


@pytest.mark.parametrize("machine", ["frontier", "perlmutter", "alps"])
def test_tpot_does_not_fall_with_more_cache_and_tp_is_latency_bound(machine):
    m, gpn = machines.load(machine)
    for alg in ("ring", "ringx1", "ringx3", "usp", "ulysses", "tp"):
        for p in (8, 32):
            t = [sm.predict_serving(alg, p, m, gpus_per_node=gpn, model=LLAMA, cache_tokens=s, prefill=False)
                 for s in (1 << 17, 1 << 18, 1 << 20)]
            assert t[0].tpot_s <= t[1].tpot_s <= t[2].tpot_s, (alg, p)
            assert t[0].kv_cache_bytes < t[1].kv_cache_bytes < t[2].kv_cache_bytes
            assert math.isnan(t[0].ttft_s) or alg == "tp"  # TP's prefill is not traced: always predicted
    # TP's two all-reduces per layer of one token are tiny: their time is almost all latency
    tp = sm.predict_serving("tp", 32, m, gpus_per_node=gpn, model=LLAMA, cache_tokens=1 << 17, prefill=False)
    nodes = 32 // gpn
    latency = LLAMA.layers * 2 * m.comm_s("all_reduce", 0, 32, nodes)
    assert latency <= tp.decode_merge_s < 1.05 * latency


def test_ringx_merge_beats_the_ring_at_scale_and_ttft_falls_with_ranks():
    m, gpn = machines.load("alps")
    ring = sm.predict_serving("ring", 512, m, gpus_per_node=gpn, model=LLAMA, cache_tokens=1 << 20, prefill=False)
    x1 = sm.predict_serving("ringx1", 512, m, gpus_per_node=gpn, model=LLAMA, cache_tokens=1 << 20, prefill=False)
    assert x1.decode_merge_s < ring.decode_merge_s / 5 and x1.tpot_s < ring.tpot_s
    assert x1.decode_attention_s == ring.decode_attention_s  # the same cache shard
    ttft = [sm.predict_serving("zigzag", p, m, gpus_per_node=gpn, model=LLAMA, cache_tokens=1 << 17).ttft_s
            for p in (8, 32)]
    assert ttft[1] < ttft[0]


def test_bad_input_is_one_line():
    m, gpn = machines.load("frontier")
    bad = [dict(algorithm="nope"), dict(algorithm="tp", p=64), dict(algorithm="ulysses", p=64),
           dict(cache_tokens=0), dict(dtype="int8")]
    for kw in bad:
        args = {"algorithm": "ring", "p": 8, "cache_tokens": 1 << 17, "dtype": "bfloat16", **kw}
        with pytest.raises(ValueError) as e:
            sm.predict_serving(args.pop("algorithm"), args.pop("p"), m, gpus_per_node=gpn, model=LLAMA,
                               prefill=False, **args)
        assert "\n" not in str(e.value)
    bare = machines.Machine("bare", "test", 1e12, {"default": machines.Link(1e-5, 10.0)})
    with pytest.raises(ValueError, match="hbm_GBps"):
        sm.predict_serving("ring", 8, bare, gpus_per_node=4, model=LLAMA, cache_tokens=1 << 17, prefill=False)
