"""Sequence layouts: how a global sequence is split over P ranks, and which
parts of one rank's queries may see which parts of another rank's keys.

- ``contiguous``: rank r holds tokens [r*n, (r+1)*n).
- ``zigzag``: the sequence is cut into 2P chunks; rank r holds chunks r and
  2P-1-r, which balances causal work across ranks.
- ``stripe``: token i lives on rank i mod P (also balanced for causal).
- ``zigzag-u{U}`` (e.g. ``zigzag-u2``; USP's layout, as yunchang shards it):
  the ranks form R = P/U Ulysses groups of U consecutive ranks; group
  i = r // U owns the zigzag pair of a ring of R (chunks i and 2R-1-i of
  2R), split contiguously over its U ranks (rank r takes part r mod U).
  After the Ulysses all-to-all each group member holds exactly that pair,
  so the ring across groups is a balanced zigzag ring. ``zigzag-u1``
  is ``zigzag``; ``zigzag-uP`` is ``contiguous``. Only shard/unshard and the
  divisors know it: the algorithms plan on the ring's ``zigzag``.

The masking plan is the single place where the mask meets layout: every
algorithm asks it which (q rows, k rows) sub-blocks to compute and whether a
sub-block is fully visible, carries a (square, diagonal) causal mask, or (any
other :class:`ringx.Mask`) a band ``lo <= a - b <= hi`` of its local rows a, b.
``full`` and ``causal`` keep their own plans (:func:`_chunk_plan`); every other
mask is planned from the global positions each rank holds (:func:`_mask_plan`):
fully masked sub-blocks never appear in a plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

import torch

from .mask import Mask
from .slices import CAUSAL, FULL, INF, NONE, band_kind, band_pairs, band_rows, segment_band

LAYOUTS = ("contiguous", "zigzag", "stripe")
_ULYSSES_ZIGZAG = re.compile(r"zigzag-u(\d+|\{u\})")  # "{u}": the template, degree not yet chosen


def ulysses_zigzag(degree: int) -> str:
    """The name of USP's layout for Ulysses degree ``degree`` (see the module doc)."""
    return f"zigzag-u{degree}"


def ulysses_degree_of(layout: str) -> int | None:
    """U of a ``zigzag-u{U}`` layout; None for the other layouts."""
    m = _ULYSSES_ZIGZAG.fullmatch(layout)
    if m is None:
        return None
    if not m.group(1).isdigit():
        raise ValueError(f"layout {layout!r} needs the Ulysses degree: ask the algorithm for "
                         "layout(causal, ulysses_degree=U)")
    return int(m.group(1))


def chunks_per_rank(layout: str) -> int:
    """How many equal chunks a rank's local sequence is made of."""
    return {"contiguous": 1, "zigzag": 2, "stripe": 1}[_check(layout)]


def _check(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)} or zigzag-u<U>")
    return layout


def local_divisor(layout: str) -> int:
    """The local sequence length must be a multiple of this."""
    if _ULYSSES_ZIGZAG.fullmatch(layout):
        return 2  # U ranks share a zigzag pair of equal chunks (a multiple of 2 for any U)
    return chunks_per_rank(layout)


def global_divisor(layout: str, world_size: int) -> int:
    """The global sequence length must be a multiple of this."""
    return local_divisor(layout) * world_size


def rank_chunks(layout: str, rank: int, world_size: int) -> tuple[int, ...]:
    """Global chunk ids held by ``rank`` (chunked layouts only), in local order."""
    if _check(layout) == "contiguous":
        return (rank,)
    if layout == "zigzag":
        return (rank, 2 * world_size - 1 - rank)
    raise ValueError("stripe is not a chunked layout")


