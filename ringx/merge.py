"""Online-softmax merge of partial attention results.

A partial result for a set of query rows is ``(out, lse)``: the softmax-
weighted values over some subset of keys and the log of that subset's
softmax denominator. Two partials over disjoint key sets combine exactly:

    lse = logaddexp(lse_a, lse_b)
    out = out_b + sigmoid(lse_a - lse_b) * (out_a - out_b)

Rows that have seen no key yet carry ``lse = -inf`` and ``out = 0``; the
sigmoid form gives weight 0 to such a side, and a row that is -inf on both
sides stays (0, -inf) instead of turning into NaN.

An attention sink (gpt-oss: one learned logit per head that joins every row's
softmax as a column of value 0) is one more partial, of out 0 and LSE ``sink``:
the last merge of a row's result, made where the row's result is final, so it
moves nothing (:func:`with_sink`, :func:`sink_grad`).
"""

from __future__ import annotations

import torch

from . import timeline
from .kernels import acc_dtype

Tensor = torch.Tensor


def merge_(out: Tensor, lse: Tensor, blk_out: Tensor, blk_lse: Tensor) -> None:
    """Fold ``(blk_out, blk_lse)`` into ``(out, lse)`` in place.

    ``out`` is (B, S, H, D) in the accumulation dtype, ``lse`` is (B, H, S). Meta tensors (a traced
    schedule, :mod:`ringx.schedule`) hold no values: there is nothing to fold, and torch's meta arithmetic
    would cost milliseconds a merge at thousands of ranks.
    """
    if out.is_meta:
        return
    w_old = torch.sigmoid(lse - blk_lse).nan_to_num_(0.0)  # NaN only where both are -inf
    w_old = w_old.transpose(1, 2).unsqueeze(-1).to(out.dtype)
    out.sub_(blk_out).mul_(w_old).add_(blk_out)
    lse.copy_(torch.logaddexp(lse, blk_lse.to(lse.dtype)))


class Partial:
    """Accumulates partial (out, lse) for one set of query rows.

    The first partial covering every row is adopted as the kernel returned it
    (its own dtype, no copy); it is widened to the accumulation dtype only when
    a second partial is merged into it or :meth:`result` is asked for.
    """

    def __init__(self, like_q: Tensor):
        self.shape = like_q.shape
        self.device = like_q.device
        self.dtype = acc_dtype(like_q.dtype)
        self.out: Tensor | None = None
        self.lse: Tensor | None = None

    def add(self, q0: int, q1: int, blk_out: Tensor, blk_lse: Tensor) -> None:
        """Merge a partial result covering query rows [q0, q1)."""
        b, s, h, d = self.shape
        if self.out is None and q0 == 0 and q1 == s:
            self.out, self.lse = blk_out, blk_lse
            return
        if self.out is None:
            self.out = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
            self.lse = torch.full((b, h, s), float("-inf"), dtype=self.dtype, device=self.device)
        else:
            self._widen()
        t = timeline.ON and timeline.start()
        merge_(self.out[:, q0:q1], self.lse[:, :, q0:q1], blk_out, blk_lse)
        if t:
            timeline.stop(t, "merge", "merge")

    def _widen(self) -> None:
        if self.out.dtype != self.dtype:
            self.out = self.out.to(self.dtype)
        if self.lse.dtype != self.dtype:
            self.lse = self.lse.to(self.dtype)

    def result(self) -> tuple[Tensor, Tensor]:
        """(out, lse) in the accumulation dtype; rows that saw no key are (0, -inf)."""
        if self.out is None:
            b, s, h, _ = self.shape
            return (torch.zeros(self.shape, dtype=self.dtype, device=self.device),
                    torch.full((b, h, s), float("-inf"), dtype=self.dtype, device=self.device))
        self._widen()
        return self.out, self.lse

    def final(self) -> tuple[Tensor, Tensor]:
        """(out, lse) for handing back to the caller, who casts ``out`` to the input dtype: a
        single adopted partial stays in the kernel's dtype (no widening only to narrow it again)."""
        if self.out is not None and self.lse.dtype == self.dtype:
            return self.out, self.lse
        return self.result()


def with_sink(out: Tensor, lse: Tensor, sinks: Tensor) -> tuple[Tensor, Tensor]:
    """The final ``(out, lse)`` (B, S, H, D) and (B, H, S) of some rows merged with the per-head sink logits
    ``sinks`` (H,): out * sigmoid(lse - sink), logaddexp(lse, sink), in the LSE's dtype. A row that saw no key
    gets out 0 and LSE ``sink``."""
    s = sinks.detach().to(lse.dtype).view(1, -1, 1)
    w = torch.sigmoid(lse - s).transpose(1, 2).unsqueeze(-1)
    return out.to(lse.dtype) * w, torch.logaddexp(lse, s)


def sink_grad(dout: Tensor, out: Tensor, lse: Tensor, sinks: Tensor) -> Tensor:
    """The gradient of the sink logits (H,) from these rows: -sum over rows of p_sink * (dO . out), with ``out``
    and ``lse`` the rows' results with the sink (:func:`with_sink`) and p_sink = exp(sink - lse). Over one rank's
    rows it is that rank's share; the shares of all ranks sum to the whole gradient."""
    p = torch.exp(sinks.detach().to(lse.dtype).view(1, -1, 1) - lse)
    dot = (dout.to(lse.dtype) * out.to(lse.dtype)).sum(-1).transpose(1, 2)  # (B, H, S): dO . out per row
    return -(p * dot).sum(dim=(0, 2)).to(sinks.dtype)
