"""PyTorch's own context-parallel ring attention (the private templated ring forward and backward that
``torch.distributed.tensor.experimental.context_parallel`` uses), with K/V rotated by all-gather (``tcp-allgather``,
torch's default) or all-to-all (``tcp-ring``). Causal runs use its load-balanced layout, which is our zigzag.

The per-block op is the one torch's SDPA dispatch would give these inputs: on CPU its fused flash op (any dtype,
fewer K/V heads taken); on CUDA its flash op for bf16/fp16 and its memory-efficient op for float32 (K/V heads
expanded first, as SDPA's frontend does for that kernel), called with the arguments torch's own CP handlers pass
(torch 2.13's ``_scaled_dot_product_ring_{flash,efficient}_attention[_backward]``); float64 on CUDA has no op and
fails in one line. The CUDA ops are written from those call sites and have not run here (no GPU has been lent).
Float64 inputs turn off torch's ``convert_to_f32`` (on by default; it merges the blocks' partial results in
float32, which costs a float64 run ~3e-7): for bf16 and float32 the merge is torch's default. These options are
torch's module globals, set at every call.
"""

from __future__ import annotations

LAYOUT = {"full": "contiguous", "causal": "zigzag"}


def _api():
    """(templated forward, backward, the module) or the reason torch has none."""
    import torch

    try:
        try:
            from torch.distributed.tensor.experimental._context_parallel import _attention as cp
        except ImportError:
            from torch.distributed.tensor.experimental import _attention as cp
        return (cp._templated_ring_attention, cp._templated_ring_attention_backward, cp), None
    except (ImportError, AttributeError) as e:
        return None, f"torch {torch.__version__} has no usable context-parallel ring attention: {e}"


def _unavailable(device_type: str) -> str | None:
    api, why = _api()
    if api is None:
        return why
    if device_type not in ("cpu", "cuda"):
        return f"PyTorch CP is wired for the CPU and CUDA SDPA ops only (not {device_type})"
    return None


def _make(rotate: str):
    def attend(q, k, v, *, causal: bool, group):
        dtype = str(q.dtype).removeprefix("torch.")
        if q.device.type == "cuda" and dtype not in _FLASH:
            if dtype not in _EFFICIENT:  # one line for the record, not a kernel's traceback
                raise TypeError(f"PyTorch CP has no {dtype} op on CUDA (its flash and memory-efficient kernels "
                                "take bf16, fp16 and float32)")
            if k.shape[2] != q.shape[2]:  # the efficient kernel wants equal heads: expanded as SDPA's frontend does
                k, v = (t.repeat_interleave(q.shape[2] // k.shape[2], dim=2) for t in (k, v))
        return _TorchCP.apply(q, k, v, causal, rotate, group)

    attend.layout, attend.unavailable = LAYOUT, _unavailable
    return attend


_FLASH = ("bfloat16", "float16")  # by name
_EFFICIENT = ("float32",)


def _ops(q):
    """(the forward op, its extra arguments, the backward op, its grad_out name, the backward's extra arguments
    from the forward's results ``rest`` after out and lse): torch's per-block SDPA op for these inputs."""
    import torch

    aten = torch.ops.aten
    if q.device.type != "cuda":  # the CPU op; also on meta tensors, where the cost model traces it
        return (aten._scaled_dot_product_flash_attention_for_cpu.default, {},
                aten._scaled_dot_product_flash_attention_for_cpu_backward.default, "grad_out",
                lambda rest: {"dropout_p": 0.0})
    if str(q.dtype).removeprefix("torch.") in _FLASH:  # out, lse, cum_seq_q, cum_seq_k, max_q, max_k, seed, offset
        return (aten._scaled_dot_product_flash_attention.default, {"dropout_p": 0.0},
                aten._scaled_dot_product_flash_attention_backward.default, "grad_out",
                lambda rest: {"cum_seq_q": rest[0], "cum_seq_k": rest[1], "max_q": rest[2], "max_k": rest[3],
                              "dropout_p": 0.0, "philox_seed": rest[4], "philox_offset": rest[5]})
    # memory-efficient: (out, lse, seed, offset); CP always merges LSE, so it is always computed
    return (aten._scaled_dot_product_efficient_attention.default,
            {"attn_bias": None, "compute_log_sumexp": True, "dropout_p": 0.0},
            aten._scaled_dot_product_efficient_attention_backward.default, "grad_out_",
            lambda rest: {"attn_bias": None, "philox_seed": rest[0], "philox_offset": rest[1], "dropout_p": 0.0,
                          "grad_input_mask": (True, True, True, False)})


def _configure(cp, causal: bool, rotate: str, dtype) -> None:
    import torch

    cp._cp_options.enable_load_balance = causal  # torch refuses load balancing without a causal mask
    cp._cp_options.rotate_method = cp._RotateMethod[rotate]
    cp._cp_options.convert_to_f32 = dtype != torch.float64  # upcasting is its purpose: never down from float64


def _function():
    import torch

    class TorchCP(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, causal, rotate, group):
            (fwd, _, cp), _ = _api()
            _configure(cp, causal, rotate, q.dtype)
            op, extra, _, _, _ = _ops(q)
            qb, kb, vb = (t.transpose(1, 2) for t in (q, k, v))
            out, lse, *rest = fwd(group, 2, op, qb, kb, vb, is_causal=causal, **extra)
            ctx.save_for_backward(qb, kb, vb, out, lse)
            ctx.causal, ctx.rotate, ctx.group, ctx.rest = causal, rotate, group, rest
            return out.transpose(1, 2)

        @staticmethod
        def backward(ctx, dout):
            (_, bwd, cp), _ = _api()
            qb, kb, vb, out, lse = ctx.saved_tensors
            _configure(cp, ctx.causal, ctx.rotate, qb.dtype)
            _, _, op, grad_name, extra = _ops(qb)
            g = bwd(ctx.group, 2, op, grad_out=dout.transpose(1, 2), grad_out_name=grad_name, query=qb, key=kb,
                    value=vb, out=out, logsumexp=lse, is_causal=ctx.causal, **extra(ctx.rest))
            return g[0].transpose(1, 2), g[1].transpose(1, 2), g[2].transpose(1, 2), None, None, None

    return TorchCP


class _Lazy:
    """The autograd function, made on first use (importing torch's CP module costs ~0.3 s)."""

    fn = None

    def apply(self, *args):
        if self.fn is None:
            self.fn = _function()
        return self.fn.apply(*args)


_TorchCP = _Lazy()
allgather = _make("ALL_GATHER")
ring = _make("ALL_TO_ALL")
