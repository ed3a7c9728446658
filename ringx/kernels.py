"""Local attention kernels behind one interface.

Every kernel works on (batch, seq, heads, head_dim) tensors, lets K/V have
fewer heads than Q (GQA), and returns ``(out, lse)`` with ``lse`` shaped
(batch, heads, seq) in the accumulation dtype. ``causal`` always means a
square block whose row i sees keys 0..i: the masking plan never asks for
anything else, so top-left and bottom-right alignment cannot disagree.

The backward takes the *global* ``out`` and ``lse`` of the query rows, which
makes each block's gradient exact on its own (as flash-attention does).

Masks other than full/causal reach a kernel as a *band* block (``band=(lo, hi)``:
row a sees key b iff lo <= a - b <= hi; see :mod:`ringx.mask`). ``torch-cpu``
passes it as an additive mask of q's dtype, ``reference`` as a boolean mask,
``torch-cudnn`` and ``torch-efficient`` as ``attn_bias``, ``flash-attn``/``flash-attn3``
as ``window_size`` where the band is one (:func:`flash_window`), ``torch-flex`` as a
FlexAttention ``BlockMask``; the others fall back (:func:`band_route`, a pure rule).
A row that sees no key of its block comes out as out 0 and LSE -inf, never NaN.
flash-attn's varlen functions can take many blocks of one K/V buffer in one call
(:func:`varlen_calls`, :func:`varlen_forward`, :func:`varlen_backward`). Only the CPU,
reference and (on CPU) FlexAttention band paths have run.

Kernels:

====================  =====================================================  ==============================
name                  what it calls                                          runs on
====================  =====================================================  ==============================
``flash-attn3``       ``flash_attn_interface`` (flash-attention's Hopper     NVIDIA sm80+ (chosen on sm90),
                      build), native GQA                                     fp16/bf16
``torch-cudnn``       ``aten._scaled_dot_product_cudnn_attention``, native   NVIDIA sm80+, cuDNN 9, fp16/bf16
                      GQA
``flash-attn``        the ``flash_attn`` package (2.x; also its ROCm build)  NVIDIA sm80+ or ROCm, fp16/bf16
``torch-cuda``        ``aten._scaled_dot_product_flash_attention`` (on ROCm  NVIDIA sm80+ or ROCm, fp16/bf16
                      this is AOTriton); K/V heads expanded per block
``torch-efficient``   ``aten._scaled_dot_product_efficient_attention``;      NVIDIA (ROCm only when forced),
                      O(S) memory; K/V heads expanded per block              fp32 (and fp16/bf16)
``torch-flex``        ``torch.nn.attention.flex_attention`` with a           NVIDIA sm80+ (compiled), fp16/bf16/
                      ``BlockMask``, native GQA; chosen only when named      fp32; CPU (eager) fp32/fp64
``torch-cpu``         ``aten._scaled_dot_product_flash_attention_for_cpu``   CPU, every float dtype
``reference``         plain torch math, O(Sq*Sk) memory                      anywhere, any float dtype
====================  =====================================================  ==============================

What has run where, on which hardware: docs/status.md.

The automatic choice (:func:`select_kernel`) takes the first kernel of
:func:`preference` that runs the device, dtype and head_dim.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
HALF = (torch.float16, torch.bfloat16)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half types, the input dtype otherwise."""
    return torch.float32 if dtype in HALF else dtype


@dataclass(frozen=True)
class DeviceInfo:
    """What the kernel choice depends on, probed once per device."""

    type: str  # torch device type: "cpu", "cuda" (NVIDIA and ROCm alike), ...
    vendor: str  # "cpu", "nvidia", "amd" or "other"
    capability: tuple[int, int] = (0, 0)  # CUDA compute capability on NVIDIA, (0, 0) elsewhere
    name: str = ""  # device name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3", "gfx90a")
    cudnn: int = 0  # cuDNN version as torch reports it (e.g. 91900), 0 when absent


@functools.cache
def _probe(device_type: str, index: int | None) -> DeviceInfo:
    if device_type == "cpu":
        return DeviceInfo("cpu", "cpu")
    if device_type != "cuda":
        return DeviceInfo(device_type, "other")
    props = torch.cuda.get_device_properties(index)
    if torch.version.hip is not None:
        return DeviceInfo("cuda", "amd", (0, 0), getattr(props, "gcnArchName", "") or props.name)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 0
    return DeviceInfo("cuda", "nvidia", (props.major, props.minor), props.name, cudnn or 0)


def device_info(device: torch.device) -> DeviceInfo:
    """The :class:`DeviceInfo` of ``device`` (tests replace this function to try other machines)."""
    index = device.index
    if device.type == "cuda" and index is None:
        index = torch.cuda.current_device()
    return _probe(device.type, index)


