"""``torch-cpu``: torch's fused flash-attention for CPU, every float dtype; a band block as an additive mask."""

from __future__ import annotations

import torch

from .bands import band_bias, blank_rows
from .base import KernelBase, bhsd, check_square


class TorchCpuKernel(KernelBase):
    """torch's fused flash-attention for CPU (``aten._scaled_dot_product_flash_attention_for_cpu``)."""

    name = "torch-cpu"

    def runs_on(self, info, dtype, head_dim):
        return info.type == "cpu" and dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)

    def forward(self, q, k, v, causal, scale, *, band=None):
        check_square(q, k, causal)
        if band is not None:  # an additive mask of q's dtype (a bool mask is refused)
            bias = band_bias(q.shape[1], k.shape[1], *band, q.dtype, q.device)
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                bhsd(q), bhsd(k), bhsd(v), 0.0, False, attn_mask=bias, scale=scale)
            return blank_rows(bhsd(out), lse, k.shape[1], band)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            bhsd(q), bhsd(k), bhsd(v), 0.0, causal, scale=scale)
        return bhsd(out), lse

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        if band is not None:
            bias = band_bias(q.shape[1], k.shape[1], *band, q.dtype, q.device)
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                bhsd(dout), bhsd(q), bhsd(k), bhsd(v), bhsd(out), lse.contiguous(), 0.0, False,
                attn_mask=bias, scale=scale)
            return bhsd(dq), bhsd(dk), bhsd(dv)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            bhsd(dout), bhsd(q), bhsd(k), bhsd(v), bhsd(out), lse.contiguous(), 0.0, causal, scale=scale)
        return bhsd(dq), bhsd(dk), bhsd(dv)
