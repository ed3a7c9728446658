"""Serving predictions: time to first token (prefill) and time per output token (decode), per algorithm and TP.

What is costed is what ``bench.models.serving`` runs (docs/serving.md):

- **Prefill** (TTFT): per layer, the algorithm's attention forward over the prompt (its traced schedule,
  ``costmodel.predict`` in mode "fwd"), the dense layers over this rank's S/P tokens (weights replicated, so
  compute bound), and for the ``heads`` schedule the all-to-all that turns the prefill shard into head shards;
  then the last token's LM head, the broadcast of its logits from the rank holding it, and of the ids.
- **Decode** (TPOT), per output token: per layer the dense layers of the new token on every rank (weights
  replicated, read once per step: memory bound), the attention of the new token over this rank's cache shard
  (the shard's K/V read once: memory bound) and the decode schedule's merge of the ranks' partials
  (:func:`decode_messages`, the operations ``ringx.decode`` performs, tested against its ledger); then the
  LM head and the broadcast of the ids.
- **TP** (Megatron, as ``bench.models.serving``): heads, K/V heads (replicated P / gcd(kv_heads, P) times when the ranks
  do not divide them) and MLP split over the P ranks, so weights and cache are split; the prompt is not sharded;
  two all-reduces of (batch, tokens, d_model) per layer; embedding, norms and LM head replicated.

Local work is a roofline: max(bytes / HBM bandwidth, FLOPs / the machine's throughput). Communication uses the
machine's links as the training model does (``Machine.comm_s``), except the ring decode's chain of 2(R-1)
point-to-point hops, each costed on the level it crosses (ranks numbered node by node).

Known to be wrong: kernel launch and framework overheads per layer are not modelled (at one token per sequence
they can dominate a small model's TPOT on real hardware); the dense layers' throughput is taken to be the
attention throughput; no overlap of the merge with the next layer; HBM bandwidth is the published peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ringx_suite.dtypes import DTYPES, accumulate_bytes, element_bytes

from .machine import Machine

ID_BYTES = 8  # the generated ids, int64, broadcast from rank 0 each step
TP = "tp"


@dataclass(frozen=True)
class Decoder:
    """The dimensions of a decoder that the cost needs (bench.models.ModelConfig's, without torch)."""

    layers: int
    d_model: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def layer_params(self) -> int:
        """wq, wk, wv, wo and the SwiGLU MLP's w1, w3, w2 (no biases; norms are negligible)."""
        d, hd = self.d_model, self.head_dim
        return 2 * d * self.heads * hd + 2 * d * self.kv_heads * hd + 3 * d * self.mlp

    @property
    def head_params(self) -> int:
        """The LM head (the embedding is a lookup of B rows per step)."""
        return self.vocab * self.d_model


# bench.models.PRESETS' decoders (tests/test_serving_model.py checks they agree). llama3-8b is the preset's 4 of
# Llama-3-8B's 32 layers; --layers 32 predicts the whole model (times scale with the layers, the last token's
# head and broadcasts aside).
MODELS: dict[str, Decoder] = {
    "tiny": Decoder(layers=2, d_model=96, heads=12, kv_heads=4, mlp=256, vocab=256),
    "llama3-8b": Decoder(layers=4, d_model=4096, heads=32, kv_heads=8, mlp=14336, vocab=128256),
    "ra-sp": Decoder(layers=4, d_model=8192, heads=16, kv_heads=16, mlp=32768, vocab=32000),
}


def kv_replicas(kv_heads: int, degree: int) -> int:
    """ringx.algorithms.ulysses.kv_replicas: copies of each K/V head so that every rank gets whole heads."""
    return degree // math.gcd(kv_heads, degree)


# ------------------------------------------------------------------------------------------ decode schedules


@dataclass(frozen=True)
class Message:
    """One operation of a decode schedule, per layer and step.

    ``nbytes``: one rank's payload as ``ringx.comm.Comm`` takes it (all_gather: this rank's piece; sendrecv: one
    hop's partial; all_to_all: the whole tensor). ``group``: "shards" (one rank per sequence shard holding the
    same heads: all ranks outside the ``heads`` schedule) or "heads" (the Ulysses group of one shard).
    """

    op: str  # "sendrecv" (the ring chain: 2(R-1) sequential hops), "all_reduce", "all_gather", "all_to_all"
    nbytes: int
    group: str


@dataclass(frozen=True)
class DecodeShape:
    """Where the cache lives: ``u`` ranks per sequence shard (1 outside the ``heads`` schedule), P/u shards."""

    algorithm: str
    schedule: str  # ringx.decode.SCHEDULES
    merge: str  # across shards: "ring", "allreduce", "allgather" or "none"
    world: int
    u: int

    @property
    def shards(self) -> int:
        return self.world // self.u

    def group_size(self, group: str) -> int:
        return self.u if group == "heads" else self.shards

    def members(self, group: str, rank: int = 0) -> list[int]:
        """The ranks of ``rank``'s group, as ringx.topology.Topology.grid numbers them."""
        if group == "heads":
            start = rank - rank % self.u
            return list(range(start, start + self.u))
        return list(range(rank % self.u, self.world, self.u))


def decode_shape(algorithm: str, world: int, *, heads: int, ulysses_degree: int | None = None,
                 gpus_per_node: int | None = None) -> DecodeShape:
    """The decode layout ``ringx.decode.layout`` makes: the Ulysses degree of usp/usp-ringx defaults to the
    ranks per node (``gpus_per_node``), ulysses' is the world. ValueError where it cannot run."""
    from ringx import algorithms
    from ringx.decode import SCHEDULES, SHARD_MERGE

    if algorithm not in SCHEDULES:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join([*SCHEDULES, TP])}")
    sched = SCHEDULES[algorithm]
    if sched != "heads":
        return DecodeShape(algorithm, sched, sched, world, 1)
    algo = algorithms.ALGORITHMS[algorithm]
    u = algo.degree(world, ulysses_degree, min(world, gpus_per_node or world))
    if u is None or u < 1 or world % u or heads % u:
        raise ValueError(f"{algorithm}: Ulysses degree {u} must divide the {world} ranks and the {heads} heads")
    return DecodeShape(algorithm, sched, SHARD_MERGE[algorithm], world, u)