@functools.cache
def _module(name: str):
    """The module if it imports here, else None (a GPU build may fail to load on the wrong machine)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - ImportError, OSError (missing .so), RuntimeError (no GPU) alike
        return None


def _dist_version(*names: str) -> str | None:
    for n in names:
        try:
            return importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _torch_version() -> str:
    return f"torch {torch.__version__}"


def _gpu_runtime() -> str:
    if torch.version.hip is not None:
        return f"HIP {torch.version.hip}"
    return f"CUDA {torch.version.cuda}"


class Kernel(Protocol):
    name: str

    def supports(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None, *,
                 named: bool = False) -> bool: ...

    def version(self) -> str: ...

    def forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, *,
                band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]: ...

    def backward(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                 causal: bool, scale: float, *,
                 band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]: ...


class _Base:
    """``supports`` from a pure rule on :class:`DeviceInfo`, so the rules can be tested without the hardware."""

    name = ""
    named_only_on: tuple[str, ...] = ()  # device types where it runs only when asked for by name (too slow to list)

    def supports(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None, *,
                 named: bool = False) -> bool:
        """Does it run here; ``named``: when asked for by name (lists of what runs here leave out
        ``named_only_on`` devices)."""
        info = device_info(device)
        if not named and info.type in self.named_only_on:
            return False
        return self.runs_on(info, dtype, head_dim)

    def runs_on(self, info: DeviceInfo, dtype: torch.dtype, head_dim: int | None) -> bool:
        raise NotImplementedError

    def version(self) -> str:
        """The library that does the work and its version (e.g. "torch 2.13.0, cuDNN 91900"); asked once."""
        v = self.__dict__.get("_version")
        if v is None:
            v = self._version = self.describe()
        return v

    def describe(self) -> str:
        return _torch_version()

    def for_band(self, q: Tensor, sk: int, band: tuple[int, int]) -> Kernel:
        """The kernel that computes a band block of ``q`` against ``sk`` keys: this one, or its fallback."""
        name = band_route(self.name, device_info(q.device), q.dtype, q.shape[-1], q.shape[1], sk, band)
        return self if name == self.name else KERNELS[name]

    # A whole plan (the blocks of one query buffer against one K/V buffer). Kernels with a batched path (flash-attn's
    # varlen) override these; ringx.blocks still calls forward/backward block by block.
    def forward_plan(self, q: Tensor, k: Tensor, v: Tensor, plan, scale: float) -> list[tuple]:
        """``(block, out, lse)`` for every block of ``plan`` (blocks with q0, q1, k0, k1, causal, band)."""
        res = []
        for b in plan:
            kw = {} if b.band is None else {"band": b.band}
            out, lse = self.forward(q[:, b.q0:b.q1], k[:, b.k0:b.k1], v[:, b.k0:b.k1], b.causal, scale, **kw)
            res.append((b, out, lse))
        return res

    def backward_plan(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, plan,
                      scale: float) -> list[tuple]:
        """``(block, dq, dk, dv)`` for every block of ``plan``; ``out``/``lse`` are the rows' global results."""
        res = []
        for b in plan:
            kw = {} if b.band is None else {"band": b.band}
            rows = slice(b.q0, b.q1)
            grads = self.backward(dout[:, rows], q[:, rows], k[:, b.k0:b.k1], v[:, b.k0:b.k1], out[:, rows],
                                  lse[:, :, rows], b.causal, scale, **kw)
            res.append((b, *grads))
        return res


# How each kernel computes a band block (docs/masks.md's kernel table is checked against these).
BAND_NATIVE = ("reference", "torch-cpu", "torch-cudnn", "torch-efficient", "torch-flex")  # any band
WINDOW_NATIVE = ("flash-attn", "flash-attn3")  # a band that is a bottom-right window (flash_window)
VARLEN = ("flash-attn",)  # many blocks of one K/V buffer in one call (varlen_calls, varlen_forward/backward)
BAND_FALLBACK = ("torch-cudnn", "torch-efficient", "reference")  # for kernels without masks, first that runs


def flash_window(sq: int, sk: int, band: tuple[int, int]) -> tuple[int, int] | None:
    """flash-attn's ``window_size=(left, right)`` for a band block, or None when the band is not one.

    flash-attn aligns windows bottom-right: query a sees key b iff a + sk - sq - left <= b <= a + sk - sq + right;
    the band says a - hi <= b <= a - lo."""
    lo, hi = band
    left, right = hi + sk - sq, -lo - (sk - sq)
    return (left, right) if left >= 0 and right >= 0 else None


def band_route(kernel: str, info: DeviceInfo, dtype: torch.dtype, head_dim: int | None, sq: int, sk: int,
               band: tuple[int, int]) -> str:
    """The kernel that computes a band block for ``kernel`` (a pure rule on the device facts)."""
    if kernel in BAND_NATIVE:
        return kernel
    if kernel in WINDOW_NATIVE and flash_window(sq, sk, band) is not None:
        return kernel
    usual = preference(info, dtype)  # only kernels this device would choose anyway (efficient is NVIDIA's)
    return next(n for n in BAND_FALLBACK if n in usual and KERNELS[n].runs_on(info, dtype, head_dim))


