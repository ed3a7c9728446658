"""The suite's mask specs (`--mask`, sweep files' `masks = [...]`): one parser, shared by bench and analysis.

A spec is either a ringx.Mask text form (``causal``, ``full``, ``window:W``, ``window:L,R``, ``docs:64x8,32``,
``prefix:P``, ``blocks:B``, ``docs:64x8:blocks:16``, ``shared:512/128x4``, ``slices:...``) or a document
*distribution* that is drawn into exact lengths for a global length S and a seed:

- ``docs:lognormal:MEAN``: log-normal lengths of mean MEAN (sigma 1 of the underlying normal);
- ``docs:uniform:MIN-MAX``: lengths uniform in [MIN, MAX];
- ``docs:fixed:N``: documents of N tokens;
- ``docs:file:PATH``: the lengths in PATH, one per line (blank lines and ``#`` comments ignored);

each optionally followed by ``+window:W`` (a causal window inside every document). Documents are drawn
until they cover S; the last one is trimmed so the lengths sum to S exactly (a file shorter than S is an
error: it says what the data is). No length has to divide anything. A seeded draw is the same on every
machine: draw once per configuration and hand every rank the result.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import UserError

if TYPE_CHECKING:  # torch and ringx load when a spec is parsed, not when the option tables are (bench --help)
    from ringx.mask import Mask

DISTRIBUTIONS = ("lognormal", "uniform", "fixed", "file")
LONG_LENGTHS = 64  # records keep the lengths themselves up to this many documents, else their digest
HELP = ("causal, full, window:W, docs:lognormal:MEAN, docs:uniform:MIN-MAX, docs:fixed:N, docs:file:PATH "
        "(one length per line), each docs:... optionally +window:W, prefix:P (prefix-LM), blocks:B (block-causal), "
        "shared:P/R1,R2 (a prompt and its responses), or any ringx.Mask text (docs:64x8,32, docs:64x8:blocks:16)")


def _bad(spec: str, why: str) -> UserError:
    return UserError(f"--mask {spec!r}: {why} (use {HELP})")


def _positive(spec: str, text: str, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise _bad(spec, f"{what} {text!r} is not an integer") from None
    if n < 1:
        raise _bad(spec, f"{what} must be positive, got {n}")
    return n


HEADS = ("full", "causal", "window:", "docs:", "prefix:", "blocks:", "shared:", "slices:")  # how a spec starts


def split_specs(text: str) -> list[str]:
    """Several specs given as one text ('causal,window:4096,docs:lognormal:2048') into the specs: a comma starts a
    new spec only where a spec's head follows it, so ``window:L,R`` and ``docs:64x8,32`` stay whole."""
    out: list[str] = []
    for part in text.split(","):
        p = part.strip()
        if not p:
            continue
        if out and not p.startswith(HEADS):
            out[-1] += "," + p
        else:
            out.append(p)
    return out


def is_distribution(spec: str) -> bool:
    """Whether ``spec`` is drawn (a distribution or a file) rather than a fixed ringx.Mask text."""
    return spec.strip().split("+", 1)[0].split(":")[:2][-1] in DISTRIBUTIONS and spec.strip().startswith("docs:")


def _fill(seq: int, draw) -> list[int]:
    """Lengths from ``draw()`` until they cover ``seq``, the last trimmed to fit."""
    out, left = [], seq
    while left > 0:
        n = min(draw(), left)
        out.append(n)
        left -= n
    return out


def _lengths(spec: str, dist: str, arg: str, seq: int, seed: int) -> list[int]:
    import torch

    from ringx.balancing import lognormal_lengths

    gen = torch.Generator().manual_seed(seed)
    if dist == "fixed":
        n = _positive(spec, arg, "document length")
        return _fill(seq, lambda: n)
    if dist == "uniform":
        lo, sep, hi = arg.partition("-")
        if not sep:
            raise _bad(spec, "uniform takes MIN-MAX")
        lo, hi = _positive(spec, lo, "minimum"), _positive(spec, hi, "maximum")
        if lo > hi:
            raise _bad(spec, f"minimum {lo} is above maximum {hi}")
        return _fill(seq, lambda: int(torch.randint(lo, hi + 1, (), generator=gen)))
    if dist == "lognormal":
        try:
            mean = float(arg)
        except ValueError:
            raise _bad(spec, f"mean {arg!r} is not a number") from None
        if not mean >= 1:
            raise _bad(spec, f"mean must be at least 1, got {arg}")
        return lognormal_lengths(seq, mean, seed=seed)  # ringx's draw (the balance figures' documents)
    # file
    path = Path(arg)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise _bad(spec, f"cannot read {arg}: {e.strerror or e}") from None
    given = [ln.split("#", 1)[0].strip() for ln in lines]
    given = [_positive(spec, x, f"{arg}: length") for x in given if x]
    if sum(given) < seq:
        raise _bad(spec, f"the lengths in {arg} sum to {sum(given)}, fewer than the {seq} tokens asked for")
    it = iter(given)
    return _fill(seq, lambda: next(it))


