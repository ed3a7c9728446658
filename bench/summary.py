"""``ringx-bench summary CAMPAIGN``: a campaign's records as markdown tables.

A quick look for the terminal and for notes: for each configuration every
algorithm's median time and its speedup over ring (above 1: faster), with a
95% bootstrap interval; a speedup whose interval contains 1 is marked "~"
(within noise). Repeats and runs of one cell are pooled, as analysis pools
them. Collectives: busbw per op, size and level. Failed and skipped records are
listed with their reasons. (Publication figures and tables: ringx-bench figures, table and report.)
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ringx_suite import plausible
from ringx_suite.cli import Parser, UserError
from ringx_suite.records import COMPARE_BY, INFER_COMPARE_BY, LEVEL_ORDER, MODEL_COMPARE_BY, compare_value
from ringx_suite.stats import METHOD, flat, records_speedup
from ringx_suite.store import Store, StoreError
from ringx_suite.tables import Table, render


def _speedup_rows(ok: list[dict], compare_by, baseline: str, head) -> tuple[list[str], list[list]]:
    """(algorithms, rows): per configuration (``compare_by``), ``head(config)`` then, per algorithm, its median ms
    and speedup over the baseline with the interval (repeats and runs pooled, as analysis pools them)."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        groups[tuple(compare_value(r, k) for k in compare_by)][r["algorithm"]].append(r)
    algos = list(dict.fromkeys(r["algorithm"] for r in ok))
    rows = []
    for g in sorted(groups):
        by = groups[g]
        cells = []
        for a in algos:
            rs = by.get(a)
            if not rs:
                cells.append("n/a")
                continue
            ms = statistics.median(x for r in rs for x in r["samples_s"]) * 1e3
            sp = "" if a == baseline or baseline not in by else " " + records_speedup(by[baseline], rs).text()
            wrong = any(r.get("implausible") for r in rs + (by.get(baseline) or []))
            cells.append(f"{ms:.1f}{sp}{plausible.MARK if wrong else ''}")
        rows.append([*head(dict(zip(compare_by, g))), *cells])
    return algos, rows


@dataclass(frozen=True)
class Section:
    """One kind of timed record's table: which records, the configuration they compare at, how a configuration
    is shown (column name, its value of a configuration) and the sentence above the table."""

    record: str  # the records' `kind`
    compare_by: tuple[str, ...]
    head: tuple[tuple[str, Callable[[dict], object]], ...]
    intro: str  # formatted with baseline and method


SECTIONS = {
    "attention": Section("attention", COMPARE_BY, (
        ("ranks", lambda c: c["world_size"]), ("seq", lambda c: c["seq"]),
        ("mask", lambda c: c["mask"]), ("mode", lambda c: c["mode"]),
        ("dtype", lambda c: c["dtype"])),
        "Median ms of the slowest rank per iteration; after it, speedup over {baseline} (above 1: faster) "
        "and its {method}. `~`: the interval contains 1, within noise. n/a: not measured."),
    "model": Section("model", MODEL_COMPARE_BY, (
        ("model", lambda c: c["model"]), ("ranks", lambda c: c["world_size"]), ("seq", lambda c: c["seq"]),
        ("mask", lambda c: c["mask"]), ("dtype", lambda c: c["dtype"] + (" ckpt" if c["checkpoint"] else ""))),
        "Training steps: median ms per step (forward, backward, gradient all-reduce, AdamW) of the slowest rank; "
        "after it, speedup over {baseline} and its {method}. `~`: within noise."),
}


def kind_table(recs: list[dict], kind: str, baseline: str = "ring") -> str:
    """The SECTIONS[kind] table of the ok records: per configuration, every algorithm's median ms and speedup."""
    sec = SECTIONS[kind]
    ok = [r for r in recs if r["kind"] == sec.record and r["status"] == "ok"]
    if not ok:
        return ""
    algos, rows = _speedup_rows(ok, sec.compare_by, baseline, lambda c: [value(c) for _, value in sec.head])
    t = Table([name for name, _ in sec.head] + algos, rows)
    return sec.intro.format(baseline=baseline, method=METHOD) + "\n\n" + render(t, "markdown")


def attention_table(recs: list[dict], baseline: str = "ring") -> str:
    return kind_table(recs, "attention", baseline)


# An infer record's phases: (the table's name, the samples field); a cell is the median ms, then the speedup
# with its interval over each baseline of the configuration.
INFER_PHASES = (("TTFT", "prefill_samples_s"), ("TPOT", "decode_samples_s"))