def partial_bytes(batch: int, tokens: int, heads: int, head_dim: int, dtype: str) -> int:
    """One partial result (out (B, t, h, D) and lse (B, h, t)) in the accumulation dtype, packed as decode does."""
    return (batch * tokens * heads * head_dim + batch * heads * tokens) * accumulate_bytes(dtype)


def decode_messages(shape: DecodeShape, *, batch: int, heads: int, head_dim: int, dtype: str = "bfloat16",
                    new_tokens: int = 1) -> list[Message]:
    """The operations of one layer's decode attention (``ringx.decode.decode_attention``), in order."""
    h = heads // shape.u
    part = partial_bytes(batch, new_tokens, h, head_dim, dtype)
    out: list[Message] = []
    if shape.shards > 1:
        if shape.merge == "ring":
            out.append(Message("sendrecv", part, "shards"))
        elif shape.merge == "allreduce":
            out += [Message("all_reduce", batch * h * new_tokens * accumulate_bytes(dtype), "shards"),  # max lse
                    Message("all_reduce", part, "shards")]  # shifted numerator and denominator
        elif shape.merge == "allgather":
            out.append(Message("all_gather", part, "shards"))
    if shape.u > 1:
        out.append(Message("all_gather", part, "heads"))  # the heads, within the Ulysses group
    return out


def _chain(p: int, i: int) -> tuple[int, int]:
    """(sends, receives) of position ``i`` in ringx.decode's ring merge over ``p`` ranks."""
    if i == 0:
        return (1 + (p > 2), 1)
    if i == p - 1:
        return (1, 1)
    return (1 if i == p - 2 else 2, 2)


def ledger(messages: list[Message], shape: DecodeShape, rank: int) -> dict[str, dict[str, int]]:
    """What ``rank``'s ``ringx.comm.Ledger.as_dict()`` records for these messages (ops of a group of one rank
    record nothing, as Comm does)."""
    book: dict[str, dict[str, int]] = {}

    def add(op: str, calls: int, sent: int, received: int) -> None:
        s = book.setdefault(op, {"calls": 0, "sent": 0, "received": 0})
        s["calls"] += calls
        s["sent"] += sent
        s["received"] += received

    for m in messages:
        size = shape.group_size(m.group)
        if size == 1:
            continue
        if m.op == "sendrecv":
            sends, recvs = _chain(size, shape.members(m.group, rank).index(rank))
            add("send", sends, sends * m.nbytes, 0)
            add("recv", recvs, 0, recvs * m.nbytes)
        elif m.op == "all_reduce":
            add("all_reduce", 1, m.nbytes, m.nbytes)
        elif m.op == "all_gather":
            add("all_gather", 1, m.nbytes, m.nbytes * (size - 1))
        elif m.op == "all_to_all":
            moved = m.nbytes - m.nbytes // size
            add("all_to_all", 1, moved, moved)
        else:
            raise ValueError(f"unknown op {m.op!r}")
    return dict(sorted(book.items()))


