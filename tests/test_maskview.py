"""analysis mask: the picture of a mask's rank blocks and per-rank work, and its counts against dense masks."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ringx import Mask, balance  # noqa: E402
from ringx_analysis import __main__ as cli  # noqa: E402
from ringx_analysis import maskview  # noqa: E402
from ringx_suite import masks  # noqa: E402

MASKS = [Mask.causal(), Mask.full(), Mask.window(5), Mask.window(3, 2), Mask.documents([7, 20, 1, 20]),
         Mask.documents([30, 18], causal=False, window=4), Mask.prefix_lm(17), Mask.block_causal(5, [7, 20, 1, 20]),
         Mask.shared_prefix([(10, [6, 9]), (5, [18])]), Mask.from_slices([(0, 48, 0, 4), (0, 48, 4, 48, -2, 2)])]


@pytest.mark.parametrize("layout", ["contiguous", "zigzag", "stripe"])
@pytest.mark.parametrize("mask", MASKS, ids=str)
def test_block_pairs_match_the_dense_mask(mask, layout):
    seq, ranks = 48, 4
    owner = maskview.owners(seq, ranks, layout)
    got = maskview.block_pairs(mask, seq, owner, ranks)
    dense = mask.visible(range(seq), range(seq)).numpy()
    want = np.array([[dense[np.ix_(owner == r, owner == s)].sum() for s in range(ranks)] for r in range(ranks)])
    assert (got == want).all()
    assert tuple(got.sum(axis=1)) == balance(mask, layout, ranks, seq).pairs  # rows are ringx.balance's work


def test_block_kinds_known_answers():
    owner = maskview.owners(64, 4, "contiguous")
    k = maskview.block_kinds(maskview.block_pairs(Mask.causal(), 64, owner, 4), 16, True)
    assert (np.diag(k) == 2).all() and (k[np.tril_indices(4, -1)] == 1).all() and (k[np.triu_indices(4, 1)] == 0).all()
    k = maskview.block_kinds(maskview.block_pairs(Mask.window(4), 64, owner, 4), 16, True)
    assert (np.diag(k) == 3).all() and (np.diag(k, -1) == 3).all() and (k[np.tril_indices(4, -2)] == 0).all()
    k = maskview.block_kinds(maskview.block_pairs(Mask.documents([16] * 4), 64, owner, 4), 16, True)
    assert (k == np.where(np.eye(4, dtype=bool), 2, 0)).all()  # each document is its rank's causal block


def test_visibility_is_the_downsampled_fraction():
    v = maskview.visibility(Mask.causal(), 4096, grid=64)
    assert v.shape == (64, 64) and (v[np.triu_indices(64, 1)] == 0).all() and (v[np.tril_indices(64, -1)] == 1).all()
    assert 0.5 < np.diag(v).mean() < 0.75  # a causal cell of 4 x 4 sampled positions: 10 of 16
    w = maskview.visibility(Mask.window(10), 1 << 20, grid=64)
    assert (w.diagonal() > 0).all() and w.sum() == pytest.approx(w.diagonal().sum())  # a thin window still shows


def test_cli_draws_the_picture(tmp_path, capsys):
    rc = cli.main(["mask", "--mask", "docs:lognormal:512", "--seq", "8192", "--ranks", "8", "--algorithm", "zigzag",
                   "--out", str(tmp_path), "--format", "png"])
    out = capsys.readouterr().out
    assert rc == 0 and "layout zigzag" in out and "imbalance" in out
    png = tmp_path / "mask-docs-lognormal-512-8192-8-zigzag.png"
    assert png.stat().st_size > 10_000
    m = masks.parse("docs:lognormal:512", 8192)
    want = balance(m, "zigzag", 8, 8192)
    assert f"{want.imbalance:.3f}" in out and str(list(want.pairs)) in out


@pytest.mark.parametrize("spec", ["prefix:1500", "docs:1000x4:blocks:128", "shared:1000/500x6"])
def test_cli_draws_the_new_forms(spec, tmp_path, capsys):
    assert cli.main(["mask", "--mask", spec, "--seq", "4000", "--ranks", "4", "--out", str(tmp_path),
                     "--format", "png"]) == 0
    want = balance(masks.parse(spec, 4000), "contiguous", 4, 4000)
    assert str(list(want.pairs)) in capsys.readouterr().out and len(list(tmp_path.glob("*.png"))) == 1


@pytest.mark.parametrize("args, match", [
    (["--mask", "docs:lognormal:x", "--seq", "64", "--ranks", "2"], "mean 'x'"),
    (["--mask", "causal", "--seq", "65", "--ranks", "2"], "does not split"),
    (["--mask", "causal", "--seq", "64", "--ranks", "2", "--layout", "diagonal"], "--layout"),
    (["--mask", "causal", "--seq", "64", "--ranks", "2", "--algorithm", "nope"], "--algorithm"),
])
def test_cli_errors_are_one_line(args, match, tmp_path, capsys):
    assert cli.main(["mask", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_owners_are_the_layouts_shards():
    owner = maskview.owners(32, 4, "zigzag")
    assert list(np.flatnonzero(owner == 0)) == [0, 1, 2, 3, 28, 29, 30, 31]
    assert torch.equal(torch.as_tensor(np.flatnonzero(owner == 1)), torch.tensor([4, 5, 6, 7, 24, 25, 26, 27]))
