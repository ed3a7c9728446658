"""The timeline figure: what every rank did during one traced call, per algorithm, from the trace files.

Input: the Chrome/Perfetto JSON files ``ringx-bench trace`` writes (one per rank and call, under a
campaign's trace/ folder; ``ringx.timeline.chrome_trace`` with the call's description in ``otherData``).
So a figure can be redrawn from the files alone, without rerunning anything.

One panel per algorithm (rows) and rank count (columns); in a panel one row per rank with two lanes:
compute (kernel calls and merges) above, communication below (in flight from post to wait as light
bars, the host blocked in a post or wait as dark bars). Where communication was in flight while the
rank computed, the row is shaded: that is the hidden communication, and the rank's overlap_fraction
(``ringx.timeline.overlap_fraction``: hidden / in flight) is written at the row's end. One figure per
traced configuration (mode, sequence length, masking, shapes).

A plugin's call (its file's otherData names the plugin) has no marks inside: its panel says so in its title, its
forward and backward are hatched whole-call bars in the compute lane, its communication is what the dispatcher saw
(posts; for functional collectives also waits and in flight), and its overlap is "n/a", never a number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from ringx.timeline import Mark, from_chrome_trace, hidden, in_flight, overlap_fraction

from .figures import STYLE, order_key, plural, save

# what identifies one traced call, beside the rank; everything else in otherData describes the configuration
CALL = ("algorithm", "world_size")
# (kernel and plugin describe the algorithm's call, not the configuration: a plugin is drawn beside ours)
NOT_CONFIG = {*CALL, "rank", "date", "host", "clock", "commit", "kernel", "plugin"}
COLORS = {"compute": "#0072B2", "merge": "#56B4E9", "comm": "#E69F00", "blocked": "#D55E00", "hidden": "#009E73",
          "call": "#BBBBBB"}
NA = "n/a"


class NoTraces(ValueError):
    """No trace files where trace files were expected."""


@dataclass
class Trace:
    """One rank's marks of one traced call, and what was traced (the file's otherData)."""

    meta: dict
    marks: list[Mark]
    path: Path | None = None

    @property
    def rank(self) -> int:
        return int(self.meta.get("rank", 0))

    @property
    def config(self) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in self.meta.items() if k not in NOT_CONFIG))

    @property
    def opaque(self) -> bool:
        """A plugin's call (its file says so; or nothing inside the call was marked): no overlap to measure, even
        where the plugin calls ringx inside, whose marks are then only part of its call."""
        return "plugin" in self.meta

    @property
    def overlap(self) -> float | None:
        """overlap_fraction, or None for an opaque call."""
        return None if self.opaque else overlap_fraction(self.marks)

    @property
    def span_s(self) -> float:
        return max((m.end_s for m in self.marks), default=0.0) - min((m.start_s for m in self.marks), default=0.0)


def read(path: str | Path) -> list[Trace]:
    """The traces in one file (one per rank it holds; bench writes one rank per file)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NoTraces(f"{path}: not a readable trace file ({e})") from None
    meta = doc.get("otherData") or {}
    return [Trace({**meta, "rank": meta.get("rank", rank)}, marks, path)
            for rank, marks in sorted(from_chrome_trace(doc).items())]


def trace_dir(campaign: str | Path) -> Path:
    """A campaign's trace folder: CAMPAIGN/trace (CAMPAIGN a directory, a bare name under runs/, or records.jsonl)."""
    p = Path(campaign)
    if p.name == "records.jsonl":
        p = p.parent
    if not p.exists() and len(p.parts) == 1 and (Path("runs") / p).is_dir():
        p = Path("runs") / p
    return p if p.name == "trace" else p / "trace"


def load(campaign: str | Path) -> list[Trace]:
    """Every trace of a campaign (its trace/ folder, searched recursively); NoTraces when there is none."""
    d = trace_dir(campaign)
    files = sorted(d.rglob("*.json")) if d.is_dir() else []
    traces = [t for f in files for t in read(f)]
    if not traces:
        raise NoTraces(f"no trace files under {d} (ringx-bench trace writes them)")
    return traces


def calls(traces: list[Trace]) -> dict[tuple, dict[tuple, dict[int, Trace]]]:
    """config -> (algorithm, world_size) -> rank -> trace."""
    out: dict[tuple, dict[tuple, dict[int, Trace]]] = {}
    for t in traces:
        key = (str(t.meta.get("algorithm", "?")), int(t.meta.get("world_size", 1)))
        out.setdefault(t.config, {}).setdefault(key, {})[t.rank] = t
    return out


