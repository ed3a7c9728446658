"""Attention masks beyond full and causal: sliding windows and packed documents.

A :class:`Mask` says which global key positions j each global query position i
sees. Every mask here is one rule::

    i sees j  iff  i and j lie in the same document
              and  i - left <= j <= i + right

with ``left``/``right`` None meaning unbounded. So

- ``Mask.full()``: one document, left = right = None;
- ``Mask.causal()``: right = 0;
- ``Mask.window(left, right=0)``: flash-attention's ``window_size=(left, right)``;
- ``Mask.documents(lengths, causal=True, window=None)``: packed documents; right = 0 when
  causal (else ``window``), left = ``window``.

Text form (``str(m)``, read back by :meth:`Mask.parse`; ``parse(str(m)) == m`` always):
``full``, ``causal``, ``window:L`` (right 0) or ``window:L,R``, and
``docs:LENGTHS`` with LENGTHS a comma list where ``NxC`` stands for C documents of
length N (``docs:64x8,32``), followed by ``:full`` when not causal and
``+window:W`` when windowed (``docs:100,28:full+window:16``). A long length list
stays exact (records keep :meth:`digest`, a 16-hex-digit hash, next to it).

Everything the distributed code needs follows from that rule on *segments*:
a run of local rows whose global positions are ``g0, g0 + s, g0 + 2s, ...``
(s = 1 for contiguous and zigzag chunks, s = P for the stripe layout) within one
document. Query segment rows a and key segment rows b then satisfy the window
iff ``lo <= a - b <= hi`` for a band (lo, hi) (:func:`segment_band`): every block
a plan hands a kernel is fully visible, square causal, or such a band.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass
from itertools import accumulate

import torch

from .errors import RingxInputError

# Block kinds of :meth:`Mask.classify`.
NONE, FULL, CAUSAL, PARTIAL = "none", "full", "causal", "partial"


def _count(x, what: str, least: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < least:
        raise RingxInputError(f"{what} must be an integer >= {least}, got {x!r}")
    return x


@dataclass(frozen=True)
class Mask:
    """An immutable, hashable attention mask (see the module doc for the rule and the text form)."""

    kind: str  # "full", "causal", "window" or "docs"
    left: int | None = None  # how far back a query sees (None: unbounded)
    right: int | None = None  # how far ahead a query sees (None: unbounded; 0: causal)
    lengths: tuple[int, ...] | None = None  # document lengths (kind "docs")

    # --- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def full(cls) -> Mask:
        return cls("full")

    @classmethod
    def causal(cls) -> Mask:
        return cls("causal", None, 0)

    @classmethod
    def window(cls, left: int, right: int = 0) -> Mask:
        """Query i sees key j iff ``i - left <= j <= i + right`` (flash-attention's ``window_size``)."""
        return cls("window", _count(left, "window left", 0), _count(right, "window right", 0))

    @classmethod
    def documents(cls, lengths, causal: bool = True, window: int | None = None) -> Mask:
        """Packed documents of these lengths (positive ints summing to the global length)."""
        try:
            lens = tuple(lengths)
        except TypeError:
            raise RingxInputError(f"document lengths must be a list of positive integers, got {lengths!r}") from None
        if not lens:
            raise RingxInputError("document lengths must not be empty")
        for n in lens:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise RingxInputError(f"document lengths must be positive integers, got {n!r}")
        if window is not None:
            _count(window, "document window", 0)
        if not isinstance(causal, bool):
            raise RingxInputError(f"causal must be True or False, got {causal!r}")
        return cls("docs", window, 0 if causal else window, lens)

    # --- what it is ---------------------------------------------------------------------------------------------
    @property
    def is_causal(self) -> bool:
        """No query sees a later key (right == 0)."""
        return self.right == 0

    @property
    def causal_layout(self) -> bool:
        """Whether a call under this mask is laid out as causal attention is: every mask but full (the causal
        layouts balance windows and documents better than the contiguous one; ``ringx.balance`` measures it)."""
        return self.kind != "full"

    @property
    def plain(self) -> bool | None:
        """True for ``causal``, False for ``full``, None for any other mask (the fast paths' test)."""
        return {"full": False, "causal": True}.get(self.kind)

    @property
    def seq_len(self) -> int | None:
        """The global length a document mask is made for (None: any length)."""
        return sum(self.lengths) if self.lengths is not None else None

    @property
    def starts(self) -> tuple[int, ...]:
        """Start position of every document, and the end (one document from 0 when not "docs")."""
        return (0, *accumulate(self.lengths)) if self.lengths is not None else (0,)

    def problem(self, seq: int) -> str:
        """What is wrong with using this mask on a global length ``seq``, or ''."""
        if self.lengths is not None and sum(self.lengths) != seq:
            return (f"mask {self.short()}: document lengths sum to {sum(self.lengths)}, but the global sequence "
                    f"length is {seq}")
        return ""

    def check(self, seq: int) -> None:
        msg = self.problem(seq)
        if msg:
            raise RingxInputError(msg)

    def doc_of(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos) - 1 if self.lengths is not None else 0

    # --- visibility ---------------------------------------------------------------------------------------------
    def visible(self, qpos, kpos) -> torch.Tensor:
        """Bool (len(qpos), len(kpos)): may query position qpos[a] see key position kpos[b]."""
        q = torch.as_tensor(qpos, dtype=torch.int64).reshape(-1, 1)
        k = torch.as_tensor(kpos, dtype=torch.int64).reshape(1, -1)
        d = q - k
        ok = torch.ones(d.shape, dtype=torch.bool)
        if self.left is not None:
            ok &= d <= self.left
        if self.right is not None:
            ok &= d >= -self.right
        if self.lengths is not None:
            bounds = torch.tensor(self.starts[1:-1], dtype=torch.int64)
            ok &= torch.bucketize(q, bounds, right=True) == torch.bucketize(k, bounds, right=True)
        return ok

    def classify(self, qpos, kpos) -> str:
        """``"none"``, ``"full"``, ``"causal"`` (the same positions on both sides, each query seeing itself and the
        earlier ones) or ``"partial"``: what a block of these query and key positions is. ``range`` arguments are
        answered from the rule alone (O(documents)); other sequences through :meth:`visible`."""
        if isinstance(qpos, range) and isinstance(kpos, range) and qpos.step == kpos.step == 1:
            return self._classify_ranges(qpos.start, qpos.stop, kpos.start, kpos.stop)
        q, k = list(qpos), list(kpos)
        vis = self.visible(q, k)
        if not vis.any():
            return NONE
        if vis.all():
            return FULL
        if q == k and q == sorted(q) and torch.equal(vis, torch.ones_like(vis).tril_()):
            return CAUSAL
        return PARTIAL

    def _classify_ranges(self, q0: int, q1: int, k0: int, k1: int) -> str:
        """From the rule alone, O(log documents + documents in common): no tensors."""
        if q0 >= q1 or k0 >= k1:
            return NONE
        dq, dk = (self.doc_of(q0), self.doc_of(q1 - 1)), (self.doc_of(k0), self.doc_of(k1 - 1))
        if dq[1] < dk[0] or dk[1] < dq[0]:
            return NONE  # no document in common
        if dq[0] == dq[1] and dk == dq:  # one document: a band
            lo, hi = segment_band(self, q0, k0, 1)
            return band_kind(lo, hi, q1 - q0, k1 - k0)[0]
        # several documents: pairs across documents are hidden, so the block is partial where any document in
        # common has a visible pair (a causal block needs every pair under the diagonal, across documents too)
        starts = self.starts
        for d in range(max(dq[0], dk[0]), min(dq[1], dk[1]) + 1):
            a0, a1 = max(q0, starts[d]), min(q1, starts[d + 1])
            b0, b1 = max(k0, starts[d]), min(k1, starts[d + 1])
            if band_kind(*segment_band(self, a0, b0, 1), a1 - a0, b1 - b0)[0] != NONE:
                return PARTIAL
        return NONE

    def seen_keys(self, seq: int, g0: int, n: int, stride: int = 1) -> list[tuple[int, int]]:
        """The keys (of a global length ``seq``) that the ``n`` queries ``g0, g0 + stride, ...`` see, as increasing
        disjoint half-open intervals [k0, k1): one per document the queries touch, or one per query where a
        window narrower than the stride leaves gaps between neighbours. From the rule alone, O(log documents +
        intervals)."""
        out: list[tuple[int, int]] = []
        if n <= 0:
            return out
        starts = self.starts if self.lengths is not None else (0, seq)
        last, q = g0 + stride * (n - 1), g0
        while q <= last:
            d = bisect.bisect_right(starts, q) - 1
            ds, de = starts[d], starts[d + 1]
            qb = q + stride * ((min(last, de - 1) - q) // stride)  # the last query in this document
            lo = ds if self.left is None else max(ds, q - self.left)
            if self.left is None or self.right is None or stride <= self.left + self.right + 1:
                out.append((lo, de if self.right is None else min(de, qb + self.right + 1)))
            else:  # gaps between the queries' windows
                out += [(max(ds, i - self.left), min(de, i + self.right + 1)) for i in range(q, qb + 1, stride)]
            q = qb + stride  # the first query of a later document
        return out

    # --- counts -------------------------------------------------------------------------------------------------
    def keys_per_query(self, seq: int) -> torch.Tensor:
        """(seq,) int64: how many keys each global query position sees (O(seq))."""
        self.check(seq)
        i = torch.arange(seq, dtype=torch.int64)
        starts = torch.tensor(self.starts, dtype=torch.int64)
        doc = torch.bucketize(i, starts[1:-1], right=True) if self.lengths is not None else torch.zeros_like(i)
        first = starts[doc] if self.lengths is not None else torch.zeros_like(i)
        last = (starts[doc + 1] - 1) if self.lengths is not None else torch.full_like(i, seq - 1)
        if self.left is not None:
            first = torch.maximum(first, i - self.left)
        if self.right is not None:
            last = torch.minimum(last, i + self.right)
        return (last - first + 1).clamp_(min=0)

    def visible_pairs(self, seq: int) -> int:
        """Visible (query, key) pairs over a global length ``seq``."""
        return int(self.keys_per_query(seq).sum())

    # --- text ---------------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        if self.kind in ("full", "causal"):
            return self.kind
        if self.kind == "window":
            return f"window:{self.left}" if self.right == 0 else f"window:{self.left},{self.right}"
        text = "docs:" + _rle(self.lengths) + ("" if self.right == 0 else ":full")
        return text + (f"+window:{self.left}" if self.left is not None else "")

    def short(self) -> str:
        """The text form, abbreviated for messages when the length list is long."""
        s = str(self)
        return s if len(s) <= 60 else f"docs[{len(self.lengths)} documents, {self.seq_len} tokens, {self.digest()}]"

    def digest(self) -> str:
        """16 hex digits identifying the mask (the same text form gives the same digest on every machine)."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:16]

    @classmethod
    def parse(cls, text: str) -> Mask:
        """The mask of a text form (see the module doc); ``RingxInputError`` for anything else."""
        if isinstance(text, Mask):
            return text
        if not isinstance(text, str):
            raise RingxInputError(f"a mask is given as text such as 'causal' or 'window:128', got {text!r}")
        t = text.strip()
        try:
            if t in ("full", "causal"):
                return cls.full() if t == "full" else cls.causal()
            if t.startswith("window:"):
                parts = [int(x) for x in t[7:].split(",")]
                if len(parts) not in (1, 2):
                    raise ValueError
                return cls.window(*parts)
            if t.startswith("docs:"):
                body, _, win = t[5:].partition("+window:")
                body, _, flag = body.partition(":")
                if flag not in ("", "full", "causal"):
                    raise ValueError
                return cls.documents(_unrle(body), causal=flag != "full", window=int(win) if win else None)
        except (ValueError, TypeError):
            pass
        raise RingxInputError(f"cannot read mask {text[:80]!r}: use full, causal, window:L, window:L,R, or "
                              "docs:N1,N2,... (NxC for C documents of N) with optional :full and +window:W")


def as_mask(mask: Mask | str | None = None, causal: bool | None = None) -> Mask:
    """The mask of a call: ``mask`` (a Mask or its text) or ``causal`` as shorthand, exactly one of them."""
    if (mask is None) == (causal is None):
        raise RingxInputError("give exactly one of mask= (a ringx.Mask) and causal= (True/False shorthand), "
                              f"got mask={mask!r}, causal={causal!r}")
    if mask is not None:
        return mask if isinstance(mask, Mask) else Mask.parse(mask)
    if not isinstance(causal, bool):
        raise RingxInputError(f"causal must be True or False, got {causal!r}")
    return Mask.causal() if causal else Mask.full()


def _rle(lengths: tuple[int, ...]) -> str:
    out, i = [], 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        out.append(str(lengths[i]) if j - i == 1 else f"{lengths[i]}x{j - i}")
        i = j
    return ",".join(out)


def _unrle(text: str) -> list[int]:
    lens: list[int] = []
    for part in text.split(","):
        n, _, c = part.partition("x")
        lens += [int(n)] * (int(c) if c else 1)
    return lens


# --- band geometry (what the plans and kernels share) --------------------------------------------------------------
INF = math.inf


def segment_band(mask: Mask, gq0: int, gk0: int, stride: int) -> tuple[float, float]:
    """(lo, hi): query segment row a sees key segment row b iff lo <= a - b <= hi, for segments of one document
    starting at global positions gq0 and gk0 with the same ``stride``. Bounds may be +-inf."""
    d = gq0 - gk0  # i - j = d + stride * (a - b)
    lo = -INF if mask.right is None else math.ceil((-mask.right - d) / stride)
    hi = INF if mask.left is None else math.floor((mask.left - d) / stride)
    return lo, hi


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
