"""Attention sinks at one rank in this process: every CPU kernel against a dense float64 sink column, what a sink of
-inf and a row that sees nothing give, and bad sinks refused in one line. The multi-rank checks (every algorithm,
1-4 ranks and 2 x 2 nodes, every rank's share of the gradient, nothing more moved) are in tests/test_masks_mpi.py;
decode in tests/test_serving.py; torch-flex at two ranks in tests/test_flex_kernel.py."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

import ringx
from ringx import Mask, RingxInputError
from ringx.merge import with_sink
from tests.reference import rel
from tests.workers.mask_cases import dense

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # flex's "called without torch.compile" note


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    assert not dist.is_initialized()
    store = dist.FileStore(str(tmp_path_factory.mktemp("store") / "file"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield None
    finally:
        dist.destroy_process_group()


def _inputs(seq=32, heads=4, kv=2, d=8, seed=SEED):
    g = torch.Generator().manual_seed(seed)
    q, dout = (torch.randn(2, seq, heads, d, generator=g, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(2, seq, kv, d, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v, dout, 2 * torch.randn(heads, generator=g, dtype=torch.float64)


def _run(q, k, v, dout, sinks, mask, dtype=torch.float64, **kw):
    x = [t.detach().to(dtype, copy=True).requires_grad_() for t in (q, k, v)]
    s = sinks.detach().to(dtype, copy=True).requires_grad_() if sinks is not None else None
    out, lse = ringx.attention(*x, mask=mask, return_lse=True, sinks=s, **kw)
    out.backward(dout.to(dtype))
    return out, lse, *(t.grad for t in x), *((s.grad,) if s is not None else ())


@pytest.mark.parametrize("kernel", ["torch-cpu", "reference", "torch-flex"])
@pytest.mark.parametrize("mask", [Mask.causal(), Mask.full(), Mask.prefix_lm(9), Mask.shared_prefix([(10, [7, 15])]),
                                  Mask.block_causal(5, [20, 12])], ids=str)
def test_every_cpu_kernel_with_sinks_matches_a_dense_sink_column(group, kernel, mask):
    q, k, v, dout, sinks = _inputs()
    ref = dense(q, k, v, dout, mask, sinks)
    want = (*ref[:5], ref[5].sum(1))  # one rank: its share of the sinks' gradient is all of it
    for algo in ("ring", "ringx1", "ulysses"):
        got = _run(q, k, v, dout, sinks, mask, algorithm=algo, kernel=kernel)
        for name, x, y in zip(("out", "lse", "dq", "dk", "dv", "dsinks"), got, want):
            assert rel(x, y) <= 1e-12, f"{algo} {name}: {rel(x, y):.2e}"
    if kernel == "torch-cpu":  # float32 accumulates in float32
        got = _run(q, k, v, dout, sinks, mask, dtype=torch.float32, algorithm="ring", kernel=kernel)
        assert got[0].dtype == got[5].dtype == torch.float32
        assert max(rel(x, y) for x, y in zip(got, want)) <= 2e-5


def test_a_sink_of_minus_infinity_is_no_sink_and_a_row_that_sees_nothing_sees_only_its_sink(group):
    q, k, v, dout, _ = _inputs()
    none = _run(q, k, v, dout, None, Mask.causal(), algorithm="ring")
    gone = _run(q, k, v, dout, torch.full((4,), -torch.inf, dtype=torch.float64), Mask.causal(), algorithm="ring")
    for x, y in zip(none, gone):
        assert torch.equal(x, y)
    assert torch.equal(gone[5], torch.zeros(4, dtype=torch.float64))
    out, lse = with_sink(torch.zeros(1, 3, 2, 4), torch.full((1, 2, 3), -torch.inf), torch.tensor([0.5, -1.0]))
    assert (out == 0).all() and torch.equal(lse, torch.tensor([0.5, -1.0]).view(1, 2, 1).expand(1, 2, 3))


@pytest.mark.parametrize("sinks, match", [
    (torch.zeros(3), "one logit per query head \\(4\\)"),
    (torch.zeros(4, 1), "1-D floating-point"),
    (torch.zeros(4, dtype=torch.int64), "1-D floating-point"),
    ([0.0] * 4, "1-D floating-point"),
])
def test_bad_sinks_are_one_line_input_errors(group, sinks, match):
    q, k, v, _, _ = _inputs()
    with pytest.raises(RingxInputError, match=match) as e:
        ringx.attention(q, k, v, algorithm="ring", causal=True, sinks=sinks)
    assert "\n" not in str(e.value)
