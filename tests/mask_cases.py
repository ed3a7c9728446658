"""The masks' multi-rank matrix, shared by pytest and the MPI worker (tests/workers/mask_cases.py).

Launches: 1-4 ranks on one node, every algorithm; 4 ranks as 2 simulated nodes x 2
(RINGX_RANKS_PER_NODE=2), the topology-aware algorithms. Every algorithm meets every
mask; MHA and GQA alternate along the matrix, and attention sinks go on and off, so each
algorithm runs MHA and GQA with and without sinks, and each mask runs with and without them.
float64 against a dense masked float64 softmax, to 1e-10 (tests/cases.py's tolerance).
12 query heads divide every Ulysses degree up to 4; 4 K/V heads need replicas at degree 3.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch

from ringx import ALGORITHMS, Mask

INF = float("inf")

LAUNCHES = ((1, 0), (2, 0), (3, 0), (4, 0), (4, 2))  # (ranks, simulated ranks per node; 0: one node)
SEQ_LOCAL = 24  # a multiple of 2 (zigzag) for every layout
TOL = 1e-10
QUANTITIES = ("out", "lse", "dq", "dk", "dv")
SHAPES = ((1, 12, 12, 8), (2, 12, 4, 8))  # (batch, heads, kv_heads, head_dim): MHA, GQA
# fresh random masks (tests/mask_cases.py random_mask, from the run's seed) each algorithm meets per launch, beside
# the fixed ones; RINGX_RANDOM_MASKS=N for a longer run
RANDOM = int(os.environ.get("RINGX_RANDOM_MASKS", 2))


def doc_lengths(seq: int, seed: int = 7) -> list[int]:
    """Seeded lengths summing to ``seq``: a one-token document, odd lengths, documents crossing shards."""
    gen = torch.Generator().manual_seed(seed + seq)
    lengths, left = [1], seq - 1
    while left:
        n = min(left, int(torch.randint(1, max(2, seq // 2), (), generator=gen)))
        lengths.append(n)
        left -= n
    return lengths


def random_lengths(rng: random.Random, seq: int) -> list[int]:
    """Document lengths of any kind summing to ``seq``: many one-token documents, a few spanning several shards,
    or a mix; in a random order."""
    style = rng.choice(("ones", "long", "mixed", "one"))
    if style == "one":
        return [seq]
    top = {"ones": 3, "long": seq, "mixed": max(2, seq // 3)}[style]
    lengths, left = [], seq
    while left:
        n = min(left, rng.randint(1, top))
        lengths.append(n)
        left -= n
    rng.shuffle(lengths)
    return lengths


def random_groups(rng: random.Random, seq: int) -> list[tuple[int, list[int]]]:
    """Shared-prefix groups filling ``seq`` (>= 2) tokens: each a prompt and one or more responses, of any lengths."""
    sizes = [2 * n for n in random_lengths(rng, seq // 2)]  # groups of at least 2 tokens
    sizes[-1] += seq - sum(sizes)  # an odd length's last token
    groups = []
    for n in sizes:
        prompt = rng.randint(1, n - 1)
        groups.append((prompt, random_lengths(rng, n - prompt)))
    return groups


def random_slices(rng: random.Random, seq: int) -> Mask:
    """A general mask of slices: rows cut into random bands; each band's keys cut at random points and at the band's
    own edges; the keys of its own rows get a band that includes the diagonal (so every query sees a key), the
    others nothing, everything, causal or any band."""
    def bounds(near: int) -> tuple[float, float]:
        return rng.choice(((-INF, INF), (0, INF), (-INF, 0), (-rng.randint(0, near), rng.randint(0, near))))

    slices, a = [], 0
    for n in random_lengths(rng, seq):
        b = a + n
        edges = sorted({0, a, b, seq, *(rng.randint(0, seq) for _ in range(rng.randint(0, 3)))})
        for c, d in zip(edges, edges[1:]):
            if a <= c < b:  # the band's own keys: a band through the diagonal (every query sees itself)
                lo, hi = rng.choice(((-INF, INF), (0, INF), bounds(4)))
                slices.append((a, b, c, d, min(lo, 0), max(hi, 0)))
            elif rng.random() < 0.6:
                lo, hi = bounds(seq)
                slices.append((a, b, c, d, min(lo, hi), max(lo, hi)))
        a = b
    return Mask.from_slices(slices)


KINDS = ("full", "causal", "window", "window2", "docs", "docs-full", "docs-window", "docs-full-window", "prefix",
         "prefix-docs", "blocks", "blocks-docs", "shared", "slices")


def random_mask(rng: random.Random, seq: int) -> Mask:
    """A mask of any kind ringx has, drawn at random for a global length ``seq``: full, causal, one- and two-sided
    windows (narrower than a token up to wider than the sequence), documents (causal or not, with or without a
    window), prefix-LM and block-causal (over the sequence or within documents), shared prefixes, and general
    slices."""
    width = lambda: rng.choice((0, 1, rng.randint(0, seq), seq + rng.randint(0, 5)))  # noqa: E731
    kind = rng.choice(KINDS)
    if kind in ("full", "causal"):
        return Mask.full() if kind == "full" else Mask.causal()
    if kind.startswith("window"):
        return Mask.window(width(), width() if kind == "window2" else 0)
    docs = random_lengths(rng, seq) if kind.endswith("docs") else None
    if kind.startswith("prefix"):
        return Mask.prefix_lm(max(1, width()), docs)
    if kind.startswith("blocks"):
        return Mask.block_causal(max(1, width()), docs)
    if kind == "shared":
        return Mask.shared_prefix(random_groups(rng, seq))
    if kind == "slices":
        return random_slices(rng, seq)
    return Mask.documents(random_lengths(rng, seq), causal="full" not in kind,
                          window=width() if kind.endswith("window") else None)


def shared_groups(seq: int) -> list[tuple[int, list[int]]]:
    """A shared prefix for ``seq`` (>= 24) tokens: a long prompt with three responses (one of a token), then a short
    group."""
    p, rs = seq // 3 + 1, [seq // 6, 1, seq // 5]
    rest = seq - p - sum(rs)
    return [(p, rs), (rest // 2, [rest - rest // 2])]


def masks(seq: int, seed: int | None = None) -> dict[str, Mask]:
    """name -> mask for a global length ``seq`` (= SEQ_LOCAL x ranks); with a ``seed``, also ``RANDOM`` random
    masks drawn from it ("random0", ...)."""
    n = SEQ_LOCAL
    docs = doc_lengths(seq)
    rng = random.Random(f"{seed}/{seq}")
    drawn = {f"random{i}": random_mask(rng, seq) for i in range(RANDOM)} if seed is not None else {}
    if seq == 96:  # 4 ranks: the packed documents that hung ringx1o/2o (a) and ringx4o's backward (b), and shared
        # prefixes packed one group per contiguous shard (no rank's queries see another rank's keys)
        drawn |= {"hung-a": Mask.documents([30, 18, 48]), "hung-b": Mask.documents([7, 8, 21, 36, 10, 14]),
                  "shared-per-shard": Mask.shared_prefix([(8, [10, 6])] * 4)}
    return drawn | {
        "window-third": Mask.window(n // 3),  # causal, a third of a shard: ring needs only the neighbour
        "window-wide": Mask.window(2 * n + 3, 5),  # two-sided, across several shards
        "docs": Mask.documents(docs),
        "docs-full-window": Mask.documents(docs, causal=False, window=7),
        "docs-window": Mask.documents(docs, window=10),
        "prefix": Mask.prefix_lm(n + 5),  # the first shard's queries see into the second
        "blocks-docs": Mask.block_causal(5, docs),
        "shared": Mask.shared_prefix(shared_groups(seq)),
    }


@dataclass(frozen=True)
class MaskCase:
    world: int
    rpn: int
    algorithm: str
    mask_name: str
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    seed: int | None = None  # of the random masks
    sinks: bool = False  # with attention-sink logits (one per query head)

    @property
    def mask(self) -> Mask:
        return masks(SEQ_LOCAL * self.world, self.seed)[self.mask_name]

    @property
    def id(self) -> str:
        where = f"P{self.world}" + (f"n{self.world // self.rpn}x{self.rpn}" if self.rpn else "")
        sinks = "-sinks" if self.sinks else ""
        return f"{where}-{self.algorithm}-{self.mask_name}-b{self.batch}h{self.heads}kv{self.kv_heads}{sinks}"


def mask_cases(world: int, rpn: int = 0, seed: int | None = None) -> list[MaskCase]:
    """Every algorithm x every mask; along the matrix the shape alternates MHA/GQA and sinks go on and off every
    second step, so any four neighbouring masks of an algorithm (or algorithms of a mask) meet all four pairs."""
    algos = [a for a, x in ALGORITHMS.items() if x.topology or not rpn]
    names = list(masks(SEQ_LOCAL * world, seed))
    return [MaskCase(world, rpn, a, m, *SHAPES[(i + j) % 2], seed, sinks=(i + j) // 2 % 2 == 1)
            for i, a in enumerate(algos) for j, m in enumerate(names)]


def all_cases(seed: int | None = None) -> list[MaskCase]:
    return [c for w, rpn in LAUNCHES for c in mask_cases(w, rpn, seed)]