@functools.lru_cache(maxsize=256)
def band_bias(sq: int, sk: int, lo: int, hi: int, dtype: torch.dtype, device: torch.device,
              align: int = 1) -> Tensor:
    """Additive (sq, sk) mask of a band block, 0 where visible and -inf elsewhere, in ``dtype`` (the CPU op wants
    q's dtype). ``align``: the row stride is padded to a multiple of it (the efficient op's bias alignment)."""
    d = torch.arange(sq, device=device).unsqueeze(1) - torch.arange(sk, device=device).unsqueeze(0)
    width = -(-sk // align) * align
    bias = torch.full((sq, width), float("-inf"), dtype=dtype, device=device)
    bias[:, :sk].masked_fill_((d >= lo) & (d <= hi), 0.0)
    return bias[:, :sk]


def _seeing(sq: int, sk: int, band: tuple[int, int]) -> tuple[int, int]:
    """[a0, a1): the rows of a band block that see at least one key."""
    lo, hi = band
    return max(0, min(sq, lo)), max(0, min(sq, sk + hi))


def blank_rows(out: Tensor, lse: Tensor, sk: int, band: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Rows of a band block that see no key set to out 0 and LSE -inf (the CPU op gives LSE 0, others NaN)."""
    sq = out.shape[1]
    a0, a1 = _seeing(sq, sk, band)
    if a0 == 0 and a1 == sq:
        return out, lse
    for lo, hi in ((0, a0), (a1, sq)):
        if hi > lo:
            out[:, lo:hi] = 0
            lse[..., lo:hi] = float("-inf")
    return out, lse


def _square(q: Tensor, k: Tensor, causal: bool) -> None:
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal blocks must be square, got {q.shape[1]} queries x {k.shape[1]} keys")


def _bhsd(x: Tensor) -> Tensor:
    return x.transpose(1, 2)


def _hd_ok(head_dim: int | None, most: int = 256, multiple: int = 8) -> bool:
    return head_dim is None or (0 < head_dim <= most and head_dim % multiple == 0)


def _sm80(info: DeviceInfo) -> bool:
    return info.vendor == "nvidia" and info.capability >= (8, 0)


@functools.cache
def _zero(device: torch.device) -> Tensor:
    """An int64 zero for the ops' unused philox seed/offset: made once per device, not per block."""
    return torch.zeros((), dtype=torch.int64, device=device)


class ReferenceKernel(_Base):
    """Plain torch math; any device and dtype. Slow, memory O(Sq*Sk), exact."""

    name = "reference"

    def runs_on(self, info, dtype, head_dim):
        return dtype.is_floating_point

    def _scores(self, q: Tensor, k: Tensor, causal: bool, scale: float, band=None) -> Tensor:
        b, sq, h, d = q.shape
        hk = k.shape[2]
        qg = q.to(acc_dtype(q.dtype)).view(b, sq, hk, h // hk, d)
        s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k.to(qg.dtype)) * scale
        if causal:
            mask = torch.ones(sq, k.shape[1], dtype=torch.bool, device=q.device).triu_(1)
            s = s.masked_fill(mask, float("-inf"))
        if band is not None:
            from .mask import band_visible

            s = s.masked_fill(~band_visible(*band, sq, k.shape[1], q.device), float("-inf"))
        return s  # (b, hk, g, sq, sk)

    def forward(self, q, k, v, causal, scale, *, band=None):
        _square(q, k, causal)
        b, sq, h, d = q.shape
        s = self._scores(q, k, causal, scale, band)
        lse = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse.masked_fill(torch.isneginf(lse), 0.0).unsqueeze(-1))  # a row that sees nothing: 0
        out = torch.einsum("bhgqk,bkhd->bqhgd", p, v.to(p.dtype)).reshape(b, sq, h, d)
        return out.to(q.dtype), lse.reshape(b, h, sq)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        b, sq, h, d = q.shape
        hk = k.shape[2]
        g = h // hk
        s = self._scores(q, k, causal, scale, band)
        lse = lse.masked_fill(torch.isneginf(lse), 0.0) if band is not None else lse
        p = torch.exp(s - lse.reshape(b, hk, g, sq).unsqueeze(-1).to(s.dtype))
        do = dout.to(s.dtype).reshape(b, sq, hk, g, d)
        o = out.to(s.dtype).reshape(b, sq, hk, g, d)
        dv = torch.einsum("bhgqk,bqhgd->bkhd", p, do)
        dp = torch.einsum("bqhgd,bkhd->bhgqk", do, v.to(s.dtype))
        delta = (do * o).sum(-1).permute(0, 2, 3, 1).unsqueeze(-1)  # (b, hk, g, sq, 1)
        ds = p * (dp - delta) * scale
        dq = torch.einsum("bhgqk,bkhd->bqhgd", ds, k.to(s.dtype)).reshape(b, sq, h, d)
        dk = torch.einsum("bhgqk,bqhgd->bkhd", ds, q.to(s.dtype).reshape(b, sq, hk, g, d))
        return dq, dk, dv


class TorchCpuKernel(_Base):
    """torch's fused flash-attention for CPU (``aten._scaled_dot_product_flash_attention_for_cpu``)."""

    name = "torch-cpu"

    def runs_on(self, info, dtype, head_dim):
        return info.type == "cpu" and dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)

    def forward(self, q, k, v, causal, scale, *, band=None):
        _square(q, k, causal)
        if band is not None:  # an additive mask of q's dtype (a bool mask is refused)
            bias = band_bias(q.shape[1], k.shape[1], *band, q.dtype, q.device)
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                _bhsd(q), _bhsd(k), _bhsd(v), 0.0, False, attn_mask=bias, scale=scale)
            return blank_rows(_bhsd(out), lse, k.shape[1], band)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            _bhsd(q), _bhsd(k), _bhsd(v), 0.0, causal, scale=scale)
        return _bhsd(out), lse

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        if band is not None:
            bias = band_bias(q.shape[1], k.shape[1], *band, q.dtype, q.device)
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                _bhsd(dout), _bhsd(q), _bhsd(k), _bhsd(v), _bhsd(out), lse.contiguous(), 0.0, False,
                attn_mask=bias, scale=scale)
            return _bhsd(dq), _bhsd(dk), _bhsd(dv)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            _bhsd(dout), _bhsd(q), _bhsd(k), _bhsd(v), _bhsd(out), lse.contiguous(), 0.0, causal, scale=scale)
        return _bhsd(dq), _bhsd(dk), _bhsd(dv)


