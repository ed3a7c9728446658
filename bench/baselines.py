"""Implementations from outside the project, timed under the same harness when they run here.

- ``ring_flash_attn``: ring-flash-attention's ring, zigzag and stripe functions (need flash-attn).
- ``torch_cp``: PyTorch's own context-parallel ring attention (its private templated ring
  forward and backward, as ``torch.distributed.tensor.experimental.context_parallel`` uses),
  with K/V rotated by all-gather (torch's default) or all-to-all (a ring). Causal runs use its
  load-balanced layout, which is our zigzag. Wired for the CPU fused op; on GPUs it is reported
  as skipped until the CUDA op's extra arguments are wired and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FAMILIES = ("ring_flash_attn", "torch_cp")
# the built-in algorithm whose buffers each holds (sweep planning's memory estimate, ringx.memory.peak_formula)
MEMORY_LIKE = {"rfa-ring": "ring", "rfa-zigzag": "zigzag", "rfa-stripe": "stripe", "tcp-allgather": "ringx3",
               "tcp-ring": "ring"}


@dataclass
class External:
    fn: Callable | None  # fn(q, k, v, causal=...) -> out, differentiable
    layouts: tuple[str, str]  # (non-causal, causal)
    reason: str | None  # why it cannot run here (then fn is None)

    def layout(self, causal: bool) -> str:
        return self.layouts[causal]


def load(names: list[str], device_type: str = "cpu") -> dict[str, External]:
    """name -> External for each requested family; absent ones carry the reason."""
    out: dict[str, External] = {}
    if "ring_flash_attn" in names:
        funcs = (("rfa-ring", "ring_flash_attn_func", "contiguous"),
                 ("rfa-zigzag", "zigzag_ring_flash_attn_func", "zigzag"),
                 ("rfa-stripe", "stripe_flash_attn_func", "stripe"))
        try:
            import ring_flash_attn as rfa
        except Exception as e:  # noqa: BLE001 - it imports flash_attn, which may be absent or broken
            for name, _, layout in funcs:
                out[name] = External(None, (layout, layout), f"ring_flash_attn not importable: {type(e).__name__}: {e}")
        else:
            for name, attr, layout in funcs:
                out[name] = External(getattr(rfa, attr), (layout, layout), None)
    if "torch_cp" in names:
        for name, rotate in (("tcp-allgather", "ALL_GATHER"), ("tcp-ring", "ALL_TO_ALL")):
            fn, reason = _torch_cp(rotate, device_type)
            out[name] = External(fn, ("contiguous", "zigzag"), reason)
    return out


def _torch_cp(rotate: str, device_type: str):
    import torch

    try:
        try:
            from torch.distributed.tensor.experimental._context_parallel import _attention as cp
        except ImportError:
            from torch.distributed.tensor.experimental import _attention as cp
        fwd, bwd = cp._templated_ring_attention, cp._templated_ring_attention_backward
        method = cp._RotateMethod[rotate]
    except (ImportError, AttributeError, KeyError) as e:
        return None, f"torch {torch.__version__} has no usable context-parallel ring attention: {e}"
    if device_type != "cpu":
        return None, "torch_cp baseline is wired for the CPU fused op only (CUDA op arguments not yet checked)"
    import torch.distributed as dist

    aten = torch.ops.aten

    def configure(causal: bool) -> None:
        cp._cp_options.enable_load_balance = causal  # torch refuses load balancing without a causal mask
        cp._cp_options.rotate_method = method

    class TorchCP(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, causal):
            configure(causal)
            qb, kb, vb = (t.transpose(1, 2) for t in (q, k, v))
            res = fwd(dist.group.WORLD, 2, aten._scaled_dot_product_flash_attention_for_cpu.default, qb, kb, vb,
                      is_causal=causal)
            ctx.save_for_backward(qb, kb, vb, res[0], res[1])
            ctx.causal = causal
            return res[0].transpose(1, 2)

        @staticmethod
        def backward(ctx, dout):
            qb, kb, vb, out, lse = ctx.saved_tensors
            configure(ctx.causal)
            g = bwd(dist.group.WORLD, 2, aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
                    grad_out=dout.transpose(1, 2), grad_out_name="grad_out", query=qb, key=kb, value=vb, out=out,
                    logsumexp=lse, is_causal=ctx.causal, dropout_p=0.0)
            return g[0].transpose(1, 2), g[1].transpose(1, 2), g[2].transpose(1, 2), None

    def run(q, k, v, causal: bool):
        return TorchCP.apply(q, k, v, causal)

    return run, None
