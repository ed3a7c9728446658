"""The ``tp{T}pp{S}`` serving baseline: Megatron tensor parallelism over T ranks within each of S pipeline stages.

Ranks ``s*T .. s*T+T-1`` are stage ``s``; a stage holds a contiguous run of the layers (split as evenly as the
layer count allows, earlier stages taking the extra ones) as its ranks' Megatron slices, and the KV cache of those
layers' heads. The batch is cut into ``min(S, batch)`` micro-batches, as serving systems (vLLM, TensorRT-LLM) do so
that stage s works on micro-batch m while stage s+1 works on m-1: each micro-batch's hidden states go from a stage's
TP rank j to the next stage's rank j (point-to-point, blocking: the receiver posts as soon as it is free). The last
stage computes the logits; its first rank decides the ids and broadcasts them (B integers) to every rank, which the
first stage feeds back. ``tp`` alone is ``tp{P}pp1`` with one micro-batch.
"""

from __future__ import annotations

import re

import torch
import torch.distributed as dist

import ringx
from ringx.comm import Comm
from ringx.decode import attend_cache

NAME = re.compile(r"tp([1-9][0-9]*)pp([1-9][0-9]*)")
_GROUPS: dict[tuple, list] = {}  # (parent group, T) -> every stage's TP group (new_group is collective: made once)


def parse(name: str) -> tuple[int, int] | None:
    """(T, S) of a ``tp{T}pp{S}`` name, else None."""
    m = NAME.fullmatch(name)
    return (int(m[1]), int(m[2])) if m else None


def problem(cfg, tp: int, pp: int, world: int) -> str:
    """Why this model cannot be served as ``tp{tp}pp{pp}`` on ``world`` ranks, or ''."""
    if tp * pp != world:
        return f"tp{tp}pp{pp} needs {tp * pp} ranks (tp x pp), not {world}"
    if cfg.heads % tp:
        return f"tp{tp}pp{pp}: {cfg.heads} query heads do not split over {tp} ranks"
    if cfg.mlp % tp:
        return f"tp{tp}pp{pp}: the MLP's {cfg.mlp} hidden units do not split over {tp} ranks"
    if pp > cfg.layers:
        return f"tp{tp}pp{pp}: {pp} pipeline stages need at least {pp} layers, the model has {cfg.layers}"
    return ""


def stage_layers(layers: int, pp: int, stage: int) -> range:
    """The layers of ``stage``: contiguous, earlier stages one more when ``pp`` does not divide them."""
    base, extra = divmod(layers, pp)
    lo = stage * base + min(stage, extra)
    return range(lo, lo + base + (stage < extra))


def _tp_groups(group, tp: int, world: int) -> list:
    key = (group, tp)
    if key not in _GROUPS:
        glob = (lambda r: r) if group is None else (lambda r: dist.get_global_rank(group, r))
        _GROUPS[key] = [dist.new_group([glob(s * tp + j) for j in range(tp)]) for s in range(world // tp)]
    return _GROUPS[key]


class Pipeline:
    """One rank's stage of ``tp{T}pp{S}`` serving for a :class:`~bench.models.serving.Server` (its model, layer
    code, ledger and prompt shape)."""

    def __init__(self, server, tp: int, pp: int, weights, cache):
        """``weights``: the Megatron slicer (serving's _TPWeights); ``cache``: its KVCache class (passed in: serving
        imports this module)."""
        s = self.server = server
        self.tp, self.pp = tp, pp
        self.stage, tp_rank = divmod(s.rank, tp)
        group = _tp_groups(s.group, tp, s.world)[self.stage]
        self.reduce = Comm(group, s.ledger, solo=tp == 1).all_reduce_sum
        self.weights = weights(s.model, tp_rank, tp)
        self.layers = stage_layers(s.cfg.layers, pp, self.stage)
        self.prev = s.rank - tp if self.stage else None
        self.next = s.rank + tp if self.stage < pp - 1 else None
        self.holder = (pp - 1) * tp  # the last stage's first rank: decides the ids
        self.micro = torch.arange(s.batch).tensor_split(min(pp, s.batch))
        self.cache = cache(len(self.layers), s.batch, s.prompt_len + s.new_tokens, self.weights.kv_heads,
                             s.cfg.head_dim, s.param.dtype, s.param.device)

    def _attend(self, li: int, q, k, v, rows: slice, at: int):
        """This rank's heads of one micro-batch: the prompt causally (at 0), else a step against the cache."""
        s, c, j = self.server, self.cache, li - self.layers.start
        kern = ringx.select_kernel(q.device, q.dtype, s.kernel, head_dim=q.shape[-1])
        scale = q.shape[-1] ** -0.5
        if at:
            out, _ = attend_cache(kern, q, c.k[j, rows, :at], c.v[j, rows, :at], k, v, scale)
        else:
            out, _ = kern.forward(q, k, v, True, scale)
        c.k[j, rows, at:at + k.shape[1]] = k
        c.v[j, rows, at:at + k.shape[1]] = v
        return out

    def forward(self, tokens: torch.Tensor, start: int) -> torch.Tensor | None:
        """``tokens`` (batch, n) at positions ``start``.. through this stage, micro-batch by micro-batch; the last
        token's logits (batch, vocab) on the last stage, None elsewhere."""
        s, m = self.server, self.server.model
        n, d = tokens.shape[1], s.cfg.d_model
        cos, sin = s._rope(torch.arange(start, start + n))
        s.weights, s.reduce = self.weights.layers, self.reduce  # what Server._layer computes with
        outs = []
        for idx in self.micro:
            rows = slice(int(idx[0]), int(idx[-1]) + 1)
            if self.prev is None:
                x = m.embed(tokens[rows].to(s.param.device))
            else:
                x = s.comm.recv(torch.empty((len(idx), n, d), dtype=s.param.dtype, device=s.param.device), self.prev)
            for li in self.layers:
                x = s._layer(li, x, cos, sin, lambda li, q, k, v, rows=rows: self._attend(li, q, k, v, rows, start))
            if self.next is None:
                outs.append(m.head(m.norm(x[:, -1])))
            else:
                s.comm.send(x, self.next)
        self.cache.length = start + n
        return torch.cat(outs) if outs else None
