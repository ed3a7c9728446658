"""PyTorch's own context-parallel ring attention (the private templated ring forward and backward that
``torch.distributed.tensor.experimental.context_parallel`` uses), with K/V rotated by all-gather (``tcp-allgather``,
torch's default) or all-to-all (``tcp-ring``). Causal runs use its load-balanced layout, which is our zigzag. Wired
for the CPU fused op; on other devices it says it cannot run until the CUDA op's arguments are wired and checked."""

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
    if device_type != "cpu":
        return "PyTorch CP is wired for the CPU fused op only here (its CUDA op's arguments are not checked yet)"
    return None


def _make(rotate: str):
    def attend(q, k, v, *, causal: bool, group):
        return _TorchCP.apply(q, k, v, causal, rotate, group)

    attend.layout, attend.unavailable = LAYOUT, _unavailable
    return attend


def _function():
    import torch

    aten = torch.ops.aten

    class TorchCP(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, causal, rotate, group):
            (fwd, _, cp), _ = _api()
            cp._cp_options.enable_load_balance = causal  # torch refuses load balancing without a causal mask
            cp._cp_options.rotate_method = cp._RotateMethod[rotate]
            qb, kb, vb = (t.transpose(1, 2) for t in (q, k, v))
            res = fwd(group, 2, aten._scaled_dot_product_flash_attention_for_cpu.default, qb, kb, vb, is_causal=causal)
            ctx.save_for_backward(qb, kb, vb, res[0], res[1])
            ctx.causal, ctx.rotate, ctx.group = causal, rotate, group
            return res[0].transpose(1, 2)

        @staticmethod
        def backward(ctx, dout):
            (_, bwd, cp), _ = _api()
            qb, kb, vb, out, lse = ctx.saved_tensors
            cp._cp_options.enable_load_balance = ctx.causal
            cp._cp_options.rotate_method = cp._RotateMethod[ctx.rotate]
            g = bwd(ctx.group, 2, aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
                    grad_out=dout.transpose(1, 2), grad_out_name="grad_out", query=qb, key=kb, value=vb, out=out,
                    logsumexp=lse, is_causal=ctx.causal, dropout_p=0.0)
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