def expand_heads(x: Tensor, heads: int) -> Tensor:
    """K/V with their heads repeated up to ``heads`` (each K/V head serves heads/kv_heads Q heads in turn)."""
    return x if x.shape[2] == heads else x.repeat_interleave(heads // x.shape[2], dim=2)


def fold_heads(dx: Tensor, heads: int) -> Tensor:
    """The gradient of :func:`expand_heads`: sum each group of repeated heads back to one of ``heads``."""
    b, s, h, d = dx.shape
    return dx if h == heads else dx.reshape(b, s, heads, h // heads, d).sum(3)


class TorchCudaKernel(_Base):
    """torch's fused flash-attention op on CUDA, and on ROCm (where torch builds it with AOTriton).

    K/V heads are expanded locally for GQA (after communication, never before).
    The ROCm path is written from the documented op and has not run here.
    """

    name = "torch-cuda"

    def runs_on(self, info, dtype, head_dim):
        return (_sm80(info) or info.vendor == "amd") and dtype in HALF and _hd_ok(head_dim)

    def describe(self) -> str:
        aot = " (AOTriton)" if torch.version.hip is not None else ""
        return f"{_torch_version()}, {_gpu_runtime()}{aot}"

    def forward(self, q, k, v, causal, scale, *, band=None):
        if band is not None:
            return self.for_band(q, k.shape[1], band).forward(q, k, v, False, scale, band=band)
        _square(q, k, causal)
        h = q.shape[2]
        res = torch.ops.aten._scaled_dot_product_flash_attention(
            _bhsd(q), _bhsd(expand_heads(k, h)), _bhsd(expand_heads(v, h)), 0.0, causal, False, scale=scale)
        return _bhsd(res[0]), res[1]

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        if band is not None:
            return self.for_band(q, k.shape[1], band).backward(dout, q, k, v, out, lse, False, scale, band=band)
        h, hk = q.shape[2], k.shape[2]
        ke, ve = expand_heads(k, h), expand_heads(v, h)
        sq, sk = q.shape[1], k.shape[1]
        zero = _zero(q.device)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            _bhsd(dout), _bhsd(q), _bhsd(ke), _bhsd(ve), _bhsd(out), lse.contiguous(),
            None, None, sq, sk, 0.0, causal, zero, zero, scale=scale)
        return _bhsd(dq), fold_heads(_bhsd(dk), hk), fold_heads(_bhsd(dv), hk)


class TorchCudnnKernel(_Base):
    """torch's cuDNN attention op (``aten._scaled_dot_product_cudnn_attention``) and its backward.

    Measured as a bare op on one H100 (torch 2.11, cuDNN 9.19): ~2x the flash op's
    throughput in bf16, native GQA (K/V keep their head count, dK/dV come back with
    it), LSE float32 shaped (B, H, S, 1), transposed (B, S, H, D) views accepted.
    Not yet run inside ringx on a GPU.
    """

    name = "torch-cudnn"

    def runs_on(self, info, dtype, head_dim):
        # cuDNN 9 on Ampere and newer; head_dim up to 128, up to 256 from Hopper on (measured 64-256 on H100).
        most = 256 if info.capability >= (9, 0) else 128
        return (_sm80(info) and info.cudnn >= 90000 and dtype in HALF and _hd_ok(head_dim, most)
                and hasattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention"))

    def describe(self) -> str:
        return f"{_torch_version()}, cuDNN {torch.backends.cudnn.version()}"

    def forward(self, q, k, v, causal, scale, *, band=None):
        _square(q, k, causal)
        bias = None if band is None else _bias4(q, k, band)
        res = torch.ops.aten._scaled_dot_product_cudnn_attention(
            _bhsd(q), _bhsd(k), _bhsd(v), bias, True, 0.0, causal, False, scale=scale)
        lse = res[1]
        out, lse = _bhsd(res[0]), (lse[..., 0] if lse.dim() == 4 else lse)  # (B, H, S, 1) -> (B, H, S), a view
        return (out, lse) if band is None else blank_rows(out.clone(), lse.clone(), k.shape[1], band)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        o, do = _bhsd(out), _bhsd(dout)
        if do.stride() != o.stride():  # older cuDNN assumes dO laid out like O
            do = torch.empty_like(o).copy_(do)
        zero = _zero(q.device)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            do, _bhsd(q), _bhsd(k), _bhsd(v), o, lse.contiguous().unsqueeze(-1), zero, zero,
            None if band is None else _bias4(q, k, band), None, None, q.shape[1], k.shape[1], 0.0, causal,
            scale=scale)
        return _bhsd(dq), _bhsd(dk), _bhsd(dv)


LSE_ALIGN = 32  # the efficient-attention op pads its LSE's sequence axis to a multiple of this


class TorchEfficientKernel(_Base):
    """torch's memory-efficient attention op (``aten._scaled_dot_product_efficient_attention``).

    The fp32 kernel on CUDA: O(S) memory, float32 accuracy (measured as a bare op on
    an H100: out 5-7e-7, grads 6e-7 to 1e-6 relative to float64). Its LSE comes back
    padded to a multiple of 32 columns (sliced off here, padded again for the
    backward); it refuses fewer K/V heads, so K/V are expanded locally per block and
    dK/dV folded back. Not yet run inside ringx on a GPU; on ROCm only when forced.
    """

    name = "torch-efficient"

    def runs_on(self, info, dtype, head_dim):
        if dtype not in (torch.float32, *HALF) or info.type != "cuda" or info.vendor not in ("nvidia", "amd"):
            return False
        if info.vendor == "nvidia" and dtype == torch.bfloat16 and info.capability < (8, 0):
            return False
        # The op wants head_dim aligned to 16 bytes.
        return _hd_ok(head_dim, most=1 << 16, multiple=16 // dtype.itemsize)

    def describe(self) -> str:
        return f"{_torch_version()}, {_gpu_runtime()}"

    def forward(self, q, k, v, causal, scale, *, band=None):
        _square(q, k, causal)
        h = q.shape[2]
        bias = None if band is None else _bias4(q, k, band, align=16)
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            _bhsd(q), _bhsd(expand_heads(k, h)), _bhsd(expand_heads(v, h)), bias, True, 0.0, causal,
            scale=scale)[:2]
        out, lse = _bhsd(out), unpad_lse(lse, q.shape[1])
        return (out, lse) if band is None else blank_rows(out.clone(), lse.clone(), k.shape[1], band)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        h, hk = q.shape[2], k.shape[2]
        ke, ve = expand_heads(k, h), expand_heads(v, h)
        zero = _zero(q.device)
        bias = None if band is None else _bias4(q, k, band, align=16)
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            _bhsd(dout), _bhsd(q), _bhsd(ke), _bhsd(ve), bias, _bhsd(out), pad_lse(lse), zero, zero, 0.0,
            [True, True, True, False], causal, scale=scale)
        return _bhsd(dq), fold_heads(_bhsd(dk), hk), fold_heads(_bhsd(dv), hk)


def _bias4(q: Tensor, k: Tensor, band: tuple[int, int], align: int = 1) -> Tensor:
    """The band's additive mask as the (B, H, Sq, Sk) ``attn_bias`` the CUDA ops take (a broadcast view)."""
    b, sq, h, _ = q.shape
    return band_bias(sq, k.shape[1], *band, q.dtype, q.device, align).expand(b, h, sq, k.shape[1])


def unpad_lse(lse: Tensor, seq: int) -> Tensor:
    """The (B, H, seq) LSE from one padded along its last axis (a view, no copy)."""
    return lse if lse.shape[-1] == seq else lse[..., :seq]


def pad_lse(lse: Tensor) -> Tensor:
    """``lse`` (B, H, S) padded with zeros to a multiple of LSE_ALIGN columns, the layout the
    efficient-attention backward reads (its rows past S are never used)."""
    pad = -lse.shape[-1] % LSE_ALIGN
    return F.pad(lse, (0, pad)) if pad else lse


