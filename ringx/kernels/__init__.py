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
FlexAttention ``BlockMask``; the others fall back (:class:`BandFallback`, routed by
:func:`band_route`, a pure rule).
A row that sees no key of its block comes out as out 0 and LSE -inf, never NaN.
flash-attn's varlen functions can take many blocks of one K/V buffer in one call
(:func:`varlen_calls`, :func:`varlen_forward`, :func:`varlen_backward`). Only the CPU,
reference and (on CPU) FlexAttention band paths have run.

Kernels (the module that holds each in brackets):

====================  =====================================================  ==============================
name                  what it calls                                          runs on
====================  =====================================================  ==============================
``flash-attn3``       ``flash_attn_interface`` (flash-attention's Hopper     NVIDIA sm80+ (chosen on sm90),
[flash]               build), native GQA                                     fp16/bf16
``torch-cudnn``       ``aten._scaled_dot_product_cudnn_attention``, native   NVIDIA sm80+, cuDNN 9, fp16/bf16
[torch_gpu]           GQA
``flash-attn``        the ``flash_attn`` package (2.x; also its ROCm build)  NVIDIA sm80+ or ROCm, fp16/bf16
[flash]
``torch-cuda``        ``aten._scaled_dot_product_flash_attention`` (on ROCm  NVIDIA sm80+ or ROCm, fp16/bf16
[torch_gpu]           this is AOTriton); K/V heads expanded per block
``torch-efficient``   ``aten._scaled_dot_product_efficient_attention``;      NVIDIA (ROCm only when forced),
[torch_gpu]           O(S) memory; K/V heads expanded per block              fp32 (and fp16/bf16)
``torch-flex``        ``torch.nn.attention.flex_attention`` with a           NVIDIA sm80+ (compiled), fp16/bf16/
[flex]                ``BlockMask``, native GQA; chosen only when named      fp32; CPU (eager) fp32/fp64
``torch-cpu`` [cpu]   ``aten._scaled_dot_product_flash_attention_for_cpu``   CPU, every float dtype
``reference``         plain torch math, O(Sq*Sk) memory                      anywhere, any float dtype
[reference]
====================  =====================================================  ==============================

What has run where, on which hardware: docs/status.md.

The automatic choice (:func:`select_kernel`) takes the first kernel of
:func:`preference` that runs the device, dtype and head_dim.

The other modules: ``registry`` (:data:`KERNELS`, the band declarations, :func:`band_route`,
:func:`preference`, :func:`select_kernel`), ``base`` (the :class:`Kernel` interface and what every
kernel shares, the band fallback included), ``machine`` (:class:`DeviceInfo`, :func:`device_info`, the
optional packages), ``bands`` (band masks and windows), ``varlen`` (flash-attn's many blocks per call),
``flash_call`` (flash-attn's private functions across versions). This package re-exports the public names.
"""

from __future__ import annotations

from .bands import band_bias, blank_rows, flash_window
from .base import HALF, BandFallback, Kernel, KernelBase, Tensor, acc_dtype
from .cpu import TorchCpuKernel
from .flash import FlashAttn3Kernel, FlashAttnKernel
from .flex import TorchFlexKernel, flex_block_mask, flex_mask_mod, reweighted_backward
from .machine import DeviceInfo, device_info
from .reference import ReferenceKernel
from .registry import (
    _ON_CLEAR,  # ringx.api registers its cache of answers derived from the kernel choice here
    BAND_FALLBACK,
    BAND_NATIVE,
    KERNELS,
    VARLEN,
    WINDOW_NATIVE,
    band_route,
    clear_cache,
    preference,
    select_kernel,
)
from .torch_gpu import (
    LSE_ALIGN,
    TorchCudaKernel,
    TorchCudnnKernel,
    TorchEfficientKernel,
    expand_heads,
    fold_heads,
    pad_lse,
    unpad_lse,
)
from .varlen import (
    VarlenCall,
    varlen_backward,
    varlen_calls,
    varlen_forward,
    varlen_lse_pack,
    varlen_lse_unpack,
    varlen_pack,
    varlen_unpack,
    varlen_window,
)

__all__ = [
    "BAND_FALLBACK", "BAND_NATIVE", "HALF", "KERNELS", "LSE_ALIGN", "VARLEN", "WINDOW_NATIVE", "_ON_CLEAR",
    "BandFallback", "DeviceInfo", "FlashAttn3Kernel", "FlashAttnKernel", "Kernel", "KernelBase", "ReferenceKernel",
    "Tensor", "TorchCpuKernel", "TorchCudaKernel", "TorchCudnnKernel", "TorchEfficientKernel", "TorchFlexKernel",
    "VarlenCall",
    "acc_dtype", "band_bias", "band_route", "blank_rows", "clear_cache", "device_info", "expand_heads", "flash_window",
    "flex_block_mask", "flex_mask_mod", "fold_heads", "pad_lse", "preference", "reweighted_backward", "select_kernel",
    "unpad_lse", "varlen_backward", "varlen_calls", "varlen_forward", "varlen_lse_pack", "varlen_lse_unpack",
    "varlen_pack", "varlen_unpack", "varlen_window",
]
