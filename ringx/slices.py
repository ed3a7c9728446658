"""The one form every mask compiles to: disjoint slices of the (query, key) plane, each a rectangle with a band.

A :class:`Slice` ``(q0, q1, k0, k1, lo, hi)`` says: query i in [q0, q1) sees key j in [k0, k1) iff
``lo <= i - j <= hi`` (global positions; a bound may be +-inf). So ``(-inf, inf)`` is a full rectangle,
``(0, inf)`` causal (j <= i), ``(-right, left)`` a window. A mask's slices never overlap, so no (query, key)
pair is seen twice, and every query sees at least one key. This is the representation MagiAttention's
``AttnSlice`` uses, and every mask of LongCA-bench's list can be written in it (docs/masks.md).

:meth:`ringx.Mask.slices` gives a mask's :class:`SliceSet` for a global length; everything the distributed
code needs is read from it here: visibility, per-query counts, the keys a run of queries sees (which ranks a
rank needs) and what a block is. The plans (:mod:`ringx.layouts`) cut segments at slice boundaries, so every
block they make is fully visible, square causal, or one band.
"""

from __future__ import annotations

import bisect
import math
from itertools import accumulate
from typing import NamedTuple

import torch

INF = math.inf
NONE, FULL, CAUSAL, PARTIAL = "none", "full", "causal", "partial"  # block kinds (Mask.classify)


class Slice(NamedTuple):
    """Query i in [q0, q1) sees key j in [k0, k1) iff lo <= i - j <= hi (the module doc)."""

    q0: int
    q1: int
    k0: int
    k1: int
    lo: float = -INF
    hi: float = INF