@functools.cache
def _signature(fn) -> inspect.Signature:
    # flash-attn 3 wraps its functions in torch.library.custom_op objects: read the function inside.
    return inspect.signature(getattr(fn, "_init_fn", fn))


def _call_flash(fn, window: tuple[int, int] = (-1, -1), **kw):
    """Call a flash-attn private function of whichever installed version by keyword.

    Versions renamed and added arguments (``window_size`` tuple vs ``window_size_left/right``,
    ``causal`` vs ``is_causal``, ``softcap``, varlen/paged-KV options): pass what this version
    names, and None for any other argument it requires.
    """
    params = _signature(fn).parameters
    if "window_size" in params:
        kw["window_size"] = tuple(window)
    else:
        kw.update(window_size_left=window[0], window_size_right=window[1])
    kw.setdefault("softcap", 0.0)
    kw["is_causal"] = kw["causal"]
    args = {}
    for name, p in params.items():
        if name in kw:
            args[name] = kw[name]
        elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            args[name] = None
    return fn(**args)


def _lse_of(res) -> Tensor:
    # flash-attn 2.6- returned (out, q, k, v, out_padded, lse, S_dmask, rng_state), 2.7+ (out, lse, ...);
    # flash-attn 3's first releases (out, q, k, v, out_padded, lse, S_dmask), later ones (out, lse, ...).
    return res[5] if len(res) >= 7 else res[1]


class FlashAttnKernel(_Base):
    """The ``flash_attn`` package (2.x; GPU, half types); GQA is native.

    The same package name and interface serve NVIDIA and AMD's ROCm build
    (ROCm/flash-attention); the ROCm path is written from that interface and has not run here.
    """

    name = "flash-attn"

    def runs_on(self, info, dtype, head_dim):
        return ((_sm80(info) or info.vendor == "amd") and dtype in HALF and _hd_ok(head_dim)
                and _module("flash_attn") is not None)

    def describe(self) -> str:
        rocm = " (ROCm)" if torch.version.hip is not None else ""
        return f"flash_attn {getattr(_module('flash_attn'), '__version__', '?')}{rocm}"

    def forward_plan(self, q, k, v, plan, scale):
        """One varlen call per (causal, window_size) group of the plan's blocks (:func:`varlen_calls`)."""
        calls, rest = varlen_calls(plan)
        by_rows = {(b.q0, b.q1, b.k0, b.k1): b for b in plan}
        res = [(by_rows[blk], *ol) for c in calls for blk, ol in zip(c.blocks, varlen_forward(q, k, v, c, scale))]
        return res + super().forward_plan(q, k, v, rest, scale)

    def backward_plan(self, dout, q, k, v, out, lse, plan, scale):
        calls, rest = varlen_calls(plan)
        by_rows = {(b.q0, b.q1, b.k0, b.k1): b for b in plan}
        res = [(by_rows[blk], *g) for c in calls
               for blk, g in zip(c.blocks, varlen_backward(dout, q, k, v, out, lse, c, scale))]
        return res + super().backward_plan(dout, q, k, v, out, lse, rest, scale)

    def forward(self, q, k, v, causal, scale, *, band=None):
        from flash_attn.flash_attn_interface import _flash_attn_forward

        if band is not None and self.for_band(q, k.shape[1], band) is not self:
            return self.for_band(q, k.shape[1], band).forward(q, k, v, False, scale, band=band)
        _square(q, k, causal)
        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        res = _call_flash(_flash_attn_forward, win, q=q, k=k, v=v, dropout_p=0.0, softmax_scale=scale,
                          causal=causal, alibi_slopes=None, return_softmax=False)
        if band is not None:  # flash-attn gives a row that sees no key LSE +inf: make it -inf
            return blank_rows(res[0], _lse_of(res), k.shape[1], band)
        return res[0], _lse_of(res)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        from flash_attn.flash_attn_interface import _flash_attn_backward

        if band is not None and self.for_band(q, k.shape[1], band) is not self:
            return self.for_band(q, k.shape[1], band).backward(dout, q, k, v, out, lse, False, scale, band=band)
        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _call_flash(_flash_attn_backward, win, dout=dout.contiguous(), q=q, k=k, v=v, out=out,
                    softmax_lse=lse.contiguous(), dq=dq, dk=dk, dv=dv, dropout_p=0.0, softmax_scale=scale,
                    causal=causal, alibi_slopes=None, deterministic=False, rng_state=None)
        return dq, dk, dv


class FlashAttn3Kernel(_Base):
    """flash-attention 3 (the ``flash_attn_interface`` module of flash-attention's Hopper build); GQA is native.

    Its private ``_flash_attn_forward``/``_flash_attn_backward`` changed between
    releases (positional varlen/paged-KV arguments, ``window_size`` tuple vs
    ``window_size_left/right``, ``causal`` vs ``is_causal``, 7 vs 4 return
    values); they are called by keyword after reading the installed signature.
    Chosen automatically on Hopper (sm90) only. Not yet run inside ringx on a GPU.
    """

    name = "flash-attn3"

    def runs_on(self, info, dtype, head_dim):
        return _sm80(info) and dtype in HALF and _hd_ok(head_dim) and _module("flash_attn_interface") is not None

    def describe(self) -> str:
        v = _dist_version("flash_attn_3", "flash-attn-3", "flashattn-hopper")
        return f"flash_attn_3 {v}" if v else "flash_attn_interface (version unknown)"

    def forward(self, q, k, v, causal, scale, *, band=None):
        if band is not None and self.for_band(q, k.shape[1], band) is not self:
            return self.for_band(q, k.shape[1], band).forward(q, k, v, False, scale, band=band)
        _square(q, k, causal)
        fa3 = _module("flash_attn_interface")
        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        res = _call_flash(fa3._flash_attn_forward, win, q=q, k=k, v=v, softmax_scale=scale, causal=causal)
        if band is not None:  # a row that sees no key: LSE +inf from flash-attn, -inf here
            return blank_rows(res[0], _lse_of(res), k.shape[1], band)
        return res[0], _lse_of(res)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        if band is not None and self.for_band(q, k.shape[1], band) is not self:
            return self.for_band(q, k.shape[1], band).backward(dout, q, k, v, out, lse, False, scale, band=band)
        fa3 = _module("flash_attn_interface")
        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _call_flash(fa3._flash_attn_backward, win, dout=dout.contiguous(), q=q, k=k, v=v, out=out,
                    softmax_lse=lse.contiguous(), dq=dq, dk=dk, dv=dv, softmax_scale=scale, causal=causal,
                    deterministic=False)
        return dq, dk, dv