def slowest(ranks: dict[int, Trace]) -> Trace:
    """The rank whose call took longest (the one a record's time is): its overlap is the call's."""
    return max(ranks.values(), key=lambda t: (t.span_s, -t.rank))


def rows(traces: list[Trace]) -> list[dict]:
    """One row per traced rank: configuration, algorithm, ranks, rank, overlap, in flight, hidden, busy, span
    (overlap, hidden and busy "n/a" for an opaque call: a plugin's)."""
    from ringx.timeline import busy

    def total(iv):
        return sum(b - a for a, b in iv)

    out = []
    for config, by_call in calls(traces).items():
        for (algo, world), ranks in sorted(by_call.items(), key=lambda kv: (order_key(kv[0][0]), kv[0][1])):
            slow = slowest(ranks).rank
            for r, t in sorted(ranks.items()):
                inside = ({k: NA for k in ("overlap_fraction", "hidden_ms", "compute_ms")} if t.opaque else
                          {"overlap_fraction": t.overlap, "hidden_ms": total(hidden(t.marks)) * 1e3,
                           "compute_ms": total(busy(t.marks)) * 1e3})
                out.append({**dict(config), "algorithm": algo, "world_size": world, "rank": r, **inside,
                            "comm_ms": NA if _posts_only(t) else total(in_flight(t.marks)) * 1e3,
                            "span_ms": t.span_s * 1e3,
                            "slowest": r == slow})
    return out


def _posts_only(t: Trace) -> bool:
    """An opaque call whose communication was seen posted but never waited for: its time in flight is unknown."""
    cats = {m.cat for m in t.marks}
    return t.opaque and "post" in cats and "comm" not in cats


def _title(config: tuple) -> str:
    c = dict(config)
    parts = [c.get("mode", ""), f"seq {c['seq']}" if "seq" in c else "",
             c.get("mask") or {"True": "causal", "False": "full"}.get(c.get("causal", ""), ""), c.get("dtype", ""),
             f"{c['heads']}/{c['kv_heads']} heads" if "heads" in c and "kv_heads" in c else "",
             c.get("device", "")]
    return ", ".join(p for p in parts if p)


def figure(by_call: dict[tuple, dict[int, Trace]], title: str = "", width_in: float = 7.16):
    """One configuration's timeline: a panel per (algorithm, rank count), a row per rank."""
    algos = sorted({a for a, _ in by_call}, key=order_key)
    worlds = sorted({w for _, w in by_call})
    ends = {w: max((m.end_s * 1e3 for (_, w2), rs in by_call.items() if w2 == w for t in rs.values()
                    for m in t.marks), default=1.0) for w in worlds}  # a column shares its time axis
    heights = [max(by_call.get((a, w), {}).__len__() for w in worlds) or 1 for a in algos]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(algos), len(worlds), figsize=(width_in, 0.75 + sum(0.36 * h + 0.42
                                                                                        for h in heights)),
                                 squeeze=False, gridspec_kw={"height_ratios": [h + 0.9 for h in heights]},
                                 sharex="col")
        for i, algo in enumerate(algos):
            for j, world in enumerate(worlds):
                ax = axes[i][j]
                ranks = by_call.get((algo, world))
                ax.set_title(f"{algo}, {plural(world, 'rank')}{_plugin_words(ranks)}", loc="left")
                ax.grid(False)
                if not ranks:
                    ax.set_axis_off()
                    ax.text(0.5, 0.5, "not traced", ha="center", va="center", transform=ax.transAxes)
                    continue
                _panel(ax, ranks)
                ax.set_xlim(0, ends[world] * 1.01)
                if i == len(algos) - 1 or not by_call.get((algos[i + 1], world)):
                    ax.set_xlabel("ms since the rank's recording began")
        handles = [Patch(color=COLORS["compute"], label="kernel"), Patch(color=COLORS["merge"], label="merge"),
                   Patch(color=COLORS["comm"], label="comm in flight (post to wait)"),
                   Patch(color=COLORS["blocked"], label="blocked in post/wait"),
                   Patch(color=COLORS["hidden"], alpha=0.3, label="comm hidden under compute")]
        if any(t.opaque for rs in by_call.values() for t in rs.values()):
            handles.append(Patch(facecolor=COLORS["call"], edgecolor="#555555", hatch="////", lw=0.5,
                                 label="plugin's whole call (inside not marked)"))
        top = 1 - (0.16 if title else 0) / fig.get_figheight()
        if title:
            fig.suptitle(title, y=0.998, x=0.01, ha="left", va="top", fontsize=7)
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 3 if len(handles) > 5 else 5),
                   frameon=False, bbox_to_anchor=(0.5, top))
        fig.tight_layout(rect=(0, 0, 1, top - 0.22 / fig.get_figheight()), h_pad=0.4)
    return fig


