"""The cost model with masks: traced masked schedules skip blocks and transfers, and the predictions follow."""

from __future__ import annotations

import pytest
import torch

from ringx.algorithms import ALGORITHMS
from ringx.balancing import balance
from ringx.mask import Mask
from ringx.schedule import trace
from ringx_analysis import __main__ as cli
from ringx_costmodel import Link, Machine, predict
from ringx_costmodel.predict import _traces
from ringx_suite import masks

SHAPE = dict(seq=4096, heads=8, kv_heads=2, head_dim=64, dtype="bfloat16")
MACHINE = Machine("m", "test", 1e12, {"default": Link(5e-6, 50.0)})


def _sent(algorithm: str, mask: str | None, p: int = 4) -> tuple[float, int]:
    """(FLOPs, sendrecv bytes) of every rank's traced forward."""
    trs = _traces(algorithm, True, p, tuple(range(p)), 1, SHAPE["seq"], SHAPE["heads"], SHAPE["kv_heads"],
                  SHAPE["head_dim"], "bfloat16", False, None, None, mask)
    return (sum(e.flops for t in trs for e in t.forward if e.kind == "compute"),
            sum(e.nbytes for t in trs for e in t.forward if e.kind == "comm"))


@pytest.mark.parametrize("algorithm", ["ring", "zigzag", "stripe", "ringx2", "ringx4"])
def test_masked_traces_skip_work_and_predict_faster(algorithm):
    flops_c, bytes_c = _sent(algorithm, None)
    flops_w, bytes_w = _sent(algorithm, "window:256")  # a quarter of a rank's 1024-token shard
    assert flops_w < 0.5 * flops_c and bytes_w <= bytes_c
    causal = predict(algorithm, True, "fwd+bwd", 4, MACHINE, **SHAPE)
    window = predict(algorithm, True, "fwd+bwd", 4, MACHINE, mask="window:256", **SHAPE)
    assert window.total_s < causal.total_s and window.compute_s < 0.5 * causal.compute_s


def test_ring_window_moves_only_the_neighbours_keys():
    _, causal = _sent("ring", None)
    _, window = _sent("ring", "window:256")
    assert window <= causal / 2  # one ring step of three (the bound)
    assert _sent("ring", "causal") == _sent("ring", None)  # the mask text and causal=True trace alike


def test_documents_change_the_prediction():
    docs = str(Mask.documents([512] * 8))  # each document inside one rank's shard: no transfer brings a key
    fl, sent = _sent("ring", docs)
    assert sent == 0 and fl == pytest.approx(_sent("ring", "causal")[0] * 512 * 513 * 8 / (4096 * 4097), rel=1e-6)


def test_predict_cli_takes_a_mask(capsys):
    assert cli.main(["predict", "--machine", "frontier", "--ranks", "8", "--seq", "65536", "--mask",
                     "docs:lognormal:8192"]) == 0
    out = capsys.readouterr().out
    assert "docs:" in out.splitlines()[0] and "| 8 | 1 | ring |" in out and "| yes |" in out
    assert cli.main(["predict", "--machine", "frontier", "--ranks", "8", "--seq", "65536", "--mask", "window:x"]) == 2
    assert "not a mask" in capsys.readouterr().err


def test_map_predicts_masked_cells_past_512_ranks(tmp_path, capsys):
    rc = cli.main(["map", "--machines", "frontier", "--mask", "window:1024", "--seqs", "65536", "--ranks", "8,4096",
                   "--algorithms", "ring,stripe", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "4096 ranks: fastest" in out and "not predicting" not in out
    assert (tmp_path / "fastest-map-window-1024.png").stat().st_size > 5000
    import pandas as pd

    t = pd.read_csv(tmp_path / "fastest-map-window-1024.csv")
    assert set(t["ranks"]) == {8, 4096} and set(t["algorithm"]) == {"ring", "stripe"}
    assert set(t["mask"]) == {"window:1024"} and t["fastest"].sum() == 2


BIG = dict(batch=1, heads=8, kv_heads=2, head_dim=64, dtype=torch.bfloat16)


def _fwd(tr) -> tuple[float, int, int]:
    """(FLOPs, bytes sent, sendrecv operations) of a traced forward."""
    comm = [e for e in tr.forward if e.kind == "comm"]
    return (sum(e.flops for e in tr.forward if e.kind == "compute"), sum(e.nbytes for e in comm), len(comm))


@pytest.mark.parametrize("rank", [0, 1, 2047, 4095])
def test_ring_under_a_narrow_window_at_4096_ranks_moves_only_the_neighbours_keys(rank):
    p, n = 4096, 64
    seq, w = p * n, Mask.window(48)  # narrower than a shard: only the previous rank's keys are seen
    tr = trace("ring", None, p, rank, seq=seq, mask=w, backward=False, **BIG)
    flops, sent, ops = _fwd(tr)
    pairs = int(w.keys_per_query(seq)[rank * n:(rank + 1) * n].sum())  # from the rule, not from the plans
    assert flops == 4 * BIG["head_dim"] * BIG["heads"] * pairs
    assert ops == 1 and sent == 2 * n * BIG["kv_heads"] * BIG["head_dim"] * 2  # one shift of bf16 K and V
    assert tr.ledger_forward.sent == sent


@pytest.mark.parametrize("algorithm", ["zigzag", "ringx4"])  # each rank computes its own queries
def test_masked_traces_at_4096_ranks_compute_each_ranks_visible_pairs(algorithm):
    p, seq = 4096, 1 << 18
    docs = masks.parse("docs:lognormal:8192+window:1024", seq, 0)
    per_rank = balance(docs, ALGORITHMS[algorithm].layout(mask=docs), p, seq).pairs  # in O(S) from the rule
    for rank in (0, 1234, p - 1):
        tr = trace(algorithm, None, p, rank, seq=seq, mask=docs, backward=True, **BIG)
        flops = sum(e.flops for e in tr.forward if e.kind == "compute")
        assert flops == 4 * BIG["head_dim"] * BIG["heads"] * per_rank[rank], rank
        assert sum(e.flops for e in tr.backward if e.kind == "compute") == 2.5 * flops
