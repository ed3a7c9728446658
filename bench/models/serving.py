"""Inference on ``bench model``'s decoder: context-parallel prefill and greedy decode, the TP baseline, the
unsharded reference and the serving metrics (``docs/serving.md`` says what each algorithm does and why).

A :class:`Server` is one rank's side of one way of serving a batch of prompts: ``prefill(prompt)`` runs the
prompt through the model and returns the first generated token ids, each ``step()`` feeds the last ids back
and returns the next ones (greedy: argmax). Everything runs in eval mode without autograd.

- Context parallel (any ``ringx.ALGORITHMS`` name): the prompt is sharded in the algorithm's layout, each
  layer's attention is ``ringx.attention``, each rank keeps its K/V shard per layer (``ringx.decode``'s decode
  layout: head-sharded for Ulysses), decode attends with ``ringx.decode_attention``; each step's K/V joins the
  sequence shard with the fewest cached tokens (lowest on ties). Weights are replicated, so every rank computes
  the new tokens' dense layers itself.
- ``tp``: Megatron-style tensor parallelism over the same ranks: query heads, K/V heads (replicated when the
  ranks do not divide them, as Megatron does for GQA) and the MLP's hidden units split; one all-reduce after
  the attention output projection and one after the MLP; the prompt is not sharded. Embedding, norms and the
  LM head are replicated.

The ids of a step are decided on rank 0 and broadcast (B integers): ranks computing the same logits could
otherwise break a half-precision near-tie differently, and their caches would diverge.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ringx
from ringx.algorithms.ulysses import kv_replicas
from ringx.comm import Comm, Ledger
from ringx.decode import attend_cache, owner
from ringx.layouts import global_divisor
from ringx_drivers.models import pipeline
from ringx_drivers.models import transformer as models
from ringx_suite.cli import UserError

Tensor = torch.Tensor
TP = "tp"


def names() -> list[str]:
    """What ``bench infer --algorithms`` accepts: every ringx algorithm and the ``tp`` and ``tp{T}pp{S}``
    baselines."""
    return [*ringx.ALGORITHMS, TP, "tp{T}pp{S}"]


def baseline(name: str) -> bool:
    """Whether ``name`` is a model-parallel baseline (``tp``, ``tp{T}pp{S}``) rather than a ringx algorithm."""
    return name == TP or pipeline.parse(name) is not None


def problem(cfg: models.ModelConfig, algorithm: str, prompt_len: int, new_tokens: int, world: int,
            ulysses_degree: int | None = None) -> str:
    """What is wrong with serving this (the same answer on every rank: nothing here is rank-local), or ''."""
    if cfg.arch != "decoder":
        return f"bench infer serves decoders; the {cfg.arch} model has no tokens to generate"
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        return f"--new-tokens must be a positive integer, got {new_tokens!r}"
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 1:
        return f"--prompt-len must be a positive integer, got {prompt_len!r}"
    if algorithm == TP:
        return tp_problem(cfg, world)
    if pipeline.parse(algorithm):
        return pipeline.problem(cfg, *pipeline.parse(algorithm), world)
    if algorithm not in ringx.ALGORITHMS:
        return f"unknown algorithm {algorithm!r}; choose one of {', '.join(names())}"
    lay = ringx.ALGORITHMS[algorithm].layout(True, ulysses_degree)
    div = 2 * world if lay.startswith("zigzag-u") else global_divisor(lay, world)  # USP: pairs of equal chunks
    if prompt_len % div:
        return (f"prompt length {prompt_len} cannot be split by {algorithm}'s {lay} layout over {world} ranks: "
                f"use a multiple of {div}")
    return ""


def tp_problem(cfg: models.ModelConfig, world: int) -> str:
    """Whether Megatron-style TP can split this model over ``world`` ranks ('' if it can)."""
    if cfg.heads % world:
        return f"tp: {cfg.heads} query heads do not split over {world} ranks (use a rank count dividing them)"
    if cfg.mlp % world:
        return f"tp: the MLP's {cfg.mlp} hidden units do not split over {world} ranks"
    return ""


def _check(cfg, algorithm, prompt_len, new_tokens, world, ulysses_degree=None) -> None:
    why = problem(cfg, algorithm, prompt_len, new_tokens, world, ulysses_degree)
    if why:
        raise UserError(why)


class KVCache:
    """Per-layer K/V buffers of one rank, allocated once for the whole generation (no copy per token)."""

    def __init__(self, layers: int, batch: int, capacity: int, heads: int, head_dim: int, dtype, device):
        self.k = torch.empty((layers, batch, capacity, heads, head_dim), dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.length = 0

    def fill(self, layer: int, k: Tensor, v: Tensor, at: int = 0) -> None:
        n = k.shape[1]
        self.k[layer, :, at:at + n] = k
        self.v[layer, :, at:at + n] = v

    def view(self, layer: int) -> tuple[Tensor, Tensor]:
        return self.k[layer, :, :self.length], self.v[layer, :, :self.length]

    @property
    def nbytes(self) -> int:
        """Bytes of the cached K/V (the filled part)."""
        return 2 * self.k[:, :, :self.length].numel() * self.k.element_size()


@dataclass
class Generation:
    ids: Tensor  # (batch, new_tokens) greedy ids
    logits: list[Tensor] = field(default_factory=list)  # per generated token, (batch, vocab), float64 copies


class Server:
    """One rank's side of serving with ``algorithm`` (a ringx name or ``tp``); see the module doc."""

    def __init__(self, model: models.Model, algorithm: str, *, batch: int, prompt_len: int, new_tokens: int,
                 group: dist.ProcessGroup | None = None, kernel: str | None = None,
                 ulysses_degree: int | None = None, keep_logits: bool = False):
        self.cfg, self.model, self.algorithm = model.config, model.eval(), algorithm
        self.group, self.kernel, self.keep_logits = group, kernel, keep_logits
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.batch, self.prompt_len, self.new_tokens = batch, prompt_len, new_tokens
        self.ledger = Ledger()  # what the model moves besides attention (logits, ids, TP's all-reduces)
        self.stats = ringx.CallStats()  # attention's prefill and decode traffic (forward ledger)
        self.comm = Comm(group, self.ledger)
        self.param = next(model.parameters())
        self.logits: list[Tensor] = []
        self.pos = 0
        self.last: Tensor | None = None
        self.cache: KVCache | None = None
        self.lengths: list[int] = []
        self.pp: pipeline.Pipeline | None = None
        self.root = 0  # the rank deciding each step's ids
        if pipeline.parse(algorithm):
            _check(self.cfg, algorithm, prompt_len, new_tokens, self.world)
            self.pp = pipeline.Pipeline(self, *pipeline.parse(algorithm), _TPWeights, KVCache)
            self.root = self.pp.holder
        elif algorithm == TP:
            _check(self.cfg, algorithm, prompt_len, new_tokens, self.world)
            self.tp = _TPWeights(model, self.rank, self.world)
            self.weights, self.reduce = self.tp.layers, self.comm.all_reduce_sum
        else:
            self.weights, self.reduce = _full_weights(model), _same
            algo = ringx.ALGORITHMS.get(algorithm)
            if algo is None:
                raise UserError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(names())}")
            degree = None
            if algo.topology and algo.ulysses:
                topo = ringx.launch.topology(group)
                rpn = None if algo.ulysses == "all" else topo.ranks_per_node
                degree = algo.degree(self.world, ulysses_degree, rpn)
            self.degree = degree if algo.ulysses == "node" else None  # what ringx.attention takes
            _check(self.cfg, algorithm, prompt_len, new_tokens, self.world, degree)
            self.layout = algo.layout(True, degree)
            self.decode = ringx.decode.layout(algorithm, group, ulysses_degree=degree, ledger=self.stats.forward)

    # ---------------------------------------------------------------- the two phases

    @torch.no_grad()
    def prefill(self, prompt: Tensor) -> Tensor:
        """The whole prompt (batch, prompt_len), the same on every rank -> the first generated ids (batch,)."""
        if tuple(prompt.shape) != (self.batch, self.prompt_len):
            raise UserError(f"prompt has shape {tuple(prompt.shape)}, expected ({self.batch}, {self.prompt_len})")
        if self.pp is not None:
            logits = self.pp.forward(prompt, 0)
            self.cache = self.pp.cache
        else:
            logits = self._tp_prefill(prompt) if self.algorithm == TP else self._cp_prefill(prompt)
        self.pos = self.prompt_len
        return self._choose(logits)

    @torch.no_grad()
    def step(self) -> Tensor:
        """Feed the last ids back; the next ids (batch,)."""
        ids = self.last[:, None]
        if self.pp is not None:
            logits = self.pp.forward(ids, self.pos)
        else:
            logits = self._tp_step(ids) if self.algorithm == TP else self._cp_step(ids)
        self.pos += 1
        return self._choose(logits)

    def generate(self, prompt: Tensor) -> Generation:
        """``new_tokens`` ids per sequence: the prefill's, then one per decode step."""
        out = [self.prefill(prompt)]
        for _ in range(self.new_tokens - 1):
            out.append(self.step())
        return Generation(torch.stack(out, dim=1), list(self.logits))

    @property
    def kv_cache_bytes(self) -> int:
        """This rank's cached K/V bytes now."""
        return self.cache.nbytes if self.cache is not None else 0

    def _choose(self, logits: Tensor | None) -> Tensor:
        """The greedy ids, decided on ``self.root`` and broadcast. ``logits`` is None on ranks without them (a
        pipeline's earlier stages): they get the ids only, and the logits too when they are kept (a check)."""
        dev = self.param.device
        if self.keep_logits:
            if self.root:
                if logits is None:
                    logits = torch.empty((self.batch, self.cfg.vocab), dtype=self.param.dtype, device=dev)
                self.comm.broadcast(logits, self.root)
            self.logits.append(logits.to(torch.float64).cpu().clone())
        ids = logits.argmax(-1) if logits is not None else torch.empty(self.batch, dtype=torch.long, device=dev)
        self.comm.broadcast(ids, self.root)
        self.last = ids
        return ids

    def _rope(self, positions: Tensor):
        return models.rope_tables(positions.to(self.param.device), self.cfg.head_dim, self.cfg.rope_theta)

    # ---------------------------------------------------------------- context parallel

    def _layer(self, li: int, x: Tensor, cos, sin, attend) -> Tensor:
        """One decoder layer on this rank's ``x``, as the model's block computes it, with ``self.weights[li]`` (the
        model's own for context parallelism, this rank's Megatron slices for tp, whose projections ``self.reduce``
        sums over the ranks): ``attend(li, q, k, v)`` is the attention's output. One code for every way of serving,
        so at one rank they differ in their attention alone."""
        blk, w, hd = self.model.blocks[li], self.weights[li], self.cfg.head_dim
        b, s, _ = x.shape
        hn = blk.attn_norm(x)
        q = models.apply_rope(F.linear(hn, w["wq"]).view(b, s, -1, hd), cos, sin)
        k = models.apply_rope(F.linear(hn, w["wk"]).view(b, s, -1, hd), cos, sin)
        out = attend(li, q, k, F.linear(hn, w["wv"]).view(b, s, -1, hd))
        x = x + self.reduce(F.linear(out.to(x.dtype).reshape(b, s, -1), w["wo"]))
        hn = blk.mlp_norm(x)
        return x + self.reduce(F.linear(F.silu(F.linear(hn, w["w1"])) * F.linear(hn, w["w3"]), w["w2"]))

    # ---------------------------------------------------------------- context parallel

    def _cp_prefill(self, prompt: Tensor) -> Tensor:
        m, c, P, r = self.model, self.cfg, self.world, self.rank
        positions = ringx.shard(torch.arange(self.prompt_len)[None], self.layout, r, P)[0]
        tokens = ringx.shard(prompt, self.layout, r, P).to(self.param.device)
        captured: list[tuple[Tensor, Tensor]] = []

        def attend(li, q, k, v):
            captured.append((k, v))
            return ringx.attention(q, k, v, algorithm=self.algorithm, causal=True, kernel=self.kernel,
                                   group=self.group, ulysses_degree=self.degree, stats=self.stats)

        x = m.embed(tokens)
        cos, sin = self._rope(positions)
        for li in range(c.layers):
            x = self._layer(li, x, cos, sin, attend)
        everywhere = torch.arange(self.prompt_len)[None]
        holder = next(j for j in range(P) if ringx.shard(everywhere, self.layout, j, P)[0, -1] == self.prompt_len - 1)
        if r == holder:  # the last prompt token's logits only (the whole prompt's would be vocab x S)
            logits = m.head(m.norm(x[:, -1]))
        else:
            logits = torch.empty((self.batch, c.vocab), dtype=x.dtype, device=x.device)
        self.comm.broadcast(logits, holder)
        dl = self.decode
        shards = [dl.cache_from_prefill(k, v) for k, v in captured]
        n0 = shards[0][0].shape[1]
        self.cache = KVCache(c.layers, self.batch, n0 + self.new_tokens, shards[0][0].shape[2], c.head_dim,
                             x.dtype, x.device)
        for li, (k, v) in enumerate(shards):
            self.cache.fill(li, k, v)
        self.cache.length = n0
        # every shard's length, known alike on every rank: prefill shards are equal (the layouts split evenly)
        self.lengths = [n0] * dl.shards
        return logits

    def _cp_step(self, ids: Tensor) -> Tensor:
        m, dl = self.model, self.decode
        at = owner(self.lengths)

        def attend(li, q, k, v):
            kc, vc = self.cache.view(li)
            o = ringx.decode_attention(q, kc, vc, k, v, layout=dl, at=at, kernel=self.kernel, stats=self.stats,
                                       validate=li == 0)
            mine = dl.new_kv(k, v, at)
            if mine is not None:
                self.cache.fill(li, *mine, at=self.cache.length)
            return o

        x = m.embed(ids.to(self.param.device))
        cos, sin = self._rope(torch.arange(self.pos, self.pos + ids.shape[1]))
        for li in range(self.cfg.layers):
            x = self._layer(li, x, cos, sin, attend)
        if at == dl.shard:
            self.cache.length += ids.shape[1]
        self.lengths[at] += ids.shape[1]
        return m.head(m.norm(x[:, -1]))

    # ---------------------------------------------------------------- tensor parallel

    def _tp_attend(self, li: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """This rank's heads: the prompt causally (filling the cache), or a step against the cache (appending)."""
        kern = ringx.select_kernel(q.device, q.dtype, self.kernel, head_dim=q.shape[-1])
        scale = q.shape[-1] ** -0.5
        if self.cache.length:
            kc, vc = self.cache.view(li)
            out, _ = attend_cache(kern, q, kc, vc, k, v, scale)
            self.cache.fill(li, k, v, at=self.cache.length)
        else:
            out, _ = kern.forward(q, k, v, True, scale)
            self.cache.fill(li, k, v)
        return out

    def _tp_prefill(self, prompt: Tensor) -> Tensor:
        m, c = self.model, self.cfg
        self.cache = KVCache(c.layers, self.batch, self.prompt_len + self.new_tokens, self.tp.kv_heads, c.head_dim,
                             self.param.dtype, self.param.device)
        x = m.embed(prompt.to(self.param.device))
        cos, sin = self._rope(torch.arange(self.prompt_len))
        for li in range(c.layers):
            x = self._layer(li, x, cos, sin, self._tp_attend)
        self.cache.length = self.prompt_len
        return m.head(m.norm(x[:, -1]))

    def _tp_step(self, ids: Tensor) -> Tensor:
        m = self.model
        x = m.embed(ids.to(self.param.device))
        cos, sin = self._rope(torch.arange(self.pos, self.pos + ids.shape[1]))
        for li in range(self.cfg.layers):
            x = self._layer(li, x, cos, sin, self._tp_attend)
        self.cache.length += ids.shape[1]
        return m.head(m.norm(x[:, -1]))


def _same(x: Tensor) -> Tensor:
    return x


def _full_weights(model: models.Model) -> list[dict[str, Tensor]]:
    """Every layer's dense weights as :class:`_TPWeights` holds a rank's slices (the parameters themselves)."""
    return [{"wq": b.attn.wq.weight, "wk": b.attn.wk.weight, "wv": b.attn.wv.weight, "wo": b.attn.wo.weight,
             "w1": b.mlp.w1.weight, "w3": b.mlp.w3.weight, "w2": b.mlp.w2.weight} for b in model.blocks]


class _TPWeights:
    """This rank's Megatron slices: rows of wq/wk/wv/w1/w3 (column-parallel), columns of wo/w2 (row-parallel).

    K/V heads: with ``r = kv_replicas(kv_heads, P)`` copies of each (1 when P divides them), rank j takes the
    j-th of P equal runs, so its query heads' K/V heads are all here."""

    def __init__(self, model: models.Model, rank: int, world: int):
        c = model.config
        hd, P = c.head_dim, world
        self.heads = c.heads // P
        reps = kv_replicas(c.kv_heads, P)
        self.kv_heads = c.kv_heads * reps // P
        qs = slice(rank * self.heads * hd, (rank + 1) * self.heads * hd)
        ms = slice(rank * (c.mlp // P), (rank + 1) * (c.mlp // P))

        def kv_rows(w: Tensor) -> Tensor:
            per = w.view(c.kv_heads, hd, -1).repeat_interleave(reps, dim=0)
            return per[rank * self.kv_heads:(rank + 1) * self.kv_heads].reshape(self.kv_heads * hd, -1).clone()

        self.layers = []
        for blk in model.blocks:
            a, f = blk.attn, blk.mlp
            self.layers.append({
                "wq": a.wq.weight[qs].clone(), "wk": kv_rows(a.wk.weight), "wv": kv_rows(a.wv.weight),
                "wo": a.wo.weight[:, qs].clone(), "w1": f.w1.weight[ms].clone(), "w3": f.w3.weight[ms].clone(),
                "w2": f.w2.weight[:, ms].clone()})


# ------------------------------------------------------------------------------------------ reference


@torch.no_grad()
def reference_generate(model: models.Model, prompt: Tensor, new_tokens: int) -> Generation:
    """Greedy generation by the unsharded model, recomputing the whole sequence with plain attention for every
    token (no cache: an independent reference)."""
    model.eval()
    seq, logits, ids = prompt, [], []
    attend = models.plain_attention(True)
    for _ in range(new_tokens):
        out = model(seq, torch.arange(seq.shape[1]), attend)[:, -1]
        logits.append(out.to(torch.float64).clone())
        nxt = out.argmax(-1)
        ids.append(nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
    return Generation(torch.stack(ids, dim=1), logits)


def prompt_tokens(cfg: models.ModelConfig, batch: int, prompt_len: int, seed: int = 0) -> Tensor:
    """Synthetic prompts, the same on every rank for one seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab, (batch, prompt_len), generator=g)


def logits_error(got: Sequence[Tensor], want: Sequence[Tensor]) -> float:
    """The largest relative error of any step's logits (max |diff| / max |want|, per step)."""
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want, strict=True))


@dataclass(frozen=True)
class Agreement:
    """How a generation agrees with the float64 reference's (``agreement``)."""

    agree_tokens: int  # leading generated positions whose ids equal the reference's in every sequence
    first_divergence: int | None  # the first position where some sequence's id differs (None: none does)
    margin: float | None  # the reference's top1 - top2 logit there (the smallest over the diverging sequences)
    logits_error: float  # max relative logits error over the steps whose inputs agree (up to the divergence)

    def describe(self, new_tokens: int) -> str:
        if self.first_divergence is None:
            return f"ids equal ({new_tokens} tokens), logits error {self.logits_error:.2e}"
        return (f"ids agree for {self.agree_tokens}/{new_tokens} tokens, then differ (reference margin "
                f"{self.margin:.2e} at token {self.first_divergence}), logits error {self.logits_error:.2e} up to it")


def agreement(ids: Tensor, logits: Sequence[Tensor], ref: Generation) -> Agreement:
    """``ids`` (batch, new_tokens) and each step's ``logits`` against the reference's: how many leading ids
    agree, where they first differ, how close the reference's choice was there, and the logits error over the
    steps computed from the same inputs as the reference's (the steps up to and including the divergence: after
    it the sequences differ, and their logits are no longer comparable)."""
    same = ids == ref.ids
    diverged = [j for j in range(same.shape[1]) if not bool(same[:, j].all())]
    first = diverged[0] if diverged else None
    upto = same.shape[1] if first is None else first + 1
    margin = None
    if first is not None:
        top = ref.logits[first].topk(2, dim=-1).values  # (batch, 2)
        gaps = (top[:, 0] - top[:, 1])[~same[:, first]]
        margin = float(gaps.min())
    return Agreement(upto if first is None else first, first, margin,
                     logits_error(logits[:upto], ref.logits[:upto]))


# ------------------------------------------------------------------------------------------ metrics


def metrics(prefill_s: float, step_s: Sequence[float], *, batch: int, prompt_len: int,
            kv_cache_bytes: Sequence[int], generated: Sequence[int]) -> dict:
    """The serving record's figures from timed phases (each the slowest rank's time).

    ``prefill_s``: the prompt in, the first generated ids out (so it *is* the time to first token);
    ``step_s``: each decode step's time (one token per sequence in, the next out); ``kv_cache_bytes``: every
    rank's cached K/V bytes at the end; ``generated``: the first sequence's ids. ``tpot_s`` and
    ``decode_tokens_per_s`` are None when only one token was generated (no decode step).
    """
    if not prefill_s > 0 or any(not t > 0 for t in step_s):
        raise ValueError("phase times must be positive")
    steps = list(step_s)
    return {
        "ttft_s": prefill_s,
        "tpot_s": statistics.median(steps) if steps else None,
        "prefill_tokens_per_s": batch * prompt_len / prefill_s,
        "decode_tokens_per_s": batch * len(steps) / sum(steps) if steps else None,
        "kv_cache_bytes": max(kv_cache_bytes),
        "generated": [int(i) for i in generated],
    }