@functools.cache
def _flex_api():
    """``(flex_attention, create_block_mask, AuxRequest)``, or None when this torch has no FlexAttention."""
    mod = _module("torch.nn.attention.flex_attention")
    if mod is None or not hasattr(mod, "AuxRequest"):
        return None
    return mod.flex_attention, mod.create_block_mask, mod.AuxRequest


@functools.cache
def _flex_fn(device_type: str):
    """FlexAttention compiled on CUDA (the fused Triton kernel); as it is elsewhere (on CPU the unfused math
    path: torch 2.13 refuses ``torch.compile`` with an LSE on CPU, and any backward on CPU)."""
    flex = _flex_api()[0]
    return torch.compile(flex) if device_type == "cuda" else flex


def flex_mask_mod(kind: str, lo: Tensor | None = None, hi: Tensor | None = None):
    """The ``mask_mod`` of a block: ``"causal"`` (row a sees keys b <= a) or ``"band"`` (lo <= a - b <= hi).
    lo/hi are 0-d tensors captured by the closure, so one compiled kernel serves every band."""
    if kind == "causal":
        return lambda b, h, qi, ki: qi >= ki
    return lambda b, h, qi, ki: ((qi - ki) >= lo) & ((qi - ki) <= hi)


@functools.lru_cache(maxsize=256)
def flex_block_mask(sq: int, sk: int, causal: bool, band: tuple[int, int] | None, device: torch.device):
    """The FlexAttention ``BlockMask`` of a block (None for a fully visible one), made once per shape and band."""
    if band is None and not causal:
        return None
    if band is None:
        mod = flex_mask_mod("causal")
    else:
        lo, hi = (torch.tensor(x, dtype=torch.int64, device=device) for x in band)
        mod = flex_mask_mod("band", lo, hi)
    return _flex_api()[1](mod, None, None, sq, sk, device=device)


def reweighted_backward(fwd, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                        lse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A block's exact gradients from a *differentiable* block forward ``fwd(q, k, v) -> (o_b, lse_b)`` and the
    rows' global ``out``/``lse`` (for kernels whose backward only runs through autograd, as FlexAttention's).

    With w = exp(lse_b - lse), the global out is a sum of w * o_b over blocks, so the block's share of the loss
    gradient is grad_out = w * dout and grad_lse = w * (dout . o_b - dout . out): autograd then gives
    P_global = w * P_local in every term, which is what a flash-style backward with the global LSE computes.
    The block's forward is recomputed once (a flash backward recomputes only the scores)."""
    acc = acc_dtype(q.dtype)
    with torch.enable_grad():
        qd, kd, vd = (x.detach().requires_grad_() for x in (q, k, v))
        ob, lb = fwd(qd, kd, vd)  # (B, S, H, D), (B, H, S)
        lb_ = lb.detach().to(acc)
        w = torch.where(torch.isneginf(lb_), 0.0, torch.exp(lb_ - lse.to(acc)))  # a row that sees nothing: 0
        do = dout.to(acc)
        g_out = (w.transpose(1, 2).unsqueeze(-1) * do).to(ob.dtype)
        dots = ((do * ob.detach().to(acc)).sum(-1) - (do * out.to(acc)).sum(-1)).transpose(1, 2)  # (B, H, S)
        g_lse = (w * dots).to(lb.dtype)
        dq, dk, dv = torch.autograd.grad((ob, lb), (qd, kd, vd), (g_out, g_lse))
    return dq, dk, dv


class TorchFlexKernel(_Base):
    """PyTorch's FlexAttention (``torch.nn.attention.flex_attention``) with a ``BlockMask`` per block.

    Compiled on CUDA (Triton; fp16/bf16/fp32); on CPU the unfused eager path (float32/float64,
    slow: for checking). LSE comes back as the natural log (``return_aux=AuxRequest(lse=True)``;
    the log2 of the fused kernel is converted by torch), a row that sees nothing as out 0 and LSE
    -inf. GQA is native (``enable_gqa``). The backward recomputes the block under autograd and
    reweights it by the global LSE (:func:`reweighted_backward`); torch 2.13 has no FlexAttention
    backward on CPU, so there the backward falls back to ``torch-cpu`` (same band, same global
    out/LSE). Chosen only when named (``kernel="torch-flex"``): the CUDA path has not run.
    """

    name = "torch-flex"
    # By name only, everywhere: on CPU it is the unfused math path (for checking); on CUDA it has never run, so no
    # selftest or bench kernels sweep picks it up until a GPU session has measured it.
    named_only_on = ("cpu", "cuda")

    def runs_on(self, info, dtype, head_dim):
        if _flex_api() is None:
            return False
        if info.type == "cpu":
            return dtype in (torch.float32, torch.float64)
        return _sm80(info) and dtype in (*HALF, torch.float32) and _hd_ok(head_dim, multiple=16)

    def _attend(self, q, k, v, causal, scale, band):
        _, _, aux_request = _flex_api()
        sq, sk = q.shape[1], k.shape[1]
        bm = flex_block_mask(sq, sk, causal, band, q.device)
        out, aux = _flex_fn(q.device.type)(_bhsd(q), _bhsd(k), _bhsd(v), block_mask=bm, scale=scale,
                                           enable_gqa=q.shape[2] != k.shape[2], return_aux=aux_request(lse=True))
        return _bhsd(out), aux.lse.to(acc_dtype(q.dtype))

    def forward(self, q, k, v, causal, scale, *, band=None):
        _square(q, k, causal)
        with torch.no_grad():  # some algorithms call kernels on tensors that require grad; the CPU path refuses them
            out, lse = self._attend(q.detach(), k.detach(), v.detach(), causal, scale, band)
        return (out, lse) if band is None else blank_rows(out, lse, k.shape[1], band)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        if q.device.type == "cpu":  # no FlexAttention backward on CPU (torch 2.13)
            return KERNELS["torch-cpu"].backward(dout, q, k, v, out, lse, causal, scale, band=band)
        return reweighted_backward(lambda q_, k_, v_: self._attend(q_, k_, v_, causal, scale, band),
                                   dout, q, k, v, out, lse)


