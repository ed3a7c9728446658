"""One rank in this process (a 1-rank gloo group): what the call reports, what it skips, and the check.

Also the backend/device rule on fake devices, the no-copy accumulation rule, and
``ringx.verify``'s reusable float64 reference (against the old full-matrix path).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

import ringx
from ringx import api, verify
from ringx.blocks import Grad
from ringx.kernels import ReferenceKernel
from ringx.merge import Partial
from tests.reference import full_attention


def _qkv(dtype=torch.float32, n=16, h=4, hk=2, d=16):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, n, x, d, generator=g).to(dtype) for x in (h, hk, hk)]


def test_call_stats_name_the_kernel_and_its_library_version(group):
    stats = ringx.CallStats()
    ringx.attention(*_qkv(), algorithm="zigzag", causal=True, stats=stats)
    assert (stats.kernel, stats.kernel_version) == ("torch-cpu", f"torch {torch.__version__}")
    ringx.attention(*_qkv(torch.float64), algorithm="ring", causal=False, stats=stats, kernel="reference")
    assert stats.kernel == "reference" and stats.kernel_version.startswith("torch ")


def test_one_rank_exchanges_nothing_to_validate(group, monkeypatch):
    def no_exchange(*a, **k):
        raise AssertionError("validation exchanged signatures at one rank")

    monkeypatch.setattr(api, "all_gather_flat", no_exchange)
    ringx.attention(*_qkv(), algorithm="ringx4", causal=True, validate=True)
    with pytest.raises(ringx.RingxInputError, match="q has 4 heads and k/v have 3"):
        q, k, v = _qkv(hk=3)
        ringx.attention(q, k, v, algorithm="ring", causal=True)


def test_tensors_the_backend_cannot_move_are_refused(group):
    q, k, v = (t.to("meta") for t in _qkv())
    with pytest.raises(ringx.RingxInputError, match="q, k, v are on meta but this process group's backend moves "
                                                     r"cpu tensors: put them on cpu, .*init\(device='meta'\)"):
        ringx.attention(q, k, v, algorithm="ring", causal=False)


@pytest.mark.parametrize("backend,expected", [("gloo", {"cpu"}), ("nccl", {"cuda"}),
                                              ("cpu:gloo,cuda:nccl", {"cpu", "cuda"}), ("xccl", None)])
def test_backend_device_types(monkeypatch, backend, expected):
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    assert api.backend_device_types() == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize("device,moves", [("cuda", {"cpu"}), ("cpu", {"cuda"})])
def test_device_backend_mismatch_rule(device, moves):
    """CUDA tensors on gloo, CPU tensors on NCCL (decided before any kernel or device is touched)."""
    s = torch.Size([1, 8, 2, 16])
    dev = torch.device(device)
    msg = api._problem(s, s, s, *[torch.float16] * 3, dev, dev, dev, "ring", True, None, None, 2, frozenset(moves))
    assert msg.startswith(f"q, k, v are on {device} but this process group's backend moves {moves.pop()} tensors")


def test_one_full_block_is_adopted_without_copies_and_widened_only_to_merge():
    q = torch.zeros(1, 4, 2, 8, dtype=torch.bfloat16)
    blk, lse = torch.randn(1, 4, 2, 8).bfloat16(), torch.randn(1, 2, 4)
    acc = Partial(q)
    acc.add(0, 4, blk, lse)
    out, got_lse = acc.final()
    assert out is blk and got_lse is lse  # handed back as the kernel made it: no bf16 -> fp32 -> bf16 round trip
    acc.add(0, 4, blk, lse)  # a second block: now it must accumulate in float32
    assert acc.final()[0].dtype == torch.float32
    g = Grad(q)
    g.add(0, 4, blk)
    assert g.final() is blk and g.result().dtype == torch.float32
    g2 = Grad(q)
    g2.add(0, 4, blk)
    summed = g2.plus(torch.ones(1, 4, 2, 8))  # a float32 partner absorbs the adopted bf16 block
    assert summed.dtype == torch.float32 and torch.equal(summed, blk.float() + 1)


# --- ringx.verify: the float64 reference, computed once per configuration --------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_reference_equals_the_full_matrix_paths(causal):
    cfg = verify.Config(causal, 2, 48, 6, 2, 16, torch.bfloat16, seed=7)
    Q, K, V, dO = verify.inputs(cfg)
    scale = 16**-0.5
    ref = ReferenceKernel()  # what max_error computed before, on the whole sequence at once
    out, lse = ref.forward(Q, K, V, causal, scale)
    old = (out, lse, *ref.backward(dO, Q, K, V, out, lse, causal, scale))
    indep = full_attention(Q, K, V, dO, causal)
    for budget in (2 * 6 * 48 * 5, None):  # 5 query rows per chunk, and the default (one chunk)
        new = verify.full_attention(Q, K, V, dO, causal, scale, budget=budget)
        for a, b, c in zip(new, old, indep):
            assert (a - b).abs().max() < 1e-12 and (a - c).abs().max() < 1e-12


def test_reference_is_computed_once_and_reused_by_every_algorithm(group, monkeypatch):
    verify.clear_cache()
    made = []
    real = verify.compute
    monkeypatch.setattr(verify, "compute", lambda cfg, device: made.append(cfg) or real(cfg, device))
    cpu = torch.device("cpu")
    for algo in ("ring", "zigzag", "ringx1", "ringx3", "ringx4o"):
        err = verify.max_error(algo, True, 1, 32, 4, 2, 16, torch.float32, cpu, seed=3)
        assert err <= verify.TOLERANCE[torch.float32], algo
    assert len(made) == 1
    ref = verify.reference(True, 1, 32, 4, 2, 16, torch.float32, 3, cpu)
    errs = verify.errors(ref, "stripe", cpu)
    assert set(errs) == set(verify.QUANTITIES) and max(errs.values()) <= 2e-5
    verify.max_error("ring", True, 1, 32, 4, 2, 16, torch.float32, cpu, seed=4)  # another seed: another reference
    assert len(made) == 2
    for seed in (5, 6, 7):
        verify.reference(False, 1, 8, 2, 2, 8, torch.float32, seed, cpu)
    assert len(verify._CACHE) == verify.CACHE_SIZE  # old references are dropped
    verify.clear_cache()


def test_check_of_an_outside_function_and_a_wrong_one(group):
    verify.clear_cache()
    good = verify.max_error("x", False, 1, 16, 2, 2, 8, torch.float64, torch.device("cpu"), layout="contiguous",
                            fn=lambda q, k, v: ringx.attention(q, k, v, algorithm="ring", causal=False))
    assert good <= 1e-10
    bad = verify.max_error("x", False, 1, 16, 2, 2, 8, torch.float64, torch.device("cpu"), layout="contiguous",
                           fn=lambda q, k, v: 1.01 * ringx.attention(q, k, v, algorithm="ring", causal=False))
    assert bad > 1e-3
    verify.clear_cache()


@pytest.mark.parametrize("major,minor,hip,arch,fast", [
    (9, 0, None, "", True), (8, 0, None, "", True), (7, 0, None, "", True), (10, 0, None, "", True),
    (8, 6, None, "", False), (8, 9, None, "", False), (12, 0, None, "", False), (6, 1, None, "", False),
    (0, 0, "6.2", "gfx90a:sramecc+:xnack-", True), (0, 0, "6.2", "gfx942", True), (0, 0, "6.2", "gfx1100", False),
])
def test_float64_speed_rule(monkeypatch, major, minor, hip, arch, fast):
    props = SimpleNamespace(major=major, minor=minor, gcnArchName=arch, name="fake")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.version, "hip", hip)
    assert verify.float64_fast(torch.device("cuda", 0)) is fast
    gpu = torch.device("cuda", 0)
    assert verify.reference_device(gpu) == (gpu if fast else torch.device("cpu"))
    monkeypatch.setenv(verify.DEVICE_ENV, "cpu")
    assert verify.reference_device(torch.device("cuda", 0)) == torch.device("cpu")
    monkeypatch.setenv(verify.DEVICE_ENV, "device")
    assert verify.reference_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
