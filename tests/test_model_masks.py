"""The cost model with masks: traced masked schedules skip blocks and transfers, and the predictions follow."""

from __future__ import annotations

import pytest

from ringx.mask import Mask
from ringx_analysis import __main__ as cli
from ringx_costmodel import Link, Machine, predict
from ringx_costmodel.predict import _traces

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


def test_map_caps_masked_rank_counts(tmp_path, capsys):
    rc = cli.main(["map", "--machines", "frontier", "--mask", "window:1024", "--seqs", "16384", "--ranks", "8,4096",
                   "--algorithms", "ring,stripe", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "not predicting [4096] ranks" in out
    assert (tmp_path / "fastest-map-window-1024.png").stat().st_size > 5000
    import pandas as pd

    t = pd.read_csv(tmp_path / "fastest-map-window-1024.csv")
    assert set(t["ranks"]) == {8} and set(t["algorithm"]) == {"ring", "stripe"} and set(t["mask"]) == {"window:1024"}
    assert t["fastest"].sum() == 1
