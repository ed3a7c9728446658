"""Attention masks: full, causal, sliding windows, packed documents, prefix-LM, block-causal, shared prefixes, and
any set of slices.

A :class:`Mask` says which global key positions j each global query position i sees. Its constructors and text
forms name the masks the field trains with; every one of them compiles, for a global length, to the one general
form of :mod:`ringx.slices` (disjoint rectangles of the (query, key) plane, each with a band ``lo <= i - j <= hi``),
and the plans, counts and pictures read only that form. Within a document:

- ``Mask.full()``, ``Mask.causal()`` (j <= i), ``Mask.window(left, right=0)`` (i - left <= j <= i + right,
  flash-attention's ``window_size``);
- ``Mask.documents(lengths, causal=True, window=None)``: packed documents, causal or not, optionally windowed;
- ``Mask.prefix_lm(prefix, lengths=None)``: j <= i, or both among the document's first ``prefix`` tokens;
- ``Mask.block_causal(block, lengths=None)``: j's block (``block`` tokens from the document's start) is i's or an
  earlier one;
- ``Mask.shared_prefix(groups)``: each group is a prompt and its responses; the prompt is causal, a response token
  sees the whole prompt and its own response up to itself;
- ``Mask.from_slices(slices)``: any disjoint :class:`ringx.slices.Slice` set (sparse patterns, per-document
  prefixes, global tokens: every type of LongCA-bench's list, docs/masks.md).

Text form (``str(m)``, read back by :meth:`Mask.parse`; ``parse(str(m)) == m`` always): ``full``, ``causal``,
``window:L`` or ``window:L,R``, ``docs:LENGTHS`` (``NxC`` stands for C documents of length N: ``docs:64x8,32``)
followed by ``:full`` when not causal and ``+window:W`` when windowed, ``prefix:P`` and ``blocks:B`` (the whole
sequence one document) or ``docs:LENGTHS:prefix:P`` and ``docs:LENGTHS:blocks:B``, ``shared:P/R1,R2+P/R...``
(groups joined by ``+``, each a prompt length and its response lengths), and ``slices:Q0-Q1/K0-K1[/causal|
/band:LO:HI],...``. A long text stays exact (records keep :meth:`digest`, 16 hex digits, next to it).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from itertools import accumulate

import torch

from .errors import RingxInputError
from .slices import CAUSAL, FULL, INF, NONE, PARTIAL, Slice, SliceSet, check_slices

KINDS = ("full", "causal", "window", "docs", "prefix", "blocks", "shared", "slices")


def _count(x, what: str, least: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < least:
        raise RingxInputError(f"{what} must be an integer >= {least}, got {x!r}")
    return x


def _lengths(lengths, what: str = "document lengths") -> tuple[int, ...]:
    try:
        lens = tuple(lengths)
    except TypeError:
        raise RingxInputError(f"{what} must be a list of positive integers, got {lengths!r}") from None
    if not lens:
        raise RingxInputError(f"{what} must not be empty")
    for n in lens:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RingxInputError(f"{what} must be positive integers, got {n!r}")
    return lens


def _bound(x, what: str) -> float:
    """A band bound: an integer, or +-inf."""
    if x in (INF, -INF):
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != int(x):
        raise RingxInputError(f"{what} must be an integer or +-inf, got {x!r}")
    return int(x)


@dataclass(frozen=True)
class Mask:
    """An immutable, hashable attention mask (see the module doc for the forms and their text)."""

    kind: str  # one of KINDS
    left: int | None = None  # window and docs: how far back a query sees (None: unbounded)
    right: int | None = None  # window and docs: how far ahead a query sees (None: unbounded; 0: causal)
    lengths: tuple[int, ...] | None = None  # document lengths (docs; prefix and blocks: None is one document)
    size: int | None = None  # prefix: the bidirectional prefix's length; blocks: the block length
    groups: tuple[tuple[int, ...], ...] | None = None  # shared: (prompt, response, response, ...) per group
    items: tuple[Slice, ...] | None = None  # slices: the slices, sorted

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
        lens = _lengths(lengths)
        if window is not None:
            _count(window, "document window", 0)
        if not isinstance(causal, bool):
            raise RingxInputError(f"causal must be True or False, got {causal!r}")
        return cls("docs", window, 0 if causal else window, lens)

    @classmethod
    def prefix_lm(cls, prefix: int, lengths=None) -> Mask:
        """Prefix-LM: each document's first ``prefix`` tokens see each other (all of a shorter document), every
        later token sees itself and the tokens before it. ``lengths``: packed documents (None: one)."""
        return cls("prefix", lengths=None if lengths is None else _lengths(lengths), size=_count(prefix, "prefix", 1))

    @classmethod
    def block_causal(cls, block: int, lengths=None) -> Mask:
        """Block-causal: blocks of ``block`` tokens from each document's start (the last may be shorter); a token
        sees its own block and the earlier ones of its document. ``lengths``: packed documents (None: one)."""
        return cls("blocks", lengths=None if lengths is None else _lengths(lengths), size=_count(block, "block", 1))

    @classmethod
    def shared_prefix(cls, groups) -> Mask:
        """Shared prefixes (GRPO packing): ``groups`` is a list of (prompt length, [response lengths]); a prompt is
        causal, a response token sees its group's whole prompt and its own response up to itself. The groups are
        packed one after another like documents."""
        try:
            pairs = [(p, rs) for p, rs in groups]
        except (TypeError, ValueError):
            raise RingxInputError(f"shared prefixes are a list of (prompt, [responses]), got {groups!r}") from None
        if not pairs:
            raise RingxInputError("shared prefixes need at least one group")
        return cls("shared", groups=tuple((_count(p, "prompt length", 1), *_lengths(rs, "response lengths"))
                                          for p, rs in pairs))

    @classmethod
    def from_slices(cls, slices) -> Mask:
        """Any mask, as disjoint slices ``(q0, q1, k0, k1[, lo, hi])`` (:class:`ringx.slices.Slice`): query i in
        [q0, q1) sees key j in [k0, k1) iff lo <= i - j <= hi (default: all of them). Every query of the sequence
        (as long as the largest end) must see a key."""
        try:
            items = [Slice(*s) for s in slices]
        except TypeError:
            raise RingxInputError(f"slices are tuples (q0, q1, k0, k1[, lo, hi]), got {slices!r}") from None
        if not items:
            raise RingxInputError("a mask needs at least one slice")
        items = sorted(Slice(*(_count(x, "a slice's position", 0) for x in s[:4]), _bound(s.lo, "a band's lo"),
                             _bound(s.hi, "a band's hi")) for s in items)
        problem = check_slices(tuple(items), max(max(s.q1, s.k1) for s in items))
        if problem:
            raise RingxInputError(f"mask slices: {problem}")
        return cls("slices", items=tuple(items))

    # --- what it is ---------------------------------------------------------------------------------------------
    @property
    def is_causal(self) -> bool:
        """No query sees a later key."""
        if self.kind in ("full", "window", "docs"):
            return self.right == 0
        if self.kind in ("prefix", "blocks"):
            return self.size == 1
        if self.kind == "slices":  # no slice has a visible pair with i - j < 0
            return all(max(s.lo, s.q0 - s.k1 + 1) > min(s.hi, s.q1 - 1 - s.k0, -1) for s in self.items)
        return True  # causal, shared

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
    def documents_lengths(self) -> tuple[int, ...] | None:
        """The lengths of the packed units: documents, or a shared prefix's groups (None: one, of any length)."""
        if self.groups is not None:
            return tuple(sum(g) for g in self.groups)
        return self.lengths

    @property
    def seq_len(self) -> int | None:
        """The global length the mask is made for (None: any length)."""
        if self.items is not None:
            return max(max(s.q1, s.k1) for s in self.items)
        docs = self.documents_lengths
        return sum(docs) if docs is not None else None

    @property
    def starts(self) -> tuple[int, ...]:
        """Start position of every document (or group), and the end (one document from 0 when there are none)."""
        docs = self.documents_lengths
        return (0, *accumulate(docs)) if docs is not None else (0,)

    def problem(self, seq: int) -> str:
        """What is wrong with using this mask on a global length ``seq``, or ''."""
        n = self.seq_len
        if n is not None and n != seq:
            what = {"slices": "its slices end at", "shared": "its groups sum to"}.get(self.kind,
                                                                                  "document lengths sum to")
            return f"mask {self.short()}: {what} {n}, but the global sequence length is {seq}"
        return ""

    def check(self, seq: int) -> None:
        msg = self.problem(seq)
        if msg:
            raise RingxInputError(msg)

    # --- the general form, and what is read from it -------------------------------------------------------------
    def slices(self, seq: int) -> SliceSet:
        """This mask's slices over a global length ``seq`` (:mod:`ringx.slices`; cached per mask and length)."""
        return _compile(self, seq)

    def _over(self, *positions) -> SliceSet:
        """The slices over the length a mask made for one has, else over what the positions reach."""
        n = self.seq_len
        if n is None:  # the furthest position, + 1 (a range's last is its end)
            n = max((1 + (p[-1] if isinstance(p, range) and p.step > 0 else int(torch.as_tensor(p).max()))
                     for p in positions if len(p)), default=1)
        return self.slices(n)

    def visible(self, qpos, kpos) -> torch.Tensor:
        """Bool (len(qpos), len(kpos)): may query position qpos[a] see key position kpos[b]."""
        return self._over(qpos, kpos).visible(qpos, kpos)

    def classify(self, qpos, kpos) -> str:
        """``"none"``, ``"full"``, ``"causal"`` (the same positions on both sides, each query seeing itself and the
        earlier ones) or ``"partial"``: what a block of these query and key positions is. ``range`` arguments are
        answered from the slices in closed form; other sequences through :meth:`visible`."""
        if isinstance(qpos, range) and isinstance(kpos, range) and qpos.step == kpos.step == 1:
            if not len(qpos) or not len(kpos):
                return NONE
            return self._over(qpos, kpos).classify(qpos.start, qpos.stop, kpos.start, kpos.stop)
        q, k = list(qpos), list(kpos)
        vis = self.visible(q, k)
        if not vis.any():
            return NONE
        if vis.all():
            return FULL
        if q == k and q == sorted(q) and torch.equal(vis, torch.ones_like(vis).tril_()):
            return CAUSAL
        return PARTIAL

    def seen_keys(self, seq: int, g0: int, n: int, stride: int = 1) -> list[tuple[int, int]]:
        """The keys (of a global length ``seq``) that the ``n`` queries ``g0, g0 + stride, ...`` see, as increasing
        disjoint half-open intervals [k0, k1) (:meth:`ringx.slices.SliceSet.seen_keys`)."""
        return self.slices(seq).seen_keys(g0, n, stride)

    # --- counts -------------------------------------------------------------------------------------------------
    def keys_per_query(self, seq: int) -> torch.Tensor:
        """(seq,) int64: how many keys each global query position sees (O(seq x slices per query))."""
        return self.slices(seq).keys_per_query()

    def key_intervals(self, seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, first, last): each query's visible keys, one interval [first, last] per slice over it."""
        return self.slices(seq).key_intervals()

    def visible_pairs(self, seq: int) -> int:
        """Visible (query, key) pairs over a global length ``seq``."""
        return int(self.keys_per_query(seq).sum())

    # --- text ---------------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        if self.kind in ("full", "causal"):
            return self.kind
        if self.kind == "window":
            return f"window:{self.left}" if self.right == 0 else f"window:{self.left},{self.right}"
        if self.kind in ("prefix", "blocks"):
            pattern = f"{self.kind}:{self.size}"
            return pattern if self.lengths is None else f"docs:{_rle(self.lengths)}:{pattern}"
        if self.kind == "shared":
            return "shared:" + "+".join(f"{p}/{_rle(rs)}" for p, *rs in self.groups)
        if self.kind == "slices":
            return "slices:" + ",".join(_slice_text(s) for s in self.items)
        text = "docs:" + _rle(self.lengths) + ("" if self.right == 0 else ":full")
        return text + (f"+window:{self.left}" if self.left is not None else "")

    def short(self) -> str:
        """The text form, abbreviated for messages when it is long."""
        s = str(self)
        if len(s) <= 60:
            return s
        head = "docs" if self.lengths is not None else self.kind
        count = (f"{len(self.items)} slices" if self.items is not None else
                 f"{len(self.documents_lengths)} {'groups' if self.groups else 'documents'}")
        return f"{head}[{count}, {self.seq_len} tokens, {self.digest()}]"

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
            head, _, body = t.partition(":")
            if head == "window":
                parts = [int(x) for x in body.split(",")]
                if len(parts) not in (1, 2):
                    raise ValueError
                return cls.window(*parts)
            if head in ("prefix", "blocks"):
                return cls._pattern(head, int(body), None)
            if head == "docs":
                body, _, win = body.partition("+window:")
                lens, _, flag = body.partition(":")
                pattern, _, size = flag.partition(":")
                if pattern in ("prefix", "blocks") and not win:
                    return cls._pattern(pattern, int(size), _unrle(lens))
                if flag not in ("", "full", "causal"):
                    raise ValueError
                return cls.documents(_unrle(lens), causal=flag != "full", window=int(win) if win else None)
            if head == "shared":
                groups = [g.split("/") for g in body.split("+")]
                if any(len(g) != 2 for g in groups):
                    raise ValueError
                return cls.shared_prefix([(int(p), _unrle(rs)) for p, rs in groups])
            if head == "slices":
                return cls.from_slices(_read_slice(x) for x in body.split(","))
        except (ValueError, TypeError):
            pass
        raise RingxInputError(f"cannot read mask {text[:80]!r}: use full, causal, window:L, window:L,R, "
                              "docs:N1,N2,... (NxC for C documents of N) with optional :full and +window:W, "
                              "prefix:P, blocks:B, docs:...:prefix:P, docs:...:blocks:B, shared:P/R1,R2+P/R..., "
                              "or slices:Q0-Q1/K0-K1[/causal|/band:LO:HI],...")

    @classmethod
    def _pattern(cls, kind: str, size: int, lengths) -> Mask:
        return cls.prefix_lm(size, lengths) if kind == "prefix" else cls.block_causal(size, lengths)