KERNELS: dict[str, Kernel] = {
    k.name: k for k in (FlashAttn3Kernel(), TorchCudnnKernel(), FlashAttnKernel(), TorchCudaKernel(),
                        TorchEfficientKernel(), TorchFlexKernel(), TorchCpuKernel(), ReferenceKernel())
}


# --- flash-attn varlen: many blocks of one K/V buffer in one call ---------------------------------------------------
# A document mask's plan has one block per (query document piece, key document piece): many small blocks. flash-attn's
# varlen functions take them in one call, each block a "sequence" of the packed batch (cu_seqlens), as long as they
# share causal and window_size (flash-attn aligns both bottom-right, per sequence). Written from flash-attn 2.x's
# documented ``flash_attn_varlen_func`` and its ``_flash_attn_varlen_backward``; NOT run (no flash-attn here).


def varlen_window(sq: int, sk: int, causal: bool, band: tuple[int, int] | None) -> tuple[bool, tuple[int, int]] | None:
    """``(causal, window_size)`` that makes flash-attn compute this block (bottom-right aligned), in a normal form so
    that blocks with the same visibility share a key: a side that reaches past the block is -1 (unbounded), and a
    window (-1, 0) is causal. None when the band is no window (the plans trim bands, so every band of theirs is one)."""
    if band is None:
        return (True, (-1, -1)) if causal else (False, (-1, -1))
    win = flash_window(sq, sk, band)
    if win is None:
        return None
    left, right = win
    left = -1 if left >= sk - 1 else left
    right = -1 if right >= sq - 1 else right
    if (left, right) == (-1, 0):
        return True, (-1, -1)
    return False, (left, right)


@dataclass(frozen=True)
class VarlenCall:
    """Blocks (q0, q1, k0, k1) of local rows computed by one varlen call with these ``causal``/``window``."""

    blocks: tuple[tuple[int, int, int, int], ...]
    causal: bool
    window: tuple[int, int]

    @property
    def max_q(self) -> int:
        return max(q1 - q0 for q0, q1, _, _ in self.blocks)

    @property
    def max_k(self) -> int:
        return max(k1 - k0 for _, _, k0, k1 in self.blocks)

    @property
    def total_q(self) -> int:
        return sum(q1 - q0 for q0, q1, _, _ in self.blocks)

    @property
    def total_k(self) -> int:
        return sum(k1 - k0 for _, _, k0, k1 in self.blocks)

    def cu_seqlens(self, batch: int = 1) -> tuple[list[int], list[int]]:
        """(cu_seqlens_q, cu_seqlens_k): offsets of every (batch element, block) sequence in the packed rows,
        batch element major (the packing of :func:`varlen_pack`)."""
        cq, ck = [0], [0]
        for _ in range(batch):
            for q0, q1, k0, k1 in self.blocks:
                cq.append(cq[-1] + q1 - q0)
                ck.append(ck[-1] + k1 - k0)
        return cq, ck


def varlen_calls(plan) -> tuple[tuple[VarlenCall, ...], tuple]:
    """The plan's blocks grouped into varlen calls (one per distinct causal/window, in first-seen order), and the
    blocks no window expresses (to compute one by one). ``plan``: blocks with q0, q1, k0, k1, causal, band."""
    groups: dict[tuple, list] = {}
    rest = []
    for b in plan:
        key = varlen_window(b.q1 - b.q0, b.k1 - b.k0, b.causal, b.band)
        if key is None:
            rest.append(b)
        else:
            groups.setdefault(key, []).append((b.q0, b.q1, b.k0, b.k1))
    return tuple(VarlenCall(tuple(bs), c, w) for (c, w), bs in groups.items()), tuple(rest)


def varlen_pack(x: Tensor, spans: list[tuple[int, int]]) -> Tensor:
    """Rows ``x[:, a:b]`` of every span, packed as flash-attn's varlen layout (batch * total, heads, dim)."""
    parts = torch.cat([x[:, a:b] for a, b in spans], dim=1)
    return parts.reshape(-1, *x.shape[2:])


def varlen_unpack(x: Tensor, batch: int, sizes: list[int]) -> list[Tensor]:
    """The inverse of :func:`varlen_pack`: one (batch, n, heads, dim) view per span."""
    return list(x.view(batch, -1, *x.shape[1:]).split(sizes, dim=1))


def varlen_lse_pack(lse: Tensor, spans: list[tuple[int, int]]) -> Tensor:
    """(B, H, S) rows of every span as the varlen LSE layout (H, batch * total)."""
    parts = torch.cat([lse[:, :, a:b] for a, b in spans], dim=2)  # (B, H, T)
    return parts.permute(1, 0, 2).reshape(lse.shape[1], -1).contiguous()


def varlen_lse_unpack(lse: Tensor, batch: int, sizes: list[int]) -> list[Tensor]:
    """The varlen LSE (H, batch * total) as one (B, H, n) tensor per span."""
    if lse.dim() != 2:
        raise RuntimeError(f"flash-attn varlen returned an LSE of shape {tuple(lse.shape)}; this path expects "
                           "(heads, total_q) (flash-attn >= 2.1)")
    return list(lse.view(lse.shape[0], batch, -1).permute(1, 0, 2).split(sizes, dim=2))


def _varlen_ops():
    """flash-attn's public varlen forward and private varlen backward (the latter takes the global out/LSE)."""
    from flash_attn.flash_attn_interface import _flash_attn_varlen_backward, flash_attn_varlen_func

    return flash_attn_varlen_func, _flash_attn_varlen_backward


def _cu(offsets: list[int], device) -> Tensor:
    return torch.tensor(offsets, dtype=torch.int32, device=device)


