"""The serving matrix (``bench.models.serving``), shared by pytest and the MPI worker.

Every algorithm of the registry and ``tp`` on the tiny decoder in float64 at 1-4 ranks: greedy ids equal to the
unsharded model's and every generated token's logits within TOL; usp/usp-ringx at every Ulysses degree dividing
the ranks; ``ringx.decode_attention`` alone on random caches of unequal lengths (one shard empty), MHA and GQA,
several new tokens, with and without attention sinks; and the bad inputs that must fail alike on every rank. The
4-rank launch simulates 2 nodes of 2 ranks (usp's default degree 2: a real Ulysses x ring decode).
"""

from __future__ import annotations

from dataclasses import dataclass

WORLDS = (1, 2, 3, 4)
RANKS_PER_NODE = {4: 2}
PROMPT = 48  # divisible by 2P for P = 1..4
NEW = 5
BATCH = 2
TOL = 1e-9
TP_MLP3 = 264  # tiny's MLP (256) does not split over 3 ranks; this does (over 1-4)


@dataclass(frozen=True)
class ServeCase:
    world: int
    algorithm: str
    degree: int | None = None
    mlp: int | None = None  # override of tiny's MLP width
    heads: tuple[int, int] | None = None  # override of tiny's (heads, kv_heads)
    layers: int | None = None  # override of tiny's 2 layers (pipeline stages of unequal depth)
    prompt: int = PROMPT
    new: int = NEW
    expect_error: str = ""  # a fragment of the one-line error every rank must raise

    @property
    def id(self) -> str:
        parts = [f"P{self.world}", self.algorithm]
        if self.degree is not None:
            parts.append(f"u{self.degree}")
        if self.mlp:
            parts.append(f"mlp{self.mlp}")
        if self.heads:
            parts.append(f"h{self.heads[0]}kv{self.heads[1]}")
        if self.layers:
            parts.append(f"L{self.layers}")
        if self.prompt != PROMPT:
            parts.append(f"S{self.prompt}")
        if self.new != NEW:
            parts.append(f"N{self.new}")
        return "-".join(parts)


def serve_cases(world: int) -> list[ServeCase]:
    import ringx

    out = []
    for name in ringx.ALGORITHMS:
        out.append(ServeCase(world, name))
        if ringx.ALGORITHMS[name].ulysses == "node":
            out += [ServeCase(world, name, u) for u in range(1, world + 1) if world % u == 0]
    if world == 3:
        out += [ServeCase(world, "tp", expect_error="MLP's 256 hidden units do not split over 3 ranks"),
                ServeCase(world, "tp", mlp=TP_MLP3)]
    else:
        out.append(ServeCase(world, "tp"))
    out.append(ServeCase(world, "ring", heads=(12, 12)))  # MHA
    out.append(ServeCase(world, "zigzag", new=1))  # the prefill's token only
    out.append(ServeCase(world, "zigzag", new=0, expect_error="--new-tokens must be a positive integer"))
    if world > 1:
        out.append(ServeCase(world, "zigzag", prompt=PROMPT + 1, expect_error="cannot be split by zigzag"))
    if world == 4:
        out.append(ServeCase(world, "tp", heads=(6, 2), expect_error="6 query heads do not split over 4 ranks"))
    # tensor x pipeline parallelism (bench/models/pipeline.py): 2 stages of 2, micro-batched; one stage per rank
    if world == 2:
        out += [ServeCase(world, "tp1pp2"), ServeCase(world, "tp2pp1")]
    if world == 3:  # stages of 2, 1 and 1 layers; 2 micro-batches for 3 stages
        out.append(ServeCase(world, "tp1pp3", layers=4))
    if world == 4:
        out += [ServeCase(world, "tp2pp2"), ServeCase(world, "tp2pp2", layers=3),
                ServeCase(world, "tp1pp4", expect_error="4 pipeline stages need at least 4 layers, the model has 2"),
                ServeCase(world, "tp4pp2", expect_error="tp4pp2 needs 8 ranks (tp x pp), not 4")]
    return out


@dataclass(frozen=True)
class DecodeCase:
    world: int
    algorithm: str
    kv_heads: int
    new: int  # new tokens per sequence
    sinks: bool = False  # with attention-sink logits

    @property
    def id(self) -> str:
        return f"P{self.world}-decode-{self.algorithm}-kv{self.kv_heads}-t{self.new}" + ("-sinks" if self.sinks else "")


HEADS = 12


def decode_cases(world: int) -> list[DecodeCase]:
    import ringx

    return [DecodeCase(world, name, kv, t, sinks) for name in ringx.ALGORITHMS
            for kv, t, sinks in ((12, 3, False), (4, 1, True))]