def shard(x: torch.Tensor, layout: str, rank: int, world_size: int, dim: int = 1, *,
          mask: Mask | None = None) -> torch.Tensor:
    """This rank's part of the global tensor ``x`` along ``dim`` (a contiguous copy).

    ``mask``: the call's mask; these layouts place tokens whatever the mask (a document mask is checked
    against the length), a layout that balances documents may use it."""
    seq = x.shape[dim]
    if mask is not None:
        mask.check(seq)
    div = global_divisor(layout, world_size)
    if seq % div:
        raise ValueError(
            f"sequence length {seq} is not divisible by {div} "
            f"({layout} layout over {world_size} ranks)"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    u = ulysses_degree_of(layout)
    if u is not None:
        _check_degree(u, world_size)
        pair = shard(x, "zigzag", rank // u, world_size // u, dim)  # this Ulysses group's zigzag pair
        return pair.chunk(u, dim=dim)[rank % u].contiguous()
    if layout == "stripe":
        return x.index_select(dim, torch.arange(rank, seq, world_size, device=x.device))
    pieces = x.chunk(world_size * chunks_per_rank(layout), dim=dim)
    return torch.cat([pieces[c] for c in rank_chunks(layout, rank, world_size)], dim=dim)


def shard_all(x: torch.Tensor, layout: str, world_size: int, dim: int = 1) -> torch.Tensor:
    """Every rank's :func:`shard` of ``x`` at once, stacked as (P, ...): ``out[r] == shard(x, layout, r, P)``.

    One gather of equal pieces in rank order, O(P) work: a loop of :func:`shard` calls would chunk the
    whole tensor once per rank, O(P^2) views, which at thousands of ranks costs more than the attention.
    """
    seq = x.shape[dim]
    div = global_divisor(layout, world_size)
    if seq % div:
        raise ValueError(f"sequence length {seq} is not divisible by {div} ({layout} layout over {world_size} ranks)")
    dim = dim % x.dim()
    if layout == "stripe":  # token i on rank i mod P
        return x.unflatten(dim, (seq // world_size, world_size)).movedim(dim + 1, 0)
    u = ulysses_degree_of(layout)
    if u is not None:  # 2P pieces: group i's zigzag pair is chunks i, 2R-1-i of 2R (U pieces each), split over U ranks
        _check_degree(u, world_size)
        r_groups = world_size // u
        order = [c * u + k for i in range(r_groups) for c in (i, 2 * r_groups - 1 - i) for k in range(u)]
    elif _check(layout) == "zigzag":
        order = [c for r in range(world_size) for c in rank_chunks(layout, r, world_size)]
    else:
        order = list(range(world_size))
    pieces = x.unflatten(dim, (len(order), seq // len(order)))
    picked = pieces.index_select(dim, torch.tensor(order, device=x.device))  # (..., P*k, piece, ...) in rank order
    return picked.unflatten(dim, (world_size, -1)).movedim(dim, 0).flatten(dim + 1, dim + 2)


def unshard(shards: list[torch.Tensor] | tuple[torch.Tensor, ...], layout: str, dim: int = 1, *,
            mask: Mask | None = None) -> torch.Tensor:
    """Inverse of :func:`shard`: the global tensor from every rank's shard, in rank order."""
    if mask is not None:
        mask.check(sum(s.shape[dim] for s in shards))
    world_size = len(shards)
    if world_size == 1:
        return shards[0]
    u = ulysses_degree_of(layout)
    if u is not None:
        _check_degree(u, world_size)
        pairs = [torch.cat(list(shards[i:i + u]), dim=dim) for i in range(0, world_size, u)]
        return unshard(pairs, "zigzag", dim)
    if layout == "stripe":
        stacked = torch.stack(list(shards), dim=dim + 1)  # (..., n_local, P, ...)
        return stacked.flatten(dim, dim + 1)
    per = chunks_per_rank(layout)
    chunks: list[torch.Tensor | None] = [None] * (world_size * per)
    for rank, s in enumerate(shards):
        for piece, c in zip(s.chunk(per, dim=dim), rank_chunks(layout, rank, world_size)):
            chunks[c] = piece
    return torch.cat(chunks, dim=dim)  # type: ignore[arg-type]


def _check_degree(u: int, world_size: int) -> None:
    if u < 1 or world_size % u:
        raise ValueError(f"Ulysses degree {u} must divide the {world_size} ranks")


@dataclass(frozen=True)
class Block:
    """Queries [q0, q1) against keys [k0, k1) of the local buffers.

    ``causal`` blocks are square and diagonal: row i sees keys k0..k0+i. A ``band`` (lo, hi) block
    (masks other than full/causal only) has row a see key b iff lo <= a - b <= hi (a, b counted from
    q0, k0); every row of such a block sees at least one key.
    """

    q0: int
    q1: int
    k0: int
    k1: int
    causal: bool
    band: tuple[int, int] | None = None

    @property
    def flops_pairs(self) -> int:
        """Number of visible (query, key) pairs."""
        n, m = self.q1 - self.q0, self.k1 - self.k0
        if self.band is not None:
            return band_pairs(*self.band, n, m)
        return n * (n + 1) // 2 if self.causal else n * m


def _chunk_plan(q_chunks: tuple[int, ...], k_chunks: tuple[int, ...], clen: int, causal: bool) -> tuple[Block, ...]:
    if not causal:
        return (Block(0, len(q_chunks) * clen, 0, len(k_chunks) * clen, False),)
    if q_chunks == k_chunks and list(q_chunks) == sorted(q_chunks):
        # Same increasing token set on both sides: one plain causal block.
        n = len(q_chunks) * clen
        return (Block(0, n, 0, n, True),)
    per_q: list[list[Block]] = []
    for qi, qc in enumerate(q_chunks):
        row: list[Block] = []
        for ki, kc in enumerate(k_chunks):
            if kc > qc:
                continue
            blk = Block(qi * clen, (qi + 1) * clen, ki * clen, (ki + 1) * clen, kc == qc)
            prev = row[-1] if row else None
            if prev and not prev.causal and not blk.causal and prev.k1 == blk.k0:
                row[-1] = Block(prev.q0, prev.q1, prev.k0, blk.k1, False)
            else:
                row.append(blk)
        per_q.append(row)
    # Merge neighbouring query chunks that see exactly the same full key ranges.
    out: list[Block] = []
    for row in per_q:
        for blk in row:
            for i, prev in enumerate(out):
                if (not prev.causal and not blk.causal and prev.q1 == blk.q0
                        and (prev.k0, prev.k1) == (blk.k0, blk.k1)):
                    out[i] = Block(prev.q0, blk.q1, prev.k0, prev.k1, False)
                    break
            else:
                out.append(blk)
    return tuple(out)


@lru_cache(maxsize=4096)
def block_plan(layout: str, world_size: int, q_rank: int, kv_rank: int, seq_local: int,
               causal: bool | Mask) -> tuple[Block, ...]:
    """Sub-blocks of rank ``q_rank``'s queries against rank ``kv_rank``'s keys.

    ``causal``: True/False, or a :class:`ringx.Mask` (full and causal masks give the same plans as the bools).
    An empty plan means the whole pair is masked out.
    """
    if isinstance(causal, Mask):
        if causal.plain is None:
            q = rank_segments(layout, world_size, q_rank, seq_local)
            return _mask_plan(causal, seq_local * world_size, q, rank_segments(layout, world_size, kv_rank, seq_local))
        causal = causal.plain
    if layout == "stripe":
        if not causal or kv_rank <= q_rank:
            return (Block(0, seq_local, 0, seq_local, causal),)
        # Query j (global q_rank + jP) sees key i (global kv_rank + iP) iff i < j:
        # a causal block shifted by one, whose first query sees nothing here.
        if seq_local == 1:
            return ()
        return (Block(1, seq_local, 0, seq_local - 1, True),)
    clen = seq_local // chunks_per_rank(layout)
    return _chunk_plan(rank_chunks(layout, q_rank, world_size), rank_chunks(layout, kv_rank, world_size), clen, causal)


@lru_cache(maxsize=4096)
def gathered_plan(layout: str, world_size: int, q_rank: int, seq_local: int,
                  causal: bool | Mask) -> tuple[Block, ...]:
    """Sub-blocks of ``q_rank``'s queries against the whole sequence in global order."""
    per = chunks_per_rank(layout)
    if layout == "stripe":
        raise ValueError("gathered plans need a chunked layout (contiguous or zigzag)")
    if isinstance(causal, Mask):
        if causal.plain is None:
            seq = seq_local * world_size
            return _mask_plan(causal, seq, rank_segments(layout, world_size, q_rank, seq_local), ((0, seq, 0, 1),))
        causal = causal.plain
    clen = seq_local // per
    return _chunk_plan(rank_chunks(layout, q_rank, world_size), tuple(range(world_size * per)), clen, causal)


# --- plans for every other mask -------------------------------------------------------------------------------------
MIN_TILE = 16  # windowed masks are cut into tiles of at least this many rows (fewer, larger kernel calls)
Segment = tuple[int, int, int, int]  # (local start, rows, global start, stride): rows at g0, g0 + s, ...


def rank_segments(layout: str, world_size: int, rank: int, seq_local: int) -> tuple[Segment, ...]:
    """The runs of ``rank``'s local rows whose global positions are evenly spaced, in local order."""
    if layout == "stripe":
        return ((0, seq_local, rank, world_size),)
    clen = seq_local // chunks_per_rank(layout)
    return tuple((i * clen, clen, c * clen, 1) for i, c in enumerate(rank_chunks(layout, rank, world_size)))


def positions(layout: str, world_size: int, rank: int, seq_local: int) -> torch.Tensor:
    """Global positions of ``rank``'s local rows, in local order."""
    return torch.cat([g0 + s * torch.arange(n) for _, n, g0, s in rank_segments(layout, world_size, rank, seq_local)])


def _mask_plan(mask: Mask, seq: int, q_segs: tuple[Segment, ...], k_segs: tuple[Segment, ...]) -> tuple[Block, ...]:
    """The blocks of the mask's slices (:mod:`ringx.slices`) over these query and key segments. Query segments are
    cut where a slice's queries start or end (and, where a slice is a narrow band, on a grid of tiles of at least
    MIN_TILE rows of the global positions over the stride), so each piece lies in or out of every slice; each slice
    over a piece meets each key segment in one run of rows, tiled alike. Every (piece, run) is then fully masked
    (dropped), full, square causal, or a band trimmed of the rows that see nothing and the keys nobody sees.
    O(log slices + slices over the queries + blocks)."""
    ss = mask.slices(seq)
    tile = 0 if ss.reach is None else max(MIN_TILE, ss.reach)
    blocks: list[Block] = []
    stacked: dict[tuple[int, int], int] = {}  # (k0, k1) -> the last full block over these keys, to grow downwards
    for l0, n, g0, s in q_segs:
        if n == 0:
            continue
        top = g0 + s * (n - 1)
        over = ss.over(g0, top + 1)
        cuts = {0, n} | {-(-(b - g0) // s) for sl in over for b in (sl.q0, sl.q1) if g0 < b <= top}
        if tile:
            cuts.update(range(tile - (g0 // s) % tile, n, tile))
        edges = sorted(cuts)
        active: list = []
        nxt = 0
        for a0, a1 in zip(edges, edges[1:]):
            gq = g0 + s * a0
            while nxt < len(over) and over[nxt].q0 <= gq:  # the slices over this piece: a sweep down the rows
                active.append(over[nxt])
                nxt += 1
            active = [sl for sl in active if sl.q1 > gq]
            row = [blk for sl in active for kl0, nb, gk0, _ in k_segs
                   for blk in _slice_blocks(sl, l0 + a0, a1 - a0, gq, kl0, nb, gk0, s, tile)]
            row.sort(key=lambda b: b.k0)
            merged: list[Block] = []
            for blk in row:  # neighbouring full blocks of the same rows: one block
                prev = merged[-1] if merged else None
                if prev and _plain_full(prev) and _plain_full(blk) and prev.k1 == blk.k0 and \
                        (prev.q0, prev.q1) == (blk.q0, blk.q1):
                    merged[-1] = Block(prev.q0, prev.q1, prev.k0, blk.k1, False)
                else:
                    merged.append(blk)
            for blk in merged:  # neighbouring query rows that see exactly the same full key range: one block
                i = stacked.get((blk.k0, blk.k1)) if _plain_full(blk) else None
                if i is not None and blocks[i].q1 == blk.q0:
                    blocks[i] = Block(blocks[i].q0, blk.q1, blk.k0, blk.k1, False)
                    continue
                if _plain_full(blk):
                    stacked[blk.k0, blk.k1] = len(blocks)
                blocks.append(blk)
    return tuple(blocks)


def _plain_full(b: Block) -> bool:
    return b.band is None and not b.causal


def _slice_blocks(sl, q0: int, na: int, gq: int, kl0: int, nb: int, gk0: int, s: int, tile: int) -> list[Block]:
    """The blocks of slice ``sl`` between ``na`` query rows at local row q0 (global gq, stride s) and a key segment
    of ``nb`` rows at local row kl0 (global gk0)."""
    b0, b1 = max(0, -(-(sl.k0 - gk0) // s)), min(nb, -(-(sl.k1 - gk0) // s))  # the key rows inside the slice
    if b0 >= b1:
        return []
    edges = [b0, b1]
    if tile and sl.hi < INF:  # a narrow band: cut the keys on the tile grid too
        first = b0 + ((-(gk0 // s + b0)) % tile or tile)
        edges[1:1] = range(first, b1, tile)
    out = []
    for c0, c1 in zip(edges, edges[1:]):
        k0, m = kl0 + c0, c1 - c0
        kind, lo, hi = band_kind(*segment_band(sl.lo, sl.hi, gq, gk0 + s * c0, s), na, m)
        if kind == NONE:
            continue
        if kind in (FULL, CAUSAL):
            out.append(Block(q0, q0 + na, k0, k0 + m, kind == CAUSAL))
            continue
        a0, a1, x0, x1 = band_rows(lo, hi, na, m)  # trim the rows that see nothing and the keys nobody sees
        kind, lo, hi = band_kind(lo - (a0 - x0), hi - (a0 - x0), a1 - a0, x1 - x0)
        out.append(Block(q0 + a0, q0 + a1, k0 + x0, k0 + x1, kind == CAUSAL,
                         None if kind in (FULL, CAUSAL) else (lo, hi)))
    return out


def _owners(layout: str, world_size: int, seq_local: int, k0: int, k1: int) -> list[tuple[int, int]]:
    """The ranks holding some of the global keys [k0, k1), as inclusive rank intervals."""
    p = world_size
    if layout == "stripe":
        if k1 - k0 >= p:
            return [(0, p - 1)]
        a, b = k0 % p, (k1 - 1) % p
        return [(a, b)] if a <= b else [(a, p - 1), (0, b)]
    clen = seq_local // chunks_per_rank(layout)
    c0, c1 = k0 // clen, (k1 - 1) // clen  # the chunks
    if layout == "contiguous":
        return [(c0, c1)]
    out = [(c0, min(c1, p - 1))] if c0 < p else []  # zigzag: chunk c < P on rank c, chunk c >= P on rank 2P-1-c
    if c1 >= p:
        out.append((2 * p - 1 - c1, 2 * p - 1 - max(c0, p)))
    return out


def seen_ranks(layout: str, world_size: int, rank: int, seq_local: int, mask: Mask) -> list[tuple[int, int]]:
    """The ranks whose keys some query of ``rank`` sees under ``mask``, as sorted disjoint inclusive intervals:
    exactly the kv ranks whose :func:`block_plan` with ``rank`` is not empty, from the rule alone (no plans)."""
    seq = seq_local * world_size
    spans = sorted(iv for _, n, g0, s in rank_segments(layout, world_size, rank, seq_local)
                   for k0, k1 in mask.seen_keys(seq, g0, n, s) for iv in _owners(layout, world_size, seq_local, k0, k1))
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@lru_cache(maxsize=1024)
def _seen_by_rank(layout: str, world_size: int, seq_local: int, mask: Mask) -> tuple[tuple[tuple[int, int], ...], ...]:
    return tuple(tuple(seen_ranks(layout, world_size, r, seq_local, mask)) for r in range(world_size))


@lru_cache(maxsize=1024)
def ring_steps(layout: str, world_size: int, seq_local: int, causal: bool | Mask) -> int:
    """Ring steps t = 0..T-1 (rank r holding the K/V of rank r - t) that cover every visible block: T is one more
    than the largest t at which some rank has something to compute. Full and causal: all P steps. O(P) intervals
    of :func:`seen_ranks`, not P^2 plans."""
    if not isinstance(causal, Mask) or causal.plain is not None:
        return world_size
    p, last = world_size, 0
    for r, spans in enumerate(_seen_by_rank(layout, world_size, seq_local, causal)):
        for a, b in spans:  # the largest (r - kv) mod P over kv in [a, b]
            if r < a:
                t = r - a + p
            elif r >= b:
                t = r - a
            else:  # a <= r < b: kv = r + 1 is P - 1 steps back
                t = p - 1
            last = max(last, t)
    return last + 1


@lru_cache(maxsize=1024)
def shared_rounds(layout: str, world_size: int, seq_local: int, causal: bool | Mask,
                  queries: bool) -> tuple[bool, ...]:
    """For each root rank of a broadcast schedule: does any other rank compute with the root's keys (its queries,
    when ``queries``)? Full and causal: every round is shared (their schedules stay as they are)."""
    if not isinstance(causal, Mask) or causal.plain is not None:
        return (True,) * world_size
    seen = _seen_by_rank(layout, world_size, seq_local, causal)
    if queries:  # the root's queries see some other rank's keys
        return tuple(any(b - a + 1 > (a <= root <= b) for a, b in spans) for root, spans in enumerate(seen))
    cover = [0] * (world_size + 1)  # how many ranks' queries see each rank's keys (a difference array)
    for spans in seen:
        for a, b in spans:
            cover[a] += 1
            cover[b + 1] -= 1
    count = list(accumulate(cover))
    return tuple(count[root] - any(a <= root <= b for a, b in seen[root]) > 0 for root in range(world_size))


def plan_pairs(plan: tuple[Block, ...]) -> int:
    """Visible (query, key) pairs a plan computes."""
    return sum(b.flops_pairs for b in plan)
