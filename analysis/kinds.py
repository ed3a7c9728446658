"""The record kinds analysis compares, one table entry each: what is compared, at which configuration, with
which measures, grouped how.

``summarize`` and ``speedup`` (metrics.py), the figures (figures.py), the tables and the report read a kind's
entry and nothing else about it, so a new kind of timed record is one entry here plus its own figures and table
(serving, ``infer``: analysis/infer.py). The grouping of figures and tables by mask is :func:`mask_names`: the
one place that says what a row's mask is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from ringx_suite.records import COMPARE_BY, INFER_COMPARE_BY, MODEL_COMPARE_BY, MODEL_PHASES
from ringx_suite.stats import flat

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ringx_suite.tables import Table


# The contract between the report and a kind's views: each figure and table takes all of these keywords (those
# it does not use too), so the report and `analysis table` call every one alike, without looking at signatures.
class Draw(Protocol):
    """A kind's figure of its summary. ``records``: the campaign's records, for a figure that sets the kind
    beside another (the training step's speedup beside attention's)."""

    def __call__(self, summary: pd.DataFrame, *, baseline: str, width: str,
                 records: pd.DataFrame | None) -> Figure: ...


class MakeTable(Protocol):
    """A kind's table of its summary (or of one mask's part of it); ``records`` as for :class:`Draw`."""

    def __call__(self, summary: pd.DataFrame, *, baseline: str, records: pd.DataFrame | None) -> Table: ...


@dataclass(frozen=True)
class Views:
    """A kind's figures (with their titles and captions, formatted with ``{baseline}``) and tables."""

    figures: dict[str, Draw]  # figure name (its files' stem) -> what draws it
    titles: dict[str, str]
    captions: dict[str, str]
    tables: dict[str, tuple[str, MakeTable, bool]]  # what -> (heading, what makes it, folded in HTML)


@dataclass(frozen=True, kw_only=True)
class Kind:
    """How one kind of timed record is summarized, compared and shown."""

    record: str  # the records' `kind` field, and the kind's key in KINDS
    noun: str  # the records in messages: "no successful {noun}s"
    candidate: str  # the column whose values are compared: a speedup is one candidate's over another's
    config: tuple[str, ...]  # two candidates compare at equal values of these (ringx_suite/records.py)
    panel_by: tuple[str, ...]  # one figure panel per value of these (and of the figure's own axis)
    measures: Callable[[pd.DataFrame, float], dict]  # the kind's own summary columns: (ok records, median s)
    empty: str  # why there is nothing to summarize
    unmeasured: str  # what the baseline lacks: "baseline 'ring' has no successful {unmeasured}"
    share_y: bool  # panels share the y axis (False: each panel's own range, as for noisy short steps)
    mfu_label: tuple[str, str]  # axis label of MFU, and of TFLOP/s per rank where no peak is known
    # Each timed phase: (its name, the records' samples field, the summary's median column). A speedup is of one
    # phase (metrics.speedup's ``phase``; the first by default: the whole timed call).
    timed: tuple[tuple[str, str, str], ...] = (("time", "samples_s", "median_s"),)
    section: str | None = None  # the report's own section for this kind (None: under Results, with the others)


def _attention(g: pd.DataFrame, median_s: float) -> dict:
    return {}


def _model(g: pd.DataFrame, median_s: float) -> dict:
    first = g.iloc[0]
    return {"head_dim": int(first["d_model"]) // int(first["heads"]),
            **{f"{ph}_s": float(np.median([x for d in g["phase_samples_s"] for x in d[ph]])) for ph in MODEL_PHASES},
            "tokens_per_s_per_rank": first["batch"] * first["seq"] / first["world_size"] / median_s,
            "flops_per_token": first["flops_per_token"]}


def _pooled(g: pd.DataFrame, col: str) -> list[float]:
    """Every sample of ``col`` over a group's records (repeats), flattened in order (decode: per iteration, per
    step)."""
    return [x for s in g[col] if isinstance(s, list) for x in flat(s)]


