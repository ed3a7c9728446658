"""A plugin's traces (costmodel/traced.py) at any sequence length, from its traces at two lengths.

A trace is, per traced rank and pass, the communication calls in order: ``(flops before, op, sent, received,
group size, peer)``. Between two local lengths ``n`` (tokens per rank) an attention schedule keeps its calls (the
same ops on the same groups and peers, in the same order) and only their sizes change: bytes move as ``a n + c``
(a tensor of the local sequence, plus what does not grow with it), FLOPs as ``a n^2 + b n`` (blocks of ``n`` by
``n`` or by a fixed length; nothing is computed without tokens). Two traces fix these forms, in exact fractions;
a third tells whether the plugin follows them (:func:`fit` raises :class:`Mismatch` where the two differ in
their calls, and the caller compares the third exactly). A length where a derived value is not a non-negative
integer (a length the schedule cannot split) is not derived: :meth:`Form.at` gives None.
"""

from __future__ import annotations

import math
from fractions import Fraction

Line = tuple[int, int, int]


class Mismatch(ValueError):
    """Two traces whose calls differ beyond their sizes: one line."""


def _line(x1: int, y1: Fraction | int, x2: int, y2: Fraction | int) -> Line:
    """(A, B, D), integers: the line through the two points is (A x + B) / D."""
    a = Fraction(y2 - y1) / (x2 - x1)
    b = y1 - a * x1
    d = math.lcm(a.denominator, b.denominator)
    return int(a * d), int(b * d), d


def _fit_call(n1: int, c1: tuple, n2: int, c2: tuple) -> tuple:
    shape1, shape2 = (c1[1], c1[4], c1[5]), (c2[1], c2[4], c2[5])
    if shape1 != shape2:
        raise Mismatch(f"a call is {shape1[0]} (group {shape1[1]}, peer {shape1[2]}) at {n1} tokens a rank, "
                       f"{shape2[0]} (group {shape2[1]}, peer {shape2[2]}) at {n2}")
    flops = _line(n1, Fraction(c1[0], n1), n2, Fraction(c2[0], n2))  # FLOPs / n: linear in n
    return flops, c1[1], _line(n1, c1[2], n2, c2[2]), _line(n1, c1[3], n2, c2[3]), c1[4], c1[5]


def fit(n1: int, traces1: tuple, n2: int, traces2: tuple) -> Form:
    """The forms through the traces at local lengths ``n1`` != ``n2`` (each: per rank, (forward, backward))."""
    ranks = []
    for t1, t2 in zip(traces1, traces2, strict=True):
        passes = []
        for p1, p2 in zip(t1, t2, strict=True):
            if len(p1) != len(p2):
                raise Mismatch(f"{len(p1) - 1} calls at {n1} tokens a rank, {len(p2) - 1} at {n2}")
            passes.append([_fit_call(n1, c1, n2, c2) for c1, c2 in zip(p1, p2)])
        ranks.append(passes)
    return Form(ranks)


def _integer(num: int, den: int) -> int | None:
    q, r = divmod(num, den)
    return None if r or q < 0 else q


class Form:
    """Traces as functions of the local length (see the module doc)."""

    def __init__(self, ranks: list):
        self._ranks = ranks

    def at(self, n: int) -> tuple | None:
        """The traces at local length ``n``, as the tracer gives them; None where a value is not an integer."""
        out = []
        for passes in self._ranks:
            got = []
            for calls in passes:
                rows = []
                for (fa, fb, fd), op, (sa, sc, sd), (ra, rc, rd), size, peer in calls:
                    values = _integer((fa * n + fb) * n, fd), _integer(sa * n + sc, sd), _integer(ra * n + rc, rd)
                    if None in values:
                        return None
                    rows.append((values[0], op, values[1], values[2], size, peer))
                got.append(rows)
            out.append(tuple(got))
        return tuple(out)


__all__ = ["Form", "Mismatch", "fit"]