def infer_tables(recs: list[dict], baselines: tuple[str, ...] = ("ring", "tp")) -> str:
    """bench infer's tables: TTFT and TPOT of every candidate per configuration, with the speedup over ring and
    over tp (above 1: faster), each with its interval."""
    ok = [r for r in recs if r["kind"] == "infer" and r["status"] == "ok"]
    if not ok:
        return ""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        groups[tuple(r[k] for k in INFER_COMPARE_BY)][r["algorithm"]].append(r)
    algos = list(dict.fromkeys(r["algorithm"] for r in ok))
    # a TP x PP candidate (tp8pp2: RA+SP's baseline) is a baseline too, where it ran
    baselines = (*baselines, *(a for a in algos if a not in baselines and re.fullmatch(r"tp\d+pp\d+", a)))
    out = []
    for name, field in INFER_PHASES:
        rows = []
        for g in sorted(groups, key=str):
            by, c = groups[g], dict(zip(INFER_COMPARE_BY, g))
            cells = []
            for a in algos:
                rs = by.get(a)
                got = [x for r in rs for x in flat(r[field])] if rs else []
                if not got:
                    cells.append("n/a")
                    continue
                text = f"{statistics.median(got) * 1e3:.2f}"
                for b in baselines:
                    if b != a and b in by and all(flat(r[field]) for r in by[b]):
                        text += f" {records_speedup(by[b], rs, field).text()} vs {b}"
                cells.append(text)
            rows.append([c["model"], c["world_size"], c["prompt_len"], c["new_tokens"], c["dtype"], *cells])
        if any(cell != "n/a" for row in rows for cell in row[5:]):
            t = Table(["model", "ranks", "prompt", "new", "dtype", *algos], rows)
            what = "time to first token: the prefill" if name == "TTFT" else "time per output token: a decode step"
            out.append(f"Serving, {name} ({what}): median ms of the slowest rank; after it, speedup over "
                       f"{' and over '.join(baselines)} (above 1: faster) and its {METHOD}. `~`: within noise.\n\n"
                       + render(t, "markdown"))
    return "\n\n".join(out)


def collectives_table(recs: list[dict]) -> str:
    """Median us and busbw per (ranks, level, size) and op; records older than `level` ran over every rank."""
    ok = [r for r in recs if r["kind"] == "collective" and r["status"] == "ok"]
    if not ok:
        return ""
    ops = list(dict.fromkeys(r["op"] for r in ok))
    cells = {(r["world_size"], r.get("level", "world"), r.get("group_size", r["world_size"]), r["bytes"], r["op"]): r
             for r in ok}
    levels = any(k[1] != "world" for k in cells)  # world alone: the table as it was before levels existed
    rows = []
    for world, level, group, nbytes in sorted({k[:4] for k in cells},
                                              key=lambda k: (k[0], LEVEL_ORDER.get(k[1], 3), k[1], k[2], k[3])):
        row = [cells.get((world, level, group, nbytes, o)) for o in ops]
        rows.append([world, *([level, group] if levels else []), nbytes,
                     *(f"{r['median_s'] * 1e6:.0f} / {r['busbw_GBps']:.3f}" if r else "n/a" for r in row)])
    t = Table(["ranks", *(["level", "group"] if levels else []), "bytes", *(f"{o} us / busbw GB/s" for o in ops)],
              rows)
    about = ("; factor of the group's size. Level: world (all ranks in one group), intra (each node's ranks, all nodes "
             "at once), inter (the ranks of each local rank across the nodes, all at once); group: ranks per group"
             if levels else "")
    return f"Median us per call and bus bandwidth (nccl-tests convention{about}).\n\n" + render(t, "markdown")


def main(argv: list[str] | None = None) -> int:
    from ringx_suite.cli import main as cli_main

    p = Parser(prog="ringx-bench summary", description=__doc__)
    p.add_argument("campaign", help="campaign directory (e.g. runs/local-demo), or a name under --out")
    p.add_argument("--out", default="runs", help="output root a bare campaign name is looked up in (default: runs)")
    p.add_argument("--baseline", default="ring", help="speedups are over this algorithm (default: ring)")
    a = p.parse_args(argv)

    def go() -> int:
        path = Path(a.campaign)
        if not path.is_dir() and len(path.parts) > 1:
            raise UserError(f"no campaign at {path}: expected a campaign directory (e.g. runs/local-demo)")
        try:
            store = Store.at(path) if path.is_dir() else Store(a.out, a.campaign)
        except StoreError as e:
            raise UserError(str(e)) from None
        reading = store.read()
        if not reading.records:
            raise UserError(f"no records in {store.dir}" + (f" ({reading.summary()})" if reading.skipped else ""))
        parts = [f"# campaign {store.campaign}: {len(reading.records)} records"]
        if reading.skipped:
            parts.append(f"warning: {reading.summary()} (corrupt, torn or foreign; not used)")
        for t in (*(kind_table(reading.records, kind, a.baseline) for kind in SECTIONS),
                  infer_tables(reading.records), collectives_table(reading.records)):
            if t:
                parts.append(t.rstrip())
        odd = [r for r in reading.records if r.get("implausible")]
        if odd:
            parts.append(f"Implausible (cells marked {plausible.MARK}; the measurement cannot be right):\n\n" +
                         "\n".join(f"- {r['algorithm']} ({r['world_size']} ranks, seq {r.get('seq')}): "
                                    f"{'; '.join(r['implausible'])}" for r in odd))
        bad = [r for r in reading.records if r["status"] != "ok"]
        if bad:
            parts.append("Not timed:\n\n" + "\n".join(
                f"- {r['status']}: {r.get('algorithm') or r.get('op')} ({r['world_size']} ranks"
                f"{', ' + r['level'] if r.get('level', 'world') != 'world' else ''}): {r['error']}"
                for r in bad))
        print("\n\n".join(parts))
        return 0

    return cli_main("ringx-bench summary", go)


if __name__ == "__main__":
    sys.exit(main())
