"""Kernel choice and the GPU kernels' adapter logic, checked on the CPU.

The GPU ops cannot run here. What can be checked honestly is ringx's side: which
kernel the rules pick for a given machine (a fake :class:`DeviceInfo`), and what the
wrappers do around each op (argument order, LSE shape and padding, K/V head
expansion and gradient folding, version differences of flash-attn). The fake ops
below bind their arguments by the real op's schema (read from this torch) and
behave as documented in ../shared/README.md (measured on an H100), computing in
float64 with plain math, so every result is compared against float64 attention.
The ops themselves are checked by tests/test_gpu.py where a GPU is present.
"""

from __future__ import annotations

import inspect
import os
import sys
import types

import pytest
import torch

from ringx import kernels
from ringx.kernels import KERNELS, DeviceInfo, preference, select_kernel
from tests.reference import full_attention

CPU = DeviceInfo("cpu", "cpu")
H100 = DeviceInfo("cuda", "nvidia", (9, 0), "NVIDIA H100 80GB HBM3", 91900)
A100 = DeviceInfo("cuda", "nvidia", (8, 0), "NVIDIA A100-SXM4-80GB", 90100)
L40 = DeviceInfo("cuda", "nvidia", (8, 9), "NVIDIA L40S", 90100)
A100_CUDNN8 = DeviceInfo("cuda", "nvidia", (8, 0), "NVIDIA A100-SXM4-80GB", 8907)
V100 = DeviceInfo("cuda", "nvidia", (7, 0), "Tesla V100-SXM2-32GB", 90100)
MI250X = DeviceInfo("cuda", "amd", (0, 0), "gfx90a:sramecc+:xnack-")
GPU = torch.device("cuda", 0)  # a device object only: nothing runs on it here


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be a given machine with given optional packages importable."""
    def use(info: DeviceInfo, importable: tuple[str, ...] = ()) -> None:
        monkeypatch.setattr(kernels.machine, "device_info", lambda device: info)
        monkeypatch.setattr(kernels.machine, "optional_module",
                            lambda name: types.ModuleType(name) if name in importable else None)
        kernels.clear_cache()

    yield use
    kernels.clear_cache()  # the choices made under the fake machine must not outlive it


BF16, FP16, FP32, FP64 = torch.bfloat16, torch.float16, torch.float32, torch.float64


@pytest.mark.parametrize("info,dtype,head_dim,importable,expected", [
    (H100, BF16, 128, ("flash_attn_interface", "flash_attn"), "flash-attn3"),
    (H100, BF16, 128, ("flash_attn",), "torch-cudnn"),
    (H100, FP16, 256, (), "torch-cudnn"),  # head_dim 256 accepted by cuDNN on Hopper (measured)
    (A100, FP16, 128, ("flash_attn_interface",), "torch-cudnn"),  # flash-attn 3 is chosen on Hopper only
    (A100, BF16, 256, ("flash_attn",), "flash-attn"),  # cuDNN up to 128 before Hopper
    (A100, BF16, 256, (), "torch-cuda"),
    (L40, BF16, 64, (), "torch-cudnn"),
    (A100_CUDNN8, BF16, 128, (), "torch-cuda"),  # the cuDNN op needs cuDNN 9
    (V100, FP16, 64, ("flash_attn",), "torch-efficient"),  # flash kernels need sm80
    (V100, BF16, 64, (), "reference"),  # no bf16 before sm80
    (H100, FP32, 128, ("flash_attn_interface",), "torch-efficient"),
    (H100, FP32, 6, (), "reference"),  # the efficient op wants head_dim a multiple of 4 in fp32
    (H100, FP64, 128, (), "reference"),
    (MI250X, BF16, 128, ("flash_attn",), "flash-attn"),
    (MI250X, FP16, 128, (), "torch-cuda"),
    (MI250X, FP32, 128, (), "reference"),
    (CPU, FP32, 64, ("flash_attn",), "torch-cpu"),
    (CPU, FP64, 64, (), "torch-cpu"),
    (CPU, BF16, 64, (), "torch-cpu"),
])
def test_automatic_choice_follows_the_documented_preference(machine, info, dtype, head_dim, importable, expected):
    machine(info, importable)
    device = torch.device("cpu") if info.vendor == "cpu" else GPU
    assert select_kernel(device, dtype, head_dim=head_dim).name == expected
    order = preference(info, dtype)
    assert expected in order and order[-1] == "reference"


def test_forcing_a_kernel_the_machine_cannot_run_says_what_can(machine):
    machine(MI250X)
    assert select_kernel(GPU, FP32, "torch-efficient").name == "torch-efficient"  # allowed when forced
    with pytest.raises(ValueError, match="'torch-cudnn' does not run torch.bfloat16, head_dim 128 on cuda; "
                                         "usable here: torch-cuda, torch-efficient, reference"):
        select_kernel(GPU, BF16, "torch-cudnn", head_dim=128)


def test_cpu_choice_is_unchanged_on_the_real_machine():
    for dt in (FP64, FP32, BF16, FP16):
        assert select_kernel(torch.device("cpu"), dt).name == "torch-cpu"
        assert select_kernel(torch.device("cpu"), dt, head_dim=64).name == "torch-cpu"
    assert KERNELS["torch-cpu"].version() == f"torch {torch.__version__}"
    assert KERNELS["torch-cudnn"].version().startswith(f"torch {torch.__version__}, cuDNN")


# --- fake ops, bound by the real schema -------------------------------------------------------------------


def schema_op(name: str, impl):
    """A stand-in for ``torch.ops.aten.<name>`` that binds its arguments as the real op's schema does."""
    schema = getattr(torch.ops.aten, name).default._schema
    params = [inspect.Parameter(a.name, inspect.Parameter.KEYWORD_ONLY if a.kwarg_only else
                                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=a.default_value if a.has_default_value() else inspect.Parameter.empty)
              for a in schema.arguments]
    sig = inspect.Signature(params)

    def op(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return impl(**bound.arguments)

    return op


REF = kernels.ReferenceKernel()


def _bshd(x):
    return x.transpose(1, 2)


def cudnn_fwd(query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, return_debug_mask, scale):
    assert attn_bias is None and compute_log_sumexp and dropout_p == 0.0
    out, lse = REF.forward(_bshd(query), _bshd(key), _bshd(value), is_causal, scale)  # native GQA
    z = torch.zeros(1, dtype=torch.int64)
    return _bshd(out), lse.unsqueeze(-1), None, None, query.shape[2], key.shape[2], z, z, None  # lse (B, H, S, 1)


def cudnn_bwd(grad_out, query, key, value, out, logsumexp, philox_seed, philox_offset, attn_bias, cum_seq_q,
              cum_seq_k, max_q, max_k, dropout_p, is_causal, scale):
    assert logsumexp.shape == (*query.shape[:3], 1), "cuDNN wants its own (B, H, S, 1) LSE back"
    assert attn_bias is None and cum_seq_q is None and cum_seq_k is None and dropout_p == 0.0
    assert (max_q, max_k) == (query.shape[2], key.shape[2])
    dq, dk, dv = REF.backward(_bshd(grad_out), _bshd(query), _bshd(key), _bshd(value), _bshd(out),
                              logsumexp[..., 0], is_causal, scale)
    return _bshd(dq), _bshd(dk), _bshd(dv)  # dK/dV with K/V's own head count


def efficient_fwd(query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, scale):
    assert key.shape[1] == query.shape[1], "the efficient op refuses fewer K/V heads"
    out, lse = REF.forward(_bshd(query), _bshd(key), _bshd(value), is_causal, scale)
    s = lse.shape[-1]
    padded = torch.full((*lse.shape[:2], -(-s // 32) * 32), float("nan"), dtype=lse.dtype)  # junk past S
    padded[..., :s] = lse
    z = torch.zeros((), dtype=torch.int64)
    return _bshd(out), padded, z, z


def efficient_bwd(grad_out_, query, key, value, attn_bias, out, logsumexp, philox_seed, philox_offset, dropout_p,
                  grad_input_mask, is_causal, scale):
    assert key.shape[1] == query.shape[1] and attn_bias is None and list(grad_input_mask) == [True] * 3 + [False]
    s = query.shape[2]
    assert logsumexp.shape[-1] % 32 == 0 and logsumexp.shape[-1] >= s, "the backward reads a padded LSE"
    dq, dk, dv = REF.backward(_bshd(grad_out_), _bshd(query), _bshd(key), _bshd(value), _bshd(out),
                              logsumexp[..., :s], is_causal, scale)
    return _bshd(dq), _bshd(dk), _bshd(dv), None


SEEN_ZEROS: list = []


def flash_fwd(query, key, value, dropout_p, is_causal, return_debug_mask, scale):
    assert key.shape[1] == query.shape[1]
    out, lse = REF.forward(_bshd(query), _bshd(key), _bshd(value), is_causal, scale)
    return _bshd(out), lse, None, None, query.shape[2], key.shape[2], None, None, None


def flash_bwd(grad_out, query, key, value, out, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p,
              is_causal, philox_seed, philox_offset, scale):
    SEEN_ZEROS.append((philox_seed, philox_offset))
    dq, dk, dv = REF.backward(_bshd(grad_out), _bshd(query), _bshd(key), _bshd(value), _bshd(out), logsumexp,
                              is_causal, scale)
    return _bshd(dq), _bshd(dk), _bshd(dv)


@pytest.fixture
def fake_ops(monkeypatch):
    for name, impl in (("_scaled_dot_product_cudnn_attention", cudnn_fwd),
                       ("_scaled_dot_product_cudnn_attention_backward", cudnn_bwd),
                       ("_scaled_dot_product_efficient_attention", efficient_fwd),
                       ("_scaled_dot_product_efficient_attention_backward", efficient_bwd),
                       ("_scaled_dot_product_flash_attention", flash_fwd),
                       ("_scaled_dot_product_flash_attention_backward", flash_bwd)):
        monkeypatch.setattr(torch.ops.aten, name, schema_op(name, impl))


def _check_against_float64(kern, causal: bool, kv_heads: int, seq: int = 40, tol: float = 1e-12):
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(2), "little"))
    q = torch.randn(2, seq, 4, 16, generator=g, dtype=FP64)
    k, v = (torch.randn(2, seq, kv_heads, 16, generator=g, dtype=FP64) for _ in range(2))
    dout = torch.randn_like(q)
    want = full_attention(q, k, v, dout, causal)
    out, lse = kern.forward(q, k, v, causal, 16**-0.5)
    got = (out, lse, *kern.backward(dout, q, k, v, out, lse, causal, 16**-0.5))
    for name, x, w in zip(("out", "lse", "dq", "dk", "dv"), got, want):
        assert x.shape == w.shape, name
        assert (x.double() - w).abs().max() <= tol * max(1.0, w.abs().max().item()), name


@pytest.mark.parametrize("name", ["torch-cudnn", "torch-efficient", "torch-cuda"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_torch_gpu_kernel_wrappers_are_exact_around_the_documented_ops(fake_ops, name, causal, kv_heads):
    _check_against_float64(KERNELS[name], causal, kv_heads, seq=40)  # 40: the efficient LSE is padded to 64


def test_efficient_lse_is_sliced_and_padded_back():
    lse = torch.arange(2 * 3 * 64, dtype=FP32).view(2, 3, 64)
    assert kernels.unpad_lse(lse, 40).shape == (2, 3, 40) and kernels.unpad_lse(lse, 40).data_ptr() == lse.data_ptr()
    assert kernels.unpad_lse(lse, 64) is lse
    padded = kernels.pad_lse(lse[..., :40])
    assert padded.shape == (2, 3, 64) and torch.equal(padded[..., :40], lse[..., :40])
    assert kernels.pad_lse(lse) is lse


def test_heads_expand_and_fold_back_as_gqa_gradients():
    x = torch.randn(2, 5, 3, 4, dtype=FP64)
    e = kernels.expand_heads(x, 6)
    assert torch.equal(e[:, :, 0::2], x) and torch.equal(e[:, :, 1::2], x)  # Q heads 2j, 2j+1 share K/V head j
    assert kernels.expand_heads(x, 3) is x
    assert torch.equal(kernels.fold_heads(e, 3), 2 * x)
    assert kernels.fold_heads(e.transpose(0, 1).contiguous().transpose(0, 1), 3).shape == x.shape  # any strides


def test_flash_op_philox_zero_is_made_once_per_device(fake_ops):
    SEEN_ZEROS.clear()
    kern = KERNELS["torch-cuda"]
    q = torch.randn(1, 8, 2, 16, dtype=FP64)
    for _ in range(3):
        out, lse = kern.forward(q, q, q, False, 0.25)
        kern.backward(q, q, q, q, out, lse, False, 0.25)
    assert len({id(t) for pair in SEEN_ZEROS for t in pair}) == 1


# --- flash-attn 2 and 3: versions of the private interface ------------------------------------------------


def _fa_math(q, k, v, causal, scale):
    return REF.forward(q, k, v, causal, scale)


def _fa_grads(dout, q, k, v, out, lse, causal, scale, dq, dk, dv):
    for buf, g in zip((dq, dk, dv), REF.backward(dout, q, k, v, out, lse, causal, scale)):
        buf.copy_(g)


class CustomOp:
    """Like torch.library.custom_op's wrapper: a (*args, **kwargs) callable with the function inside."""

    def __init__(self, fn):
        self._init_fn = fn

    def __call__(self, *args, **kwargs):
        return self._init_fn(*args, **kwargs)


def fa3_new_fwd(q, k, v, k_new=None, v_new=None, qv=None, out_=None, cu_seqlens_q=None, cu_seqlens_k=None,
                cu_seqlens_k_new=None, seqused_q=None, seqused_k=None, max_seqlen_q=None, max_seqlen_k=None,
                page_table=None, kv_batch_idx=None, leftpad_k=None, rotary_cos=None, rotary_sin=None,
                seqlens_rotary=None, q_descale=None, k_descale=None, v_descale=None, softmax_scale=None,
                causal=False, window_size_left=-1, window_size_right=-1, attention_chunk=0, softcap=0.0,
                rotary_interleaved=True, scheduler_metadata=None, num_splits=1, pack_gqa=None, sm_margin=0):
    assert (window_size_left, window_size_right, softcap, k_new) == (-1, -1, 0.0, None)
    out, lse = _fa_math(q, k, v, causal, softmax_scale)
    return out, lse, None, None


def fa3_new_bwd(dout, q, k, v, out, softmax_lse, cu_seqlens_q=None, cu_seqlens_k=None, sequed_q=None,
                sequed_k=None, max_seqlen_q=None, max_seqlen_k=None, dq=None, dk=None, dv=None, softmax_scale=None,
                is_causal=False, window_size_left=-1, window_size_right=-1, softcap=0.0, deterministic=False,
                sm_margin=0):
    _fa_grads(dout, q, k, v, out, softmax_lse, is_causal, softmax_scale, dq, dk, dv)


def fa3_mid_fwd(q, k, v, k_new, v_new, qv, out, cu_seqlens_q, cu_seqlens_k, cu_seqlens_k_new, seqused_q, seqused_k,
                max_seqlen_q, max_seqlen_k, page_table, kv_batch_idx, leftpad_k, rotary_cos, rotary_sin,
                seqlens_rotary, q_descale, k_descale, v_descale, softmax_scale, causal, window_size=(-1, -1),
                softcap=0.0, rotary_interleaved=True, num_splits=1, pack_gqa=None, sm_margin=0):
    assert out is None and window_size == (-1, -1)
    o, lse = _fa_math(q, k, v, causal, softmax_scale)
    return o, lse, None, None


def fa3_mid_bwd(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, sequed_q, sequed_k, max_seqlen_q,
                max_seqlen_k, dq, dk, dv, softmax_scale, causal, window_size=(-1, -1), softcap=0.0,
                deterministic=False, sm_margin=0):
    _fa_grads(dout, q, k, v, out, softmax_lse, causal, softmax_scale, dq, dk, dv)


def fa3_old_fwd(q, k, v, softmax_scale, causal, window_size, descale_q=None, descale_k=None, descale_v=None):
    out, lse = _fa_math(q, k, v, causal, softmax_scale)
    return out, q, k, v, out, lse, None  # (out, q, k, v, out_padded, softmax_lse, S_dmask)


def fa3_old_bwd(dout, q, k, v, out, softmax_lse, dq, dk, dv, softmax_scale, causal, window_size, deterministic=False):
    _fa_grads(dout, q, k, v, out, softmax_lse, causal, softmax_scale, dq, dk, dv)


def fa2_27_fwd(q, k, v, dropout_p, softmax_scale, causal, window_size_left, window_size_right, softcap,
               alibi_slopes, return_softmax):
    assert dropout_p == 0.0 and not return_softmax
    out, lse = _fa_math(q, k, v, causal, softmax_scale)
    return out, lse, None, None


def fa2_27_bwd(dout, q, k, v, out, softmax_lse, dq, dk, dv, dropout_p, softmax_scale, causal, window_size_left,
               window_size_right, softcap, alibi_slopes, deterministic, rng_state=None):
    _fa_grads(dout, q, k, v, out, softmax_lse, causal, softmax_scale, dq, dk, dv)


def fa2_26_fwd(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, return_softmax):
    out, lse = _fa_math(q, k, v, causal, softmax_scale)
    return out, q, k, v, out, lse, None, None  # 8 values, LSE sixth


def fa2_26_bwd(dout, q, k, v, out, softmax_lse, dq, dk, dv, dropout_p, softmax_scale, causal, window_size, softcap,
               alibi_slopes, deterministic, rng_state=None):
    _fa_grads(dout, q, k, v, out, softmax_lse, causal, softmax_scale, dq, dk, dv)


@pytest.mark.parametrize("fwd,bwd", [(CustomOp(fa3_new_fwd), CustomOp(fa3_new_bwd)), (fa3_mid_fwd, fa3_mid_bwd),
                                     (fa3_old_fwd, fa3_old_bwd)], ids=["fa3-2025", "fa3-early2025", "fa3-2024"])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn3_adapts_to_each_interface_version(monkeypatch, fwd, bwd, causal):
    mod = types.ModuleType("flash_attn_interface")
    mod._flash_attn_forward, mod._flash_attn_backward = fwd, bwd
    monkeypatch.setattr(kernels.machine, "optional_module",
                        lambda name: mod if name == "flash_attn_interface" else None)
    _check_against_float64(KERNELS["flash-attn3"], causal, kv_heads=2)


@pytest.mark.parametrize("fwd,bwd", [(CustomOp(fa2_27_fwd), CustomOp(fa2_27_bwd)), (fa2_26_fwd, fa2_26_bwd)],
                         ids=["fa2.7-custom-op", "fa2.6"])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn2_adapts_to_each_interface_version(monkeypatch, fwd, bwd, causal):
    iface = types.ModuleType("flash_attn.flash_attn_interface")
    iface._flash_attn_forward, iface._flash_attn_backward = fwd, bwd
    pkg = types.ModuleType("flash_attn")
    pkg.flash_attn_interface = iface
    monkeypatch.setitem(sys.modules, "flash_attn", pkg)
    monkeypatch.setitem(sys.modules, "flash_attn.flash_attn_interface", iface)
    _check_against_float64(KERNELS["flash-attn"], causal, kv_heads=1)