# ------------------------------------------------------------------------------------------ costing


def _nodes(ranks: list[int], gpus_per_node: int) -> int:
    return len({r // gpus_per_node for r in ranks})


def message_s(m: Message, shape: DecodeShape, machine: Machine, gpus_per_node: int) -> float:
    """Seconds of one decode message on the machine (the slowest group's: all groups are alike)."""
    members = shape.members(m.group)
    size = len(members)
    if size == 1:
        return 0.0
    if m.op == "sendrecv":  # 0 -> 1 -> ... -> R-1, then R-1 -> 0 -> ... -> R-2, each hop on its own level
        hops = list(zip(members, members[1:])) + [(members[-1], members[0])] + list(zip(members, members[1:-1]))
        return sum(machine.comm_s("sendrecv", m.nbytes, 2, _nodes([a, b], gpus_per_node)) for a, b in hops)
    nbytes = m.nbytes * size if m.op == "all_gather" else m.nbytes  # nccl-tests' size convention
    return machine.comm_s(m.op, nbytes, size, _nodes(members, gpus_per_node))


def _roofline(machine: Machine, nbytes: float, flops: float) -> float:
    return max(nbytes / (machine.hbm_GBps * 1e9), flops / machine.flops_per_s)


@dataclass
class ServingPrediction:
    algorithm: str
    schedule: str  # the decode schedule ("tp" for the baseline)
    ranks: int
    nodes: int
    cache_tokens: int
    ulysses_degree: int | None
    ttft_s: float
    tpot_s: float
    prefill_attention_s: float  # all layers
    prefill_rest_s: float  # dense layers, cache all-to-all / TP all-reduces, last token's head and broadcasts
    decode_attention_s: float  # per token, all layers: the local attention over the cache shard
    decode_merge_s: float  # per token, all layers: the schedule's communication (TP: its two all-reduces)
    decode_dense_s: float  # per token: the dense layers and LM head, and the ids' broadcast
    kv_cache_bytes: int  # the largest rank's, every layer


def _check(machine: Machine, model: Decoder, p: int, cache_tokens: int, batch: int, dtype: str) -> None:
    if getattr(machine, "hbm_GBps", None) is None:
        raise ValueError(f"machine {machine.name} has no hbm_GBps in its [model] table: serving predictions need "
                         "the device memory bandwidth")
    for name, v in (("ranks", p), ("cache tokens", cache_tokens), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")


def predict_serving(algorithm: str, p: int, machine: Machine, *, gpus_per_node: int, model: Decoder,
                    cache_tokens: int, batch: int = 1, dtype: str = "bfloat16", ulysses_degree: int | None = None,
                    prefill: bool = True) -> ServingPrediction:
    """Predicted TTFT (a prompt of ``cache_tokens``) and TPOT (one token per sequence against a cache of
    ``cache_tokens``) of ``algorithm`` (a ringx name or ``tp``) on ``p`` ranks. ``prefill=False`` skips the
    traced prefill of a context-parallel algorithm (ttft_s is then NaN; TP's prefill is not traced: always
    given). ValueError where the algorithm cannot run there."""
    _check(machine, model, p, cache_tokens, batch, dtype)
    nodes = max(1, math.ceil(p / gpus_per_node))
    if algorithm == TP:
        return _tp(p, machine, gpus_per_node, nodes, model, cache_tokens, batch, dtype)
    m, item = model, element_bytes(dtype)
    shape = decode_shape(algorithm, p, heads=m.heads, ulysses_degree=ulysses_degree, gpus_per_node=gpus_per_node)
    hd, u = m.head_dim, shape.u
    kvh = m.kv_heads * kv_replicas(m.kv_heads, u) // u
    shard = math.ceil(cache_tokens / shape.shards)  # balanced: no shard more than a token over another
    # decode, per layer: the replicated dense layers, the cache shard, the merge
    dense = _roofline(machine, m.layer_params * item, 2 * m.layer_params * batch)
    attn = _roofline(machine, 2 * batch * shard * kvh * hd * item, 4 * batch * (m.heads // u) * hd * shard)
    merge = sum(message_s(msg, shape, machine, gpus_per_node)
                for msg in decode_messages(shape, batch=batch, heads=m.heads, head_dim=hd, dtype=dtype))
    ids = machine.comm_s("broadcast", batch * ID_BYTES, p, nodes)
    head = _roofline(machine, m.head_params * item, 2 * m.head_params * batch)
    decode_dense = m.layers * dense + head + ids
    tpot = m.layers * (dense + attn + merge) + head + ids
    pre_attn, pre_rest = math.nan, math.nan
    if prefill:
        from .predict import predict

        uly = u if shape.schedule == "heads" and algorithm != "ulysses" else None
        pre_attn = m.layers * predict(algorithm, True, "fwd", p, machine, nodes=nodes, batch=batch, seq=cache_tokens,
                                      heads=m.heads, kv_heads=m.kv_heads, head_dim=hd, dtype=dtype, exact_ranks=16,
                                      ulysses_degree=uly).total_s
        local = cache_tokens // p
        layer = _roofline(machine, m.layer_params * item, 2 * m.layer_params * batch * local)
        if u > 1:  # the prefill K/V shard to head shards (bench.models.serving: DecodeLayout.cache_from_prefill)
            kv = 2 * batch * local * m.kv_heads * kv_replicas(m.kv_heads, u) * hd * item
            layer += machine.comm_s("all_to_all", kv, u, _nodes(shape.members("heads"), gpus_per_node))
        last = (_roofline(machine, m.head_params * item, 2 * m.head_params * batch)
                + machine.comm_s("broadcast", batch * m.vocab * item, p, nodes) + ids)
        pre_rest = m.layers * layer + last
    degree = u if shape.schedule == "heads" else None
    return ServingPrediction(algorithm, shape.schedule, p, nodes, cache_tokens, degree,
                             pre_attn + pre_rest, tpot, pre_attn, pre_rest, m.layers * attn, m.layers * merge,
                             decode_dense, m.layers * 2 * batch * shard * kvh * hd * item)


def tp_problem(model: Decoder, p: int) -> str:
    """The rule of the drivers' tp_problem (bench/models/serving.py): the query heads and the MLP's hidden units must
    divide by the ranks."""
    if model.heads % p:
        return f"tp: {model.heads} query heads do not split over {p} ranks"
    if model.mlp % p:
        return f"tp: the MLP's {model.mlp} hidden units do not split over {p} ranks"
    return ""


def tp_messages(model: Decoder, p: int, *, batch: int, tokens: int, dtype: str = "bfloat16") -> list[Message]:
    """TP's operations per layer: one all-reduce after the attention's output projection, one after the MLP."""
    n = batch * tokens * model.d_model * element_bytes(dtype)
    return [Message("all_reduce", n, "shards"), Message("all_reduce", n, "shards")] if p > 1 else []


def _tp(p: int, machine: Machine, gpus_per_node: int, nodes: int, model: Decoder, cache_tokens: int, batch: int,
        dtype: str) -> ServingPrediction:
    why = tp_problem(model, p)
    if why:
        raise ValueError(why)
    m, item, hd = model, element_bytes(dtype), model.head_dim
    h, kvh = m.heads // p, m.kv_heads * kv_replicas(m.kv_heads, p) // p
    shape = DecodeShape(TP, TP, "none", p, 1)

    def reduces(tokens: int) -> float:
        return sum(message_s(x, shape, machine, gpus_per_node)
                   for x in tp_messages(m, p, batch=batch, tokens=tokens, dtype=dtype))

    ids = machine.comm_s("broadcast", batch * ID_BYTES, p, nodes)
    head = _roofline(machine, m.head_params * item, 2 * m.head_params * batch)
    dense = _roofline(machine, m.layer_params * item / p, 2 * m.layer_params * batch / p)
    attn = _roofline(machine, 2 * batch * cache_tokens * kvh * hd * item, 4 * batch * h * hd * cache_tokens)
    merge = reduces(1)
    tpot = m.layers * (dense + attn + merge) + head + ids
    s = cache_tokens
    pairs = s * (s + 1) / 2
    pre_attn = m.layers * 4 * batch * h * hd * pairs / machine.block_rate("fwd", True, s, s, max(1, p // nodes))
    pre_layer = _roofline(machine, m.layer_params * item / p, 2 * m.layer_params * batch * s / p) + reduces(s)
    pre_rest = m.layers * pre_layer + head + ids
    return ServingPrediction(TP, TP, p, nodes, cache_tokens, None, pre_attn + pre_rest, tpot, pre_attn, pre_rest,
                             m.layers * attn, m.layers * merge, m.layers * dense + head + ids,
                             m.layers * 2 * batch * cache_tokens * kvh * hd * item)


__all__ = ["MODELS", "TP", "Decoder", "DecodeShape", "Message", "ServingPrediction", "decode_messages",
           "decode_shape", "ledger", "message_s", "partial_bytes", "predict_serving", "tp_messages", "tp_problem"]