def varlen_forward(q: Tensor, k: Tensor, v: Tensor, call: VarlenCall, scale: float) -> list[tuple[Tensor, Tensor]]:
    """``(out, lse)`` of every block of ``call`` (out (B, n, H, D), lse (B, H, n) float32) from one varlen call."""
    fwd, _ = _varlen_ops()
    batch = q.shape[0]
    qs, ks = [(a, b) for a, b, _, _ in call.blocks], [(a, b) for _, _, a, b in call.blocks]
    cq, ck = call.cu_seqlens(batch)
    res = _call_flash(fwd, call.window, q=varlen_pack(q, qs), k=varlen_pack(k, ks), v=varlen_pack(v, ks),
                      cu_seqlens_q=_cu(cq, q.device), cu_seqlens_k=_cu(ck, q.device), max_seqlen_q=call.max_q,
                      max_seqlen_k=call.max_k, dropout_p=0.0, softmax_scale=scale, causal=call.causal,
                      alibi_slopes=None, deterministic=False, return_attn_probs=True)
    sizes = [b - a for a, b in qs]
    lse = res[1].masked_fill(res[1] == float("inf"), float("-inf"))  # flash-attn: +inf for a row that sees nothing
    return list(zip(varlen_unpack(res[0], batch, sizes), varlen_lse_unpack(lse, batch, sizes)))


def varlen_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, call: VarlenCall,
                    scale: float) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``(dq, dk, dv)`` of every block of ``call`` from one varlen backward with the rows' global out/LSE."""
    _, bwd = _varlen_ops()
    batch = q.shape[0]
    qs, ks = [(a, b) for a, b, _, _ in call.blocks], [(a, b) for _, _, a, b in call.blocks]
    cq, ck = call.cu_seqlens(batch)
    qp, kp, vp = varlen_pack(q, qs), varlen_pack(k, ks), varlen_pack(v, ks)
    dq, dk, dv = torch.empty_like(qp), torch.empty_like(kp), torch.empty_like(vp)
    _call_flash(bwd, call.window, dout=varlen_pack(dout, qs).contiguous(), q=qp, k=kp, v=vp,
                out=varlen_pack(out, qs), softmax_lse=varlen_lse_pack(lse, qs), dq=dq, dk=dk, dv=dv,
                cu_seqlens_q=_cu(cq, q.device), cu_seqlens_k=_cu(ck, q.device), max_seqlen_q=call.max_q,
                max_seqlen_k=call.max_k, dropout_p=0.0, softmax_scale=scale, causal=call.causal,
                alibi_slopes=None, deterministic=False, rng_state=None)
    nq, nk = [b - a for a, b in qs], [b - a for a, b in ks]
    return list(zip(varlen_unpack(dq, batch, nq), varlen_unpack(dk, batch, nk), varlen_unpack(dv, batch, nk)))


def preference(info: DeviceInfo, dtype: torch.dtype) -> tuple[str, ...]:
    """Kernels to try, fastest first, for a device and dtype (the first that runs the head_dim is chosen).

    - NVIDIA fp16/bf16: ``flash-attn3`` on Hopper (sm90) if it imports, then ``torch-cudnn``
      (on one H100: 620-680 TFLOP/s forward, ~2x the flash op), ``flash-attn`` (the flash op's
      algorithm, ~300-360), ``torch-cuda`` (the flash op), ``torch-efficient``, ``reference``.
    - NVIDIA fp32: ``torch-efficient`` (O(S) memory; 6.0 ms vs 9.0 ms for plain math at 4096x32x128),
      then ``reference``. float64: ``reference`` (no fused GPU kernel takes it).
    - ROCm fp16/bf16: ``flash-attn`` (its ROCm build) if it imports, then ``torch-cuda`` (AOTriton).
      Other dtypes on ROCm: ``reference`` (``torch-efficient`` can be forced; it has not been tried there).
    - CPU: ``torch-cpu`` for every dtype, then ``reference``.
    """
    if info.vendor == "cpu":
        return ("torch-cpu", "reference")
    if info.vendor == "amd":
        return ("flash-attn", "torch-cuda", "reference") if dtype in HALF else ("reference",)
    if info.vendor == "nvidia":
        if dtype in HALF:
            fa3 = ("flash-attn3",) if info.capability[0] == 9 else ()
            return (*fa3, "torch-cudnn", "flash-attn", "torch-cuda", "torch-efficient", "reference")
        if dtype == torch.float32:
            return ("torch-efficient", "reference")
    return ("reference",)


_CHOICE: dict[tuple, Kernel] = {}  # asked at every attention call: decide once per (device, dtype, head_dim)
_ON_CLEAR: list = []  # caches elsewhere that hold answers derived from the choice


def clear_cache() -> None:
    """Forget the kernel choices made so far (after changing what :func:`device_info` reports)."""
    _CHOICE.clear()
    for fn in _ON_CLEAR:
        fn()


def select_kernel(device: torch.device, dtype: torch.dtype, name: str | None = None,
                  head_dim: int | None = None) -> Kernel:
    """The named kernel, or the first of :func:`preference` that runs here (``head_dim`` None: any)."""
    key = (device, dtype, name, head_dim)
    kern = _CHOICE.get(key)
    if kern is not None:
        return kern
    hd = f", head_dim {head_dim}" if head_dim is not None else ""
    if name is not None:
        if name not in KERNELS:
            raise ValueError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
        kern = KERNELS[name]
        if not kern.supports(device, dtype, head_dim, named=True):
            usable = [k for k, v in KERNELS.items() if v.supports(device, dtype, head_dim)]
            raise ValueError(f"kernel {name!r} does not run {dtype}{hd} on {device.type}; "
                             f"usable here: {', '.join(usable)}")
    else:
        order = preference(device_info(device), dtype)
        kern = next((KERNELS[n] for n in order if KERNELS[n].supports(device, dtype, head_dim)), None)
        if kern is None:
            raise ValueError(f"no kernel runs {dtype}{hd} on {device.type} (tried {', '.join(order)})")
    _CHOICE[key] = kern
    return kern