def _infer(g: pd.DataFrame, median_s: float) -> dict:
    """A serving configuration's phases, each pooled over repeats as bench summary pools them: TTFT (the
    prefill's samples) and TPOT (every decode step's), with their p10-p90; the throughputs of those pooled
    samples; the largest rank's KV cache."""
    first, out = g.iloc[0], {}
    for name, col in (("ttft", "prefill_samples_s"), ("tpot", "decode_samples_s")):
        x = _pooled(g, col)
        out.update({f"{name}_s": float(np.median(x)) if x else np.nan,
                    f"{name}_p10_s": float(np.percentile(x, 10)) if x else np.nan,
                    f"{name}_p90_s": float(np.percentile(x, 90)) if x else np.nan})
    steps = _pooled(g, "decode_samples_s")
    out["prefill_tokens_per_s"] = first["batch"] * first["prompt_len"] / out["ttft_s"]
    out["decode_tokens_per_s"] = first["batch"] * len(steps) / sum(steps) if steps else np.nan
    out["kv_cache_bytes"] = float(pd.to_numeric(g["kv_cache_bytes"]).max())
    return out


# Keyed by the records' `kind`, in the order reports show them.
KINDS: dict[str, Kind] = {k.record: k for k in (
    Kind(record="attention", noun="attention record", candidate="algorithm",
         config=COMPARE_BY, panel_by=("mask",),
         measures=_attention,
         empty="no successful attention records to summarize", unmeasured="measurement",
         share_y=True, mfu_label=("MFU", "TFLOP/s per rank")),
    Kind(record="model", noun="model record", candidate="algorithm",
         config=MODEL_COMPARE_BY, panel_by=("model", "mask"),
         measures=_model,
         empty="no successful model records (run `ringx-bench model`)", unmeasured="model record",
         share_y=False, mfu_label=("MFU (model FLOPs)", "model TFLOP/s per rank")),
    Kind(record="infer", noun="infer record", candidate="algorithm",
         config=INFER_COMPARE_BY, panel_by=("model",),
         measures=_infer,
         empty="no successful infer records (run `ringx-bench infer`)", unmeasured="infer record",
         share_y=False, mfu_label=("MFU", "TFLOP/s per rank"),
         timed=(("generation", "samples_s", "median_s"), ("TTFT", "prefill_samples_s", "ttft_s"),
                ("TPOT", "decode_samples_s", "tpot_s")),
         section="Serving: prefill and decode"),
)}


def kind_of(frame: pd.DataFrame) -> Kind:
    """The kind a summary or speedup frame was made from (summarize records it; attention when not said)."""
    return KINDS[frame.attrs.get("kind", "attention")]


def present(df: pd.DataFrame) -> list[str]:
    """The kinds with at least one successful record in ``df``, in KINDS order."""
    if "kind" not in df or "status" not in df:
        return []
    ok = set(df.loc[df["status"] == "ok", "kind"])
    return [name for name, k in KINDS.items() if k.record in ok]


MASK_ORDER = ("causal", "non-causal")  # panels and rows in this order, other masks after them by name


def mask_names(df: pd.DataFrame) -> pd.Series:
    """Each row's mask as text: the distribution it was drawn from (`mask_spec`, e.g. docs:lognormal:4096: one
    draw per configuration, so the algorithms compared share it, and one panel holds every sequence length),
    else its `mask` field, else from `causal` (records older than masks)."""
    out = df["causal"].map({True: "causal", False: "non-causal"}).astype(object) if "causal" in df else \
        pd.Series([None] * len(df), index=df.index, dtype=object)
    for col in ("mask", "mask_spec"):
        if col in df:
            out = df[col].astype(object).where(df[col].notna(), out)
    return out.replace({"full": "non-causal"})  # `--mask full` and `causal: false` are one mask


def mask_order(mask: str) -> tuple:
    return (MASK_ORDER.index(mask) if mask in MASK_ORDER else len(MASK_ORDER), mask)