def _literal(spec: str) -> Mask:
    """The ringx.Mask of a spec that is not drawn."""
    from ringx.errors import RingxInputError
    from ringx.mask import Mask

    try:
        return Mask.parse(spec.strip())
    except RingxInputError:
        raise _bad(spec, "not a mask or distribution") from None


def _checked(spec) -> str:
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"--mask must be a non-empty text ({HELP}), got {spec!r}")
    return spec


def is_causal(spec: str) -> bool:
    """Whether no query of the spec's masks sees a later key: what ``causal`` means beside a mask (drawn documents
    are causal)."""
    return is_distribution(_checked(spec)) or _literal(spec).is_causal


def causal_layout(spec: str) -> bool:
    """Whether the spec's masks take the causal layouts (every mask but full, ringx.Mask.causal_layout)."""
    return is_distribution(_checked(spec)) or _literal(spec).causal_layout


def reconcile(specs: list[str] | None, causals: list[bool] | None, default: list[bool]) -> list[str]:
    """The maskings that ``--mask`` and ``--causal`` (a sweep file's ``masks`` and ``causal``, a point's ``mask``
    and ``causal``) ask for, as mask specs: the masks, else the causal flags as ``causal``/``full``, else
    ``default``'s. The masks replace the flags; given both, they must say the same: the flags are the masks'
    causality (``is_causal``), so ``causal true`` goes with ``causal`` or ``window:W``, ``false`` with ``full``.
    Otherwise a one-line UserError."""
    if specs is None:
        return ["causal" if c else "full" for c in (default if causals is None else causals)]
    if causals is not None and {is_causal(s) for s in specs} != set(causals):
        said = ",".join(str(c).lower() for c in causals)
        raise UserError(f"--mask {','.join(specs)} and --causal {said} disagree: give --mask alone (--causal "
                        "true stands for --mask causal or another causal mask such as window:W, false for --mask "
                        "full)")
    return list(specs)


def parse(spec: str, seq: int, seed: int = 0) -> Mask:
    """The ringx.Mask of a spec for global length ``seq`` (module doc); one-line UserError when it is bad. Drawn
    once per (spec, length, seed) in a process (masks are immutable), the same on every rank (a seeded draw)."""
    return _parse(_checked(spec), seq, seed)


@functools.lru_cache(maxsize=256)
def _parse(spec: str, seq: int, seed: int) -> Mask:
    from ringx.mask import Mask

    text = spec.strip()
    if not is_distribution(text):
        m = _literal(text)
        if m.problem(seq):
            raise UserError(m.problem(seq))
        return m
    body, _, win = text.partition("+window:")
    window = _positive(spec, win, "window") if win else None
    dist, _, arg = body[5:].partition(":")
    if not arg:
        raise _bad(spec, f"{dist} needs a parameter")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise UserError(f"the sequence length must be a positive integer, got {seq!r}")
    return Mask.documents(_lengths(spec, dist, arg, seq, seed), causal=True, window=window)


def record_fields(spec: str, mask: Mask, seed: int = 0) -> dict:
    """What a record says about its mask: ``mask`` (the text form; abbreviated with its digest past 60
    characters, Mask.short), ``mask_lengths`` (the exact lengths) for a document mask given literally or of up
    to LONG_LENGTHS documents, else ``mask_digest`` (Mask.digest of the exact mask); ``mask_spec`` and
    ``mask_seed`` where it was drawn from a distribution (they redraw it: parse(spec, seq, seed))."""
    out: dict = {"mask": mask.short()}
    drawn = is_distribution(spec)
    if mask.lengths is not None:
        if not drawn or len(mask.lengths) <= LONG_LENGTHS:
            out["mask_lengths"] = list(mask.lengths)
        else:
            out["mask_digest"] = mask.digest()
    if drawn:
        out["mask_spec"], out["mask_seed"] = spec.strip(), seed
    return out
