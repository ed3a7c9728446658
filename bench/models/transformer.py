"""Plain-PyTorch models for end-to-end training steps (``ringx-bench model``), built from one config.

- ``decoder``: Llama-3 shape. Token embedding, then per layer RMSNorm -> GQA attention with rotary
  embeddings -> residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm, LM head, causal LM loss.
- ``vit``: the same blocks as an encoder over patches: a linear patch embedding (a Conv2d with stride =
  patch size, applied to flattened patches), non-causal attention, and a per-patch regression head
  (predicting each patch's next state, as climate ViTs do), mean squared error.

The model knows nothing of ranks or layouts. Its forward takes this rank's tokens, their **global**
positions (for RoPE) and an ``attend(q, k, v)`` callable on (batch, seq, heads, head_dim): ``ringx.attention``
on a shard in the driver, :func:`plain_attention` on the whole sequence for the float64 reference. Losses
are sums over this rank's tokens divided by the global count, so the ranks' losses add up to the global
mean and so do their gradients (summed by one all-reduce). Labels are shifted on the global sequence
(:func:`shift_labels`) before sharding, so no label is lost at a shard boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # the label of a position with no next token (the global sequence's last)
ARCHS = ("decoder", "vit")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "decoder"  # "decoder" (causal LM) or "vit" (non-causal encoder)
    layers: int = 2
    d_model: int = 96
    heads: int = 12
    kv_heads: int = 4
    mlp: int = 256  # SwiGLU hidden size
    vocab: int = 256  # decoder: token vocabulary
    patch_dim: int = 48  # vit: values per patch (channels x patch x patch), input and regression target
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def causal(self) -> bool:
        return self.arch == "decoder"

    def as_dict(self) -> dict:
        return asdict(self)

    def problem(self) -> str:
        """What is wrong with this configuration, or ''."""
        if self.arch not in ARCHS:
            return f"arch {self.arch!r}: choose one of {', '.join(ARCHS)}"
        for name in ("layers", "d_model", "heads", "kv_heads", "mlp", "vocab" if self.causal else "patch_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                return f"{name} must be a positive integer, got {v!r}"
        if self.d_model % self.heads:
            return f"d_model {self.d_model} is not divisible by heads {self.heads}"
        if self.heads % self.kv_heads:
            return f"heads {self.heads} is not divisible by kv_heads {self.kv_heads} (GQA groups must be whole)"
        if self.head_dim % 2:
            return f"head_dim {self.head_dim} (d_model / heads) must be even for rotary embeddings"
        if not (self.rope_theta > 0 and self.norm_eps > 0):
            return "rope_theta and norm_eps must be positive"
        return ""


# Presets. llama3-8b keeps Llama-3-8B's layer shape, vocabulary and RoPE base but only 4 of its 32 layers, so
# that a training step fits one 80 GB GPU with weights, gradients and AdamW state in float32 (16 bytes per
# parameter: 1.92e9 parameters, 0.53e9 of them the input embedding and 0.53e9 the LM head, ~31 GB) plus bf16
# activations (estimated, not measured: ~8 GB at 8K tokens per rank without checkpointing; --checkpoint keeps
# one layer's activations and the 128K-wide logits dominate beyond). The same 4 layers are what the H100
# training-step measurement in the field notes used. vit-l is ViT-L/16's shape (d 1024, 24 layers, 16 heads,
# MLP 4096) with this module's blocks (RMSNorm, RoPE over the patch index, SwiGLU), on 16x16x3 patches.
# ra-sp is the RA+SP serving study's dense model (4 layers, 16 heads of head_dim 512, so d 8192, MLP 32768);
# the study names no vocabulary, GQA or norm: 32000 tokens, full MHA and these blocks are assumed.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(),
    "tiny-vit": ModelConfig(arch="vit", rope_theta=10000.0),
    "llama3-8b": ModelConfig("decoder", layers=4, d_model=4096, heads=32, kv_heads=8, mlp=14336, vocab=128256,
                             patch_dim=0, rope_theta=500000.0),
    "vit-l": ModelConfig("vit", layers=24, d_model=1024, heads=16, kv_heads=16, mlp=4096, vocab=0, patch_dim=768,
                         rope_theta=10000.0, norm_eps=1e-6),
    "ra-sp": ModelConfig("decoder", layers=4, d_model=8192, heads=16, kv_heads=16, mlp=32768, vocab=32000,
                         patch_dim=0, rope_theta=500000.0),
}
FIELDS = tuple(f.name for f in fields(ModelConfig))


def preset(name: str, **overrides) -> ModelConfig:
    """A preset with some fields replaced; ValueError naming the presets or fields for a bad name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    bad = set(overrides) - set(FIELDS)
    if bad:
        raise ValueError(f"unknown model field(s) {', '.join(sorted(bad))}; known: {', '.join(FIELDS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


# ------------------------------------------------------------------------------------------ blocks


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype=torch.float32):
    """cos, sin of shape (seq, head_dim/2) for the given (global) token positions."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (batch, seq, heads, head_dim) by position: the pair (x_j, x_{j+D/2}) turns by angle p * theta_j.

    (The half-split pairing of Hugging Face's Llama; Meta's interleaved pairing is the same up to a fixed
    permutation of the q/k projection rows.) Computed in at least float32, returned in x's dtype.
    """
    dt = torch.promote_types(x.dtype, torch.float32)
    x1, x2 = x.to(dt).chunk(2, dim=-1)
    c, s = cos.to(dt)[None, :, None, :], sin.to(dt)[None, :, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Attention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.h, self.kv, self.hd = c.heads, c.kv_heads, c.head_dim
        self.wq = nn.Linear(c.d_model, c.heads * self.hd, bias=False)
        self.wk = nn.Linear(c.d_model, c.kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(c.d_model, c.kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(c.heads * self.hd, c.d_model, bias=False)

    def forward(self, x, cos, sin, attend: Attend):
        b, s, _ = x.shape
        q = apply_rope(self.wq(x).view(b, s, self.h, self.hd), cos, sin)
        k = apply_rope(self.wk(x).view(b, s, self.kv, self.hd), cos, sin)
        v = self.wv(x).view(b, s, self.kv, self.hd)
        return self.wo(attend(q, k, v).reshape(b, s, self.h * self.hd))


class MLP(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(c.d_model, c.mlp, bias=False)  # gate
        self.w3 = nn.Linear(c.d_model, c.mlp, bias=False)  # up
        self.w2 = nn.Linear(c.mlp, c.d_model, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(c.d_model, c.norm_eps), Attention(c)
        self.mlp_norm, self.mlp = RMSNorm(c.d_model, c.norm_eps), MLP(c)

    def forward(self, x, cos, sin, attend: Attend):
        x = x + self.attn(self.attn_norm(x), cos, sin, attend)
        return x + self.mlp(self.mlp_norm(x))


class Model(nn.Module):
    """A decoder or a ViT encoder (``config.arch``); ``checkpoint`` recomputes each layer in the backward."""

    def __init__(self, c: ModelConfig, checkpoint: bool = False):
        super().__init__()
        problem = c.problem()
        if problem:
            raise ValueError(problem)
        self.config, self.checkpoint = c, checkpoint
        if c.causal:
            self.embed = nn.Embedding(c.vocab, c.d_model)
        else:
            self.embed = nn.Linear(c.patch_dim, c.d_model)  # patch embedding
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.head = nn.Linear(c.d_model, c.vocab if c.causal else c.patch_dim, bias=not c.causal)

    def forward(self, inputs, positions, attend: Attend | Sequence[Attend]):
        """Logits (decoder) or predicted patches (vit) of this rank's tokens at their global ``positions``.
        ``attend``: one attention for every layer, or a list the layers cycle through (layer i takes
        ``attend[i % len(attend)]``: a per-layer pattern such as local window / global)."""
        x = self.embed(inputs)
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta)
        pattern = list(attend) if isinstance(attend, list | tuple) else [attend]
        for i, blk in enumerate(self.blocks):
            att = pattern[i % len(pattern)]
            if self.checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, cos, sin, att, use_reentrant=False)
            else:
                x = blk(x, cos, sin, att)
        return self.head(self.norm(x))

    def loss(self, inputs, targets, positions, attend: Attend, n_global: int):
        """This rank's share of the global mean loss: sum over its tokens / ``n_global``.

        decoder: cross entropy against next-token labels (IGNORE where there is none), ``n_global`` the
        labelled tokens of the whole batch; vit: squared error summed over a patch's values, ``n_global``
        = tokens x patch_dim of the whole batch (a mean over every predicted value).
        """
        out = self(inputs, positions, attend)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()  # the loss in at least float32
        if self.config.causal:
            total = F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                                    reduction="sum")
        else:
            total = F.mse_loss(out, targets.to(out.dtype), reduction="sum")
        return total / n_global


def build(c: ModelConfig, seed: int = 0, checkpoint: bool = False, device="cpu") -> Model:
    """The model with deterministic weights: N(0, 0.02) matrices and embeddings, zero biases, unit norm gains.

    Built on ``device`` in float32 from ``seed`` (the same seed gives the same weights on one device type).
    """
    with torch.device(device):
        m = Model(c, checkpoint)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 2:
                p.normal_(0.0, 0.02, generator=g)
    return m


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def flops_params(c: ModelConfig) -> int:
    """N of the 6N convention: the weights of every matrix multiply a token goes through (attention
    projections, MLP, LM head or patch embedding and regression head). Not counted: the decoder's input
    embedding (a table lookup), norm gains and biases (elementwise)."""
    d, hd = c.d_model, c.head_dim
    per_layer = d * (c.heads * hd) * 2 + d * (c.kv_heads * hd) * 2 + 3 * d * c.mlp
    ends = d * c.vocab if c.causal else 2 * d * c.patch_dim
    return c.layers * per_layer + ends


# ------------------------------------------------------------------------------------------ data


def shift_labels(tokens: torch.Tensor) -> torch.Tensor:
    """Next-token labels on the global sequence: label[t] = tokens[t + 1], IGNORE at the last position."""
    labels = torch.full_like(tokens, IGNORE)
    labels[:, :-1] = tokens[:, 1:]
    return labels


def global_batch(c: ModelConfig, batch: int, seq: int, seed: int = 0):
    """(inputs, targets, n_global): synthetic data of the whole sequence, the same on every rank for one seed.

    decoder: random tokens, next-token labels; vit: random patches, targets their smoothed next state.
    """
    g = torch.Generator().manual_seed(seed)
    if c.causal:
        tokens = torch.randint(0, c.vocab, (batch, seq), generator=g)
        return tokens, shift_labels(tokens), batch * (seq - 1)
    x = torch.randn(batch, seq, c.patch_dim, generator=g)
    target = 0.9 * x + 0.1 * torch.randn(batch, seq, c.patch_dim, generator=g)
    return x, target, batch * seq * c.patch_dim


def plain_attention(causal) -> Attend:
    """Softmax attention over the whole sequence by the textbook formula (the unsharded reference).
    ``causal``: True/False, or a ringx.Mask (its dense visibility over the global positions)."""
    def attend(q, k, v):
        g = q.shape[2] // k.shape[2]
        k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        s = q.shape[1]
        if not isinstance(causal, bool):  # a mask
            pos = torch.arange(s)
            scores = scores.masked_fill(~causal.visible(pos, pos).to(q.device), float("-inf"))
        elif causal:
            scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
    return attend