@functools.lru_cache(maxsize=256)
def _compile(mask: Mask, seq: int) -> SliceSet:
    """The mask's slices over ``seq`` tokens (one place per form; the rest of ringx reads only slices)."""
    mask.check(seq)
    k = mask.kind
    if k == "slices":
        return SliceSet(mask.items, seq)
    if k == "shared":
        out, g = [], 0
        for p, *rs in mask.groups:
            out.append(Slice(g, g + p, g, g + p, 0, INF))  # the prompt: causal
            a = g + p
            for n in rs:  # a response: the whole prompt, and itself causally
                out += [Slice(a, a + n, g, g + p), Slice(a, a + n, a, a + n, 0, INF)]
                a += n
            g = a
        return SliceSet(out, seq)
    starts = mask.starts if mask.lengths is not None else (0, seq)
    out = []
    for s, e in zip(starts, starts[1:]):
        if k == "prefix":
            p = min(mask.size, e - s)
            out.append(Slice(s, s + p, s, s + p))
            if s + p < e:
                out.append(Slice(s + p, e, s, e, 0, INF))
        elif k == "blocks":
            out += [Slice(a, min(e, a + mask.size), s, min(e, a + mask.size)) for a in range(s, e, mask.size)]
        else:  # full, causal, window, docs: one band per document
            lo = -INF if mask.right is None else -mask.right
            out.append(Slice(s, e, s, e, lo, INF if mask.left is None else mask.left))
    return SliceSet(out, seq)


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


def _slice_text(s: Slice) -> str:
    band = "" if (s.lo, s.hi) == (-INF, INF) else "/causal" if (s.lo, s.hi) == (0, INF) else \
        f"/band:{_num(s.lo)}:{_num(s.hi)}"
    return f"{s.q0}-{s.q1}/{s.k0}-{s.k1}{band}"


def _num(x: float) -> str:
    return "inf" if x == INF else "-inf" if x == -INF else str(x)


def _read_slice(text: str) -> Slice:
    q, k, *band = text.split("/")
    (q0, q1), (k0, k1) = (tuple(int(x) for x in r.split("-")) for r in (q, k))
    if not band:
        return Slice(q0, q1, k0, k1)
    if band == ["causal"]:
        return Slice(q0, q1, k0, k1, 0, INF)
    name, lo, hi = band[0].split(":") if len(band) == 1 else ("", "", "")
    if name != "band":
        raise ValueError
    return Slice(q0, q1, k0, k1, *(float(x) if "inf" in x else int(x) for x in (lo, hi)))
