"""ringx_suite.masks: the suite's --mask specs (fixed masks and drawn document distributions)."""

from __future__ import annotations

import pytest

from ringx import Mask
from ringx_suite import masks
from ringx_suite.cli import UserError


@pytest.mark.parametrize("text", ["causal", "full", "window:64", "window:8,4", "docs:64x4",
                                  "docs:100,28:full+window:16", "prefix:40", "blocks:16", "docs:64x4:blocks:8",
                                  "docs:64x4:prefix:10", "shared:64/48x4", "slices:0-128/0-128/band:-inf:3"])
def test_fixed_masks_round_trip(text):
    seq = 256 if text.startswith(("docs:64", "shared:")) else 128
    m = masks.parse(text, seq)
    assert m == Mask.parse(text) and masks.parse(str(m), seq) == m
    assert not masks.is_distribution(text)
    assert masks.causal_layout(text) == (text != "full")
    # prefix-LM's prefix and a block's tokens see later tokens; a shared prefix's responses see only earlier ones
    later = ("full", "window:8,4", "docs:100,28:full+window:16", "prefix:40", "blocks:16", "docs:64x4:blocks:8",
             "docs:64x4:prefix:10", "slices:0-128/0-128/band:-inf:3")
    assert masks.is_causal(text) == (text not in later)


def test_split_specs_knows_every_head():
    assert masks.split_specs("prefix:40,shared:64/48,16+8/4x2,blocks:8,slices:0-4/0-4,4-8/0-8,causal") == [
        "prefix:40", "shared:64/48,16+8/4x2", "blocks:8", "slices:0-4/0-4,4-8/0-8", "causal"]


@pytest.mark.parametrize("spec", ["docs:lognormal:300", "docs:uniform:17-90", "docs:fixed:333",
                                  "docs:lognormal:300+window:50", "docs:uniform:1-1"])
@pytest.mark.parametrize("seq", [1000, 4096, 7])
def test_distributions_sum_to_seq_and_round_trip(spec, seq):
    m = masks.parse(spec, seq, seed=5)
    assert sum(m.lengths) == seq and all(n >= 1 for n in m.lengths) and m.is_causal
    assert m.left == (50 if "+window:50" in spec else None)
    assert Mask.parse(str(m)) == m  # the text form a record keeps reads back to the same mask
    assert masks.is_distribution(spec)


def test_distribution_parameters_hold():
    m = masks.parse("docs:uniform:17-90", 100_000, seed=1)
    assert all(17 <= n <= 90 for n in m.lengths[:-1]) and 1 <= m.lengths[-1] <= 90  # only the last is trimmed
    m = masks.parse("docs:fixed:333", 1000)
    assert m.lengths == (333, 333, 333, 1)
    big = masks.parse("docs:lognormal:1000", 2_000_000, seed=2)
    assert 800 < sum(big.lengths) / len(big.lengths) < 1250  # the drawn mean is near the asked one
    assert len(set(big.lengths)) > 100  # drawn, not fixed


def test_seeds_draw_once_and_alike():
    a, b, c = (masks.parse("docs:lognormal:200", 5000, seed=s) for s in (3, 3, 4))
    assert a == b and a != c
    u, v = masks.parse("docs:uniform:10-100", 5000, seed=0), masks.parse("docs:uniform:10-100", 5000, seed=1)
    assert u != v


def test_file_lengths(tmp_path):
    f = tmp_path / "lengths.txt"
    f.write_text("# packed corpus\n100\n\n50  # short one\n300\n")
    assert masks.parse(f"docs:file:{f}", 420).lengths == (100, 50, 270)
    assert masks.parse(f"docs:file:{f}+window:9", 450) == Mask.documents([100, 50, 300], window=9)
    with pytest.raises(UserError, match="sum to 450, fewer than the 451"):
        masks.parse(f"docs:file:{f}", 451)
    f.write_text("10\nzero\n")
    with pytest.raises(UserError, match="is not an integer"):
        masks.parse(f"docs:file:{f}", 5)


@pytest.mark.parametrize("spec, match", [
    ("docs:lognormal:x", "mean 'x' is not a number"), ("docs:lognormal:0.5", "at least 1"),
    ("docs:uniform:5", "MIN-MAX"), ("docs:uniform:9-3", "above maximum"), ("docs:uniform:0-3", "positive"),
    ("docs:fixed:0", "positive"), ("docs:fixed:", "needs a parameter"), ("docs:file:/no/such/file", "cannot read"),
    ("docs:fixed:10+window:a", "window 'a'"), ("docs:fixed:10+window:0", "positive"),
    ("window:-1", "not a mask"), ("bogus", "not a mask"), ("", "non-empty"), ("docs:64x3", "sum to 192"),
    ("prefix:0", "not a mask"), ("shared:64/48x3", "groups sum to 208"), ("slices:0-128/0-128", "slices end at 128"),
])
def test_bad_specs_are_one_line_user_errors(spec, match):
    with pytest.raises(UserError, match=match) as e:
        masks.parse(spec, 256)
    assert "\n" not in str(e.value)


def test_record_fields():
    short = masks.parse("docs:fixed:64", 256)
    assert masks.record_fields("docs:fixed:64", short, 7) == {"mask": "docs:64x4", "mask_lengths": [64] * 4,
                                                              "mask_spec": "docs:fixed:64", "mask_seed": 7}
    assert masks.record_fields("window:8", Mask.window(8)) == {"mask": "window:8"}
    assert masks.record_fields("docs:64x4", short) == {"mask": "docs:64x4", "mask_lengths": [64] * 4}
    long = masks.parse("docs:uniform:10-30", 100_000, seed=1)
    f = masks.record_fields("docs:uniform:10-30", long, 1)
    assert "mask_lengths" not in f and f["mask_digest"] == long.digest() and f["mask"] == long.short()
    assert masks.parse(f["mask_spec"], 100_000, f["mask_seed"]).digest() == f["mask_digest"]  # redrawn alike
