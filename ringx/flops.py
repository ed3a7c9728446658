"""The one FLOP convention of the project: flash-attention's benchmarks.

Forward: 4 x B x S^2 x H x D (H query heads, S the global length), halved when
causal; backward 2.5x forward (recompute included); forward+backward 3.5x.
Records name this convention next to every FLOP count; the cost model counts
each computed block by the same rule (``block_flops``), with a causal diagonal
block counting its S(S+1)/2 visible pairs.

Masks other than full and causal (windows, packed documents; ``ringx.Mask``)
count their visible area: forward 4*B*H*D per visible (query, key) pair, backward
2.5x (:func:`mask_flops`, the convention of masked-attention benchmarks); for
full and causal masks it is :func:`attention_flops` itself (S^2/2 when causal).
"""

from __future__ import annotations

CONVENTION = ("flash-attn: forward 4*B*S^2*H*D (H = query heads, S global), halved when causal; "
              "backward 2.5x forward; fwd+bwd 3.5x forward")
MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


def attention_flops(batch: int, seq: int, heads: int, head_dim: int, causal: bool, mode: str = "fwd") -> float:
    """Total FLOPs of one call over all ranks."""
    return 4.0 * batch * seq * seq * heads * head_dim / (2 if causal else 1) * MODE_FACTOR[mode]


def mask_flops(batch: int, seq: int, heads: int, head_dim: int, mask, mode: str = "fwd") -> float:
    """Total FLOPs of one call over all ranks under ``mask`` (a ``ringx.Mask``): its visible area."""
    if mask.plain is not None:
        return attention_flops(batch, seq, heads, head_dim, mask.plain, mode)
    return block_flops(batch, heads, head_dim, mask.visible_pairs(seq), mode)


def block_flops(batch: int, heads: int, head_dim: int, pairs: float, mode: str = "fwd") -> float:
    """FLOPs of attention over ``pairs`` (query, key) pairs: the per-block form of the same convention."""
    return 4.0 * batch * heads * head_dim * pairs * MODE_FACTOR[mode]


def causal_pairs(seq: int) -> float:
    """Visible (query, key) pairs of a causal square block."""
    return seq * (seq + 1) / 2


# The model convention (a whole training step, ``bench model``): PaLM's (Chowdhery et al. 2022, appendix B),
# the one MFU figures in the literature use. It counts the model's FLOPs, not the hardware's: no recomputation
# (activation checkpointing or flash attention's backward) is counted, so MFU does not reward recomputing.
MODEL_CONVENTION = ("6N + attention (PaLM): per token 6N for the N weights of matrix multiplies (forward 2N, "
                    "backward 4N), plus 3 x 4*S*H*D per layer for attention scores and values (forward + backward "
                    "= 3x forward), halved when causal; recomputation not counted")


def model_flops_per_token(matmul_params: int, layers: int, seq: int, heads: int, head_dim: int,
                          causal: bool) -> float:
    """Training FLOPs per token of a transformer step: 6N + 12 * layers * S * H * D (halved when causal).

    The attention term is three times :func:`attention_flops`'s forward count per query (4*S*H*D, halved when
    causal), where :data:`CONVENTION` counts the backward as 2.5x (flash attention's recompute); the model
    convention counts it as 2x.
    """
    return 6.0 * matmul_params + 3.0 * layers * attention_flops(1, seq, heads, head_dim, causal, "fwd") / seq


def masked_model_flops_per_token(matmul_params: int, layers: int, seq: int, heads: int, head_dim: int,
                                 masks) -> float:
    """:func:`model_flops_per_token` with each layer's attention counted over its mask's visible area: ``masks``
    (ringx.Mask) cycled over the layers (layer i under ``masks[i % len(masks)]``)."""
    att = sum(mask_flops(1, seq, heads, head_dim, masks[i % len(masks)], "fwd") for i in range(layers))
    return 6.0 * matmul_params + 3.0 * att / seq
