"""Single-process pieces: kernels, the online-softmax merge, the registry, API errors."""

from __future__ import annotations

import pytest
import torch

import ringx
from ringx.kernels import KERNELS, select_kernel
from ringx.merge import Partial, merge_
from tests.reference import full_attention


@pytest.mark.parametrize("name", ["torch-cpu", "reference"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_kernels_match_reference(name, dtype, tol, causal, kv_heads):
    g = torch.Generator().manual_seed(int.from_bytes(__import__("os").urandom(2), "little"))
    q = torch.randn(2, 33, 4, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 33, kv_heads, 16, generator=g, dtype=torch.float64) for _ in range(2))
    dout = torch.randn_like(q)
    ref = full_attention(q, k, v, dout, causal)
    kern = KERNELS[name]
    args = [t.to(dtype) for t in (q, k, v)]
    out, lse = kern.forward(*args, causal, 16**-0.5)
    dq, dk, dv = kern.backward(dout.to(dtype), *args, out, lse, causal, 16**-0.5)
    for got, want in zip((out, lse, dq, dk, dv), ref):
        assert got.shape == want.shape
        assert (got.double() - want).abs().max() <= tol * max(1.0, want.abs().max().item())


def test_kernel_selection_is_visible_and_overridable():
    assert select_kernel(torch.device("cpu"), torch.float32).name == "torch-cpu"
    assert select_kernel(torch.device("cpu"), torch.float32, "reference").name == "reference"
    with pytest.raises(ValueError, match="does not run .* on cpu; usable here: torch-cpu, reference"):
        select_kernel(torch.device("cpu"), torch.float32, "flash-attn")
    with pytest.raises(ValueError, match="unknown kernel"):
        select_kernel(torch.device("cpu"), torch.float32, "cudnn")


def test_causal_blocks_must_be_square():
    q = torch.randn(1, 4, 1, 8)
    with pytest.raises(ValueError, match="square"):
        KERNELS["torch-cpu"].forward(q, torch.randn(1, 6, 1, 8), torch.randn(1, 6, 1, 8), True, 1.0)


def test_merge_is_exact_and_stable_for_masked_rows():
    torch.manual_seed(0)
    s = torch.randn(1, 2, 6, 10, dtype=torch.float64)  # (B, H, S, keys)
    vals = torch.randn(1, 10, 2, 3, dtype=torch.float64)
    s[:, :, 0, 5:] = float("-inf")  # row 0 sees nothing in the second half
    def part(lo, hi):
        sc = s[..., lo:hi]
        lse = sc.logsumexp(-1)
        p = torch.nan_to_num(torch.exp(sc - lse[..., None]))
        return torch.einsum("bhqk,bkhd->bqhd", p, vals[:, lo:hi]), lse
    acc = Partial(torch.zeros(1, 6, 2, 3, dtype=torch.float64))
    for lo, hi in ((0, 5), (5, 10)):
        o, lse = part(lo, hi)
        acc.add(0, 6, o, lse)
    out, lse = acc.result()
    want_o, want_lse = part(0, 10)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, want_o, rtol=0, atol=1e-12)
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-12)


def test_merge_of_two_empty_sides_stays_empty():
    out = torch.zeros(1, 3, 1, 2)
    lse = torch.full((1, 1, 3), float("-inf"))
    merge_(out, lse, torch.zeros(1, 3, 1, 2), torch.full((1, 1, 3), float("-inf")))
    assert torch.equal(out, torch.zeros(1, 3, 1, 2)) and torch.isneginf(lse).all()


def test_merge_accumulates_half_inputs_in_float32():
    acc = Partial(torch.zeros(1, 4, 1, 2, dtype=torch.bfloat16))
    acc.add(0, 4, torch.ones(1, 4, 1, 2, dtype=torch.bfloat16), torch.zeros(1, 1, 4))
    acc.add(0, 4, torch.ones(1, 4, 1, 2, dtype=torch.bfloat16), torch.zeros(1, 1, 4))
    out, lse = acc.result()
    assert out.dtype == torch.float32 and lse.dtype == torch.float32


def test_registry_metadata_and_unknown_names():
    assert set(ringx.ALGORITHMS) == {"ring", "zigzag", "stripe", "ringx1", "ringx2", "ringx3", "ringx4",
                                     "ringx1o", "ringx2o", "ringx4o", "ringx3b", "ulysses", "usp", "usp-ringx",
                                     "bidir-ring", "double-ring"}
    assert ringx.ALGORITHMS["ringx3"].layout(True) == "zigzag"
    assert ringx.ALGORITHMS["ringx3"].layout(False) == "contiguous"
    assert all(a.overlap for n, a in ringx.ALGORITHMS.items() if n.endswith("o"))
    with pytest.raises(ValueError, match="unknown algorithm 'ringx9'; choose one of ring, zigzag"):
        ringx.algorithms.get("ringx9", True)


def test_attention_without_a_process_group_says_what_to_do():
    q = torch.randn(1, 8, 2, 4)
    with pytest.raises(ringx.RingxInputError, match="torch.distributed is not initialised"):
        ringx.attention(q, q, q, algorithm="ring", causal=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"dropout_p": 0.1}, "dropout_p"),
    ({"window_size": (128, 0)}, "sliding-window"),
    ({"alibi_slopes": torch.ones(2)}, "alibi"),
])
def test_dropin_rejects_unsupported_arguments(kwargs, match):
    from ringx.dropin import zigzag_ring_flash_attn_func

    q = torch.randn(1, 8, 2, 4)
    with pytest.raises(ValueError, match=match):
        zigzag_ring_flash_attn_func(q, q, q, causal=True, **kwargs)