def _plugin_words(ranks: dict[int, Trace]) -> str:
    """A plugin panel's title words: what its marks are."""
    if not any(t.opaque for t in ranks.values()):
        return ""
    waits = any(m.cat == "wait" for t in ranks.values() for m in t.marks)
    seen = "comm posts and waits seen" if waits else "comm posts seen (waits not)"
    return f" (plugin: whole call, {seen} at the dispatcher; nothing inside marked)"


def _panel(ax, ranks: dict[int, Trace]) -> None:
    slow = slowest(ranks).rank
    ticks = []
    for r, t in sorted(ranks.items()):
        y = -r  # rank 0 on top
        ticks.append(y)
        calls = [m for m in t.marks if m.cat == "call"]
        if calls:  # a plugin's forward and backward, drawn where its kernels would be
            ax.broken_barh([(m.start_s * 1e3, (m.end_s - m.start_s) * 1e3) for m in calls], (y + 0.05, 0.3),
                           facecolors=COLORS["call"], edgecolors="#555555", hatch="////", lw=0.5)
            for m in calls:
                ax.text((m.start_s + m.end_s) / 2 * 1e3, y + 0.2, m.op, ha="center", va="center", fontsize=5,
                        clip_on=True)
        for a, b in hidden(t.marks):
            ax.fill_between([a * 1e3, b * 1e3], y - 0.42, y + 0.42, color=COLORS["hidden"], alpha=0.3, lw=0)
        for cat, lane, color in (("compute", 0.2, COLORS["compute"]), ("merge", 0.2, COLORS["merge"]),
                                 ("comm", -0.2, COLORS["comm"]), ("post", -0.2, COLORS["blocked"]),
                                 ("wait", -0.2, COLORS["blocked"])):
            bars = [(m.start_s * 1e3, (m.end_s - m.start_s) * 1e3) for m in t.marks if m.cat == cat]
            if bars:
                h = 0.3 if cat in ("compute", "merge", "comm") else 0.16
                ax.broken_barh(bars, (y + lane - h / 2, h), facecolors=color, lw=0)
        star = " (slowest)" if r == slow and len(ranks) > 1 else ""
        overlap = t.overlap
        over = NA if overlap is None else f"{overlap:.2f}"
        ax.text(1.0, y, f" overlap {over}{star}", transform=blended_transform_factory(ax.transAxes,
                ax.transData), ha="left", va="center", fontsize=6)
    ax.set_yticks(ticks, [f"rank {r}" for r in sorted(ranks)])
    ax.set_ylim(-len(ranks) + 0.5, 0.5)


def write(campaign: str | Path, out: str | Path | None = None, formats=("png", "pdf"),
          width_in: float = 7.16) -> dict[str, list[Path]]:
    """Draw every traced configuration of a campaign: name -> files (timeline-MODE[-n])."""
    traces = load(campaign)
    out = Path(out) if out else trace_dir(campaign).parent / "figures"
    made: dict[str, list[Path]] = {}
    for config, by_call in sorted(calls(traces).items()):
        mode = dict(config).get("mode", "call").replace("+", "-")
        name, n = f"timeline-{mode}", 2
        while name in made:
            name, n = f"timeline-{mode}-{n}", n + 1
        fig = figure(by_call, _title(config), width_in)
        made[name] = save(fig, out, name, formats)
        plt.close(fig)
    return made


CAPTION = ("One traced call per algorithm, after warm-up: a row per rank, kernels and merges above, communication "
           "below (light: in flight from post to wait; dark: the host blocked in a post or a wait). Shaded: "
           "communication in flight while the rank computed. Overlap: hidden / in flight, per rank (1.0: "
           "nothing communicated or all hidden). Each rank's clock starts when its recording began, after a "
           "barrier; CPU runs show wall-clock ranges, GPU runs CUDA-event times. A plugin has no marks inside: "
           "hatched, its whole forward and backward; its communication is what the dispatcher saw; its overlap is "
           "n/a.")