class SliceSet:
    """A mask's slices for one global length, sorted by (q0, k0), with an index over query ranges."""

    def __init__(self, slices, seq: int):
        self.items: tuple[Slice, ...] = tuple(sorted(slices))
        self.seq = seq
        self._q0 = [s.q0 for s in self.items]
        self._reach = list(accumulate((s.q1 for s in self.items), max))  # the largest q1 so far
        bands = [max(s.hi, -s.lo if s.lo > -INF else 0) for s in self.items if s.hi < INF]
        # how far the narrowest banded slices reach (plans tile them), None when no slice is a band of finite width
        self.reach: int | None = int(max(bands)) if bands else None

    def over(self, a: int, b: int) -> list[Slice]:
        """The slices with some query in [a, b), in order: O(log slices + those found)."""
        i = bisect.bisect_right(self._reach, a)  # earlier slices end at or before a
        j = bisect.bisect_left(self._q0, b)
        return [s for s in self.items[i:j] if s.q1 > a]

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        big = 2 * self.seq + 1  # a bound past this is as good as infinite
        cols = list(zip(*self.items)) if self.items else [()] * 6
        q0, q1, k0, k1 = (torch.tensor(c, dtype=torch.int64) for c in cols[:4])
        lo = torch.tensor([max(x, -big) for x in cols[4]], dtype=torch.int64)
        hi = torch.tensor([min(x, big) for x in cols[5]], dtype=torch.int64)
        return q0, q1, k0, k1, lo, hi

    # --- counts -------------------------------------------------------------------------------------------------
    def key_intervals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, first, last), int64: for every (query, slice over it) pair, the query and the keys it sees in
        that slice, [first, last] (empty when last < first). O(sum of the slices' query ranges), no Python loop."""
        q0, q1, k0, k1, lo, hi = self._tensors()
        n = q1 - q0
        idx = torch.repeat_interleave(torch.arange(len(n)), n)
        rows = q0[idx] + torch.arange(int(n.sum())) - (n.cumsum(0) - n)[idx]
        first = torch.maximum(k0[idx], rows - hi[idx])
        last = torch.minimum(k1[idx] - 1, rows - lo[idx])
        return rows, first, last

    def keys_per_query(self) -> torch.Tensor:
        """(seq,) int64: how many keys each query sees."""
        rows, first, last = self.key_intervals()
        return torch.zeros(self.seq, dtype=torch.int64).index_add_(0, rows, (last - first + 1).clamp_(min=0))

    # --- visibility ---------------------------------------------------------------------------------------------
    def visible(self, qpos, kpos) -> torch.Tensor:
        """Bool (len(qpos), len(kpos)): may query position qpos[a] see key position kpos[b]. Each slice fills only
        its own rectangle of the sorted positions: O(pairs + slices)."""
        q = torch.as_tensor(qpos, dtype=torch.int64).reshape(-1)
        k = torch.as_tensor(kpos, dtype=torch.int64).reshape(-1)
        qs, qi = q.sort()
        ks, ki = k.sort()
        ok = torch.zeros(len(q), len(k), dtype=torch.bool)
        if not len(q) or not len(k) or not self.items:
            return ok
        q0, q1, k0, k1, lo, hi = self._tensors()
        a0, a1 = torch.searchsorted(qs, q0), torch.searchsorted(qs, q1)
        b0, b1 = torch.searchsorted(ks, k0), torch.searchsorted(ks, k1)
        hit = ((a1 > a0) & (b1 > b0)).nonzero().flatten().tolist()
        for x0, x1, y0, y1, bl, bh in zip(*(t[hit].tolist() for t in (a0, a1, b0, b1, lo, hi))):
            d = qs[x0:x1, None] - ks[None, y0:y1]
            ok[x0:x1, y0:y1] = (d >= bl) & (d <= bh)
        out = torch.empty_like(ok)
        out[qi[:, None], ki[None, :]] = ok
        return out

    def classify(self, q0: int, q1: int, k0: int, k1: int) -> str:
        """What the block of queries [q0, q1) and keys [k0, k1) is (``none``, ``full``, ``causal`` or ``partial``),
        from the slices over it in closed form: O(log slices + slices over the queries)."""
        if q0 >= q1 or k0 >= k1:
            return NONE
        seen = below = 0  # visible pairs, and those of them with j <= i
        for s in self.over(q0, q1):
            a0, a1, b0, b1 = max(q0, s.q0), min(q1, s.q1), max(k0, s.k0), min(k1, s.k1)
            if a0 >= a1 or b0 >= b1:
                continue
            d = a0 - b0  # i - j = d + (a - b) for local rows a, b
            seen += _pairs(s.lo - d, s.hi - d, a1 - a0, b1 - b0)
            below += _pairs(max(s.lo, 0) - d, s.hi - d, a1 - a0, b1 - b0)
        n = q1 - q0
        if seen == 0:
            return NONE
        if seen == n * (k1 - k0):
            return FULL
        if (q0, q1) == (k0, k1) and seen == below == n * (n + 1) // 2:
            return CAUSAL
        return PARTIAL

    def seen_keys(self, g0: int, n: int, stride: int = 1) -> list[tuple[int, int]]:
        """The keys the ``n`` queries ``g0, g0 + stride, ...`` see, as increasing disjoint half-open intervals
        [k0, k1): per slice one interval, or one per query where its band is narrower than the stride.
        O(log slices + intervals)."""
        if n <= 0:
            return []
        s, top = stride, g0 + stride * (n - 1)
        spans: list[tuple[int, int]] = []
        for sl in self.over(g0, top + 1):
            first = max(sl.q0, g0, sl.k0 + sl.lo)  # the queries of this slice that see one of its keys
            last = min(sl.q1 - 1, top, sl.k1 - 1 + sl.hi)
            qa, qb = g0 + s * -(-int(first - g0) // s), g0 + s * (int(last - g0) // s)  # on the queries' grid
            if qa > qb:
                continue
            if sl.hi - sl.lo + 1 >= s:  # neighbouring queries' keys touch: one interval
                spans.append((int(max(sl.k0, qa - sl.hi)), int(min(sl.k1, qb - sl.lo + 1))))
            else:
                spans += [(int(max(sl.k0, i - sl.hi)), int(min(sl.k1, i - sl.lo + 1))) for i in range(qa, qb + 1, s)]
        out: list[tuple[int, int]] = []
        for a, b in sorted(spans):
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out


def _pairs(lo: float, hi: float, na: int, nb: int) -> int:
    """Pairs (a, b) of an na x nb block with lo <= a - b <= hi (bounds may be infinite)."""
    kind, lo, hi = band_kind(lo, hi, na, nb)
    return 0 if kind == NONE else band_pairs(lo, hi, na, nb)


def check_slices(slices: tuple[Slice, ...], seq: int) -> str:
    """What is wrong with ``slices`` as a mask over ``seq`` tokens, or '': rectangles inside the sequence, not
    overlapping, and every query seeing a key."""
    for s in slices:
        if not (0 <= s.q0 < s.q1 <= seq and 0 <= s.k0 < s.k1 <= seq):
            return f"slice {s.q0}-{s.q1}/{s.k0}-{s.k1} is empty or reaches past the {seq} tokens"
        if s.lo > s.hi:
            return f"slice {s.q0}-{s.q1}/{s.k0}-{s.k1} has a band {s.lo}..{s.hi} that sees nothing"
    active: list[Slice] = []  # a sweep over the queries: the slices whose rows are still open
    for s in sorted(slices):
        active = [a for a in active if a.q1 > s.q0]
        for a in active:
            if a.k0 < s.k1 and s.k0 < a.k1:
                return f"slices {a.q0}-{a.q1}/{a.k0}-{a.k1} and {s.q0}-{s.q1}/{s.k0}-{s.k1} overlap"
        active.append(s)
    counts = SliceSet(slices, seq).keys_per_query()
    if (counts == 0).any():
        return f"query {int((counts == 0).nonzero()[0])} sees no key (a softmax over nothing)"
    return ""


# --- band geometry (what the plans and kernels share) --------------------------------------------------------------
def segment_band(lo: float, hi: float, gq0: int, gk0: int, stride: int) -> tuple[float, float]:
    """(lo', hi'): for segments of a slice's rows starting at global positions gq0 and gk0 with the same ``stride``,
    query segment row a sees key segment row b iff lo' <= a - b <= hi', where the slice's band is lo <= i - j <= hi.
    Bounds may be +-inf."""
    d = gq0 - gk0  # i - j = d + stride * (a - b)
    return (-INF if lo == -INF else math.ceil((lo - d) / stride)), (INF if hi == INF else math.floor((hi - d) / stride))


def band_kind(lo: float, hi: float, na: int, nb: int) -> tuple[str, int, int]:
    """(kind, lo, hi) of a band on an na x nb block, the band clipped to what the block has."""
    lo, hi = max(lo, -(nb - 1)), min(hi, na - 1)
    if lo > hi:
        return NONE, 0, 0
    lo, hi = int(lo), int(hi)
    if lo == -(nb - 1) and hi == na - 1:
        return FULL, lo, hi
    if na == nb and lo == 0 and hi == na - 1:
        return CAUSAL, lo, hi
    return PARTIAL, lo, hi


def band_rows(lo: int, hi: int, na: int, nb: int) -> tuple[int, int, int, int]:
    """(a0, a1, b0, b1): the rows that see some key and the keys some row sees, of a band on an na x nb block."""
    return max(0, lo), min(na, nb + hi), max(0, -hi), min(nb, na - lo)


def band_visible(lo: int, hi: int, na: int, nb: int, device=None) -> torch.Tensor:
    """Bool (na, nb) of a band block: row a sees key b iff lo <= a - b <= hi."""
    d = torch.arange(na, device=device).unsqueeze(1) - torch.arange(nb, device=device).unsqueeze(0)
    return (d >= lo) & (d <= hi)


def band_pairs(lo: int, hi: int, na: int, nb: int) -> int:
    """Visible pairs of a band block, in closed form: pairs with a - b <= hi less those with a - b <= lo - 1."""
    return 0 if lo > hi else _below(hi, na, nb) - _below(lo - 1, na, nb)


def _below(h: int, na: int, nb: int) -> int:
    """Pairs (a, b) of an na x nb block with a - b <= h."""
    full = min(max(h + 1, 0), na)  # rows a <= h see all nb keys
    a0, a1 = max(h + 1, 0), min(na - 1, h + nb - 1)  # rows h < a < h + nb see nb - (a - h) keys
    part = 0 if a1 < a0 else (a1 - a0 + 1) * (nb + h) - (a0 + a1) * (a1 - a0 + 1) // 2
    return full * nb + part
