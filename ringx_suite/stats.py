"""Statistics of timing samples: the spread of one candidate, and the speedup of one over another.

A speedup is ``median(baseline) / median(candidate)`` (above 1: faster than the
baseline). Its interval is a bootstrap of that ratio of medians: when the two
were timed side by side (same timing group, sample i of each taken in the same
round) the rounds are resampled together (paired), so drift of the machine
falls on both alike; otherwise each side is resampled on its own. A speedup
whose interval contains 1 is "within noise": neither a win nor a loss.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
METHOD = (f"{CONFIDENCE:.0%} bootstrap interval of the ratio of medians ({RESAMPLES} resamples; rounds resampled "
          "together when the candidates were timed side by side)")


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Linear interpolation between order statistics (p in [0, 1])."""
    s = sorted_samples
    x = p * (len(s) - 1)
    lo = int(x)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (x - lo)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """median, min, max, mean, std, p10, p90 and n of the samples (seconds)."""
    s = sorted(samples)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "mean": statistics.fmean(s),
            "std": statistics.stdev(s) if len(s) > 1 else 0.0, "p10": percentile(s, 0.1), "p90": percentile(s, 0.9),
            "n": len(s)}


def stat_fields(samples: Sequence[float]) -> dict[str, float]:
    """The summary as record fields (median_s, min_s, ...)."""
    st = summarize(samples)
    return {f"{k}_s": st[k] for k in ("median", "min", "max", "mean", "std", "p10", "p90")}


@dataclass(frozen=True)
class Speedup:
    value: float  # baseline median / candidate median
    lo: float
    hi: float
    paired: bool

    @property
    def within_noise(self) -> bool:
        return self.lo <= 1.0 <= self.hi

    @property
    def verdict(self) -> str:
        """'faster', 'slower' or 'within noise'."""
        if self.within_noise:
            return "within noise"
        return "faster" if self.value > 1 else "slower"

    def text(self, digits: int = 2) -> str:
        """'1.23x [1.10-1.31]', with '~' in front when the interval contains 1."""
        mark = "~" if self.within_noise else ""
        return f"{mark}{self.value:.{digits}f}x [{self.lo:.{digits}f}-{self.hi:.{digits}f}]"


def speedup(baseline: Sequence[float], candidate: Sequence[float], paired: bool = False,
            seed: int = 0) -> Speedup:
    """The candidate's speedup over the baseline, with its bootstrap interval (see the module doc).

    ``paired`` needs equally many samples, sample i of each from the same round.
    """
    b, c = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    value = float(np.median(b) / np.median(c))
    if len(b) < 2 or len(c) < 2:
        return Speedup(value, 0.0, float("inf"), paired)  # one sample says nothing about noise
    rng = np.random.default_rng(seed)
    paired = paired and len(b) == len(c)
    if paired:
        idx = rng.integers(0, len(b), size=(RESAMPLES, len(b)))
        ratios = np.median(b[idx], axis=1) / np.median(c[idx], axis=1)
    else:
        ib = rng.integers(0, len(b), size=(RESAMPLES, len(b)))
        ic = rng.integers(0, len(c), size=(RESAMPLES, len(c)))
        ratios = np.median(b[ib], axis=1) / np.median(c[ic], axis=1)
    tail = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return Speedup(value, float(min(lo, value)), float(max(hi, value)), paired)


def records_speedup(baseline: list[dict], candidate: list[dict], samples: str = "samples_s") -> Speedup:
    """Speedup of one algorithm's records over the baseline's at one configuration.

    One record each from the same timing group: paired samples. Otherwise (repeats, several runs) the
    samples of each side are pooled and resampled independently. Both tools (bench summary, analysis) use
    this, so they agree on how duplicates combine. ``samples``: the field compared (a list of seconds, or of
    lists of them: an infer record's ``decode_samples_s``, flattened in order).
    """
    paired = (len(baseline) == 1 and len(candidate) == 1 and baseline[0].get("timing_group") is not None
              and baseline[0].get("timing_group") == candidate[0].get("timing_group"))
    b = [x for r in baseline for x in flat(r[samples])]
    c = [x for r in candidate for x in flat(r[samples])]
    return speedup(b, c, paired=paired)


def flat(samples: Sequence) -> list[float]:
    """Seconds in order, whether given flat or per iteration (lists of lists)."""
    return [x for s in samples for x in (s if isinstance(s, list | tuple) else [s])]
