"""``python -m bench summary CAMPAIGN``: a campaign's records as markdown tables.

A quick look for the terminal and for notes: attention medians per
configuration with each algorithm's ratio to ring measured in the same
campaign, and collectives busbw per op and size. Failed and skipped records
are listed with their reasons. (Publication figures and tables: analysis/.)
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from bench.store import Store


def attention_table(recs: list[dict]) -> str:
    ok = [r for r in recs if r["kind"] == "attention" and r["status"] == "ok"]
    if not ok:
        return ""
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in ok:  # the latest record of each (configuration, algorithm) wins; repeats: lowest median
        g = (r["world_size"], r["nodes"], r["seq"], r["causal"], r["mode"], r["dtype"], r["batch"], r["heads"],
             r["kv_heads"], r["head_dim"])
        prev = groups[g].get(r["algorithm"])
        if prev is None or r["median_s"] < prev["median_s"]:
            groups[g][r["algorithm"]] = r
    algos = list(dict.fromkeys(r["algorithm"] for r in ok))
    lines = ["| ranks | seq | mask | mode | dtype | " + " | ".join(algos) + " |",
             "|---|---|---|---|---|" + "---|" * len(algos)]
    for g in sorted(groups):
        row = groups[g]
        base = row.get("ring")
        cells = []
        for a in algos:
            r = row.get(a)
            if r is None:
                cells.append("")
                continue
            ratio = f" ({r['median_s'] / base['median_s']:.2f})" if base else ""
            cells.append(f"{r['median_s'] * 1e3:.1f}{ratio}")
        lines.append(f"| {g[0]} | {g[2]} | {'causal' if g[3] else 'full'} | {g[4]} | {g[5]} | " + " | ".join(cells)
                     + " |")
    return ("Median ms of the slowest rank per iteration; in brackets time / ring's time (< 1: faster than ring)."
            "\n\n" + "\n".join(lines))


def collectives_table(recs: list[dict]) -> str:
    ok = [r for r in recs if r["kind"] == "collective" and r["status"] == "ok"]
    if not ok:
        return ""
    ops = list(dict.fromkeys(r["op"] for r in ok))
    cells = {(r["world_size"], r["bytes"], r["op"]): r for r in ok}
    lines = ["| ranks | bytes | " + " | ".join(f"{o} us / busbw GB/s" for o in ops) + " |",
             "|---|---|" + "---|" * len(ops)]
    for world, nbytes in sorted({(w, b) for w, b, _ in cells}):
        row = [cells.get((world, nbytes, o)) for o in ops]
        lines.append(f"| {world} | {nbytes} | " + " | ".join(
            f"{r['median_s'] * 1e6:.0f} / {r['busbw_GBps']:.3f}" if r else "" for r in row) + " |")
    return "Median us per call and bus bandwidth (nccl-tests convention).\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaign", help="campaign directory (e.g. results/default) or name under --out")
    p.add_argument("--out", default="results", help="results root (default: results)")
    a = p.parse_args(argv)
    path = Path(a.campaign)
    store = Store(path.parent, path.name) if path.is_dir() else Store(a.out, a.campaign)
    recs = store.records()
    if not recs:
        print(f"no records in {store.records_path}", file=sys.stderr)
        return 1
    parts = [f"# campaign {store.campaign}: {len(recs)} records"]
    for t in (attention_table(recs), collectives_table(recs)):
        if t:
            parts.append(t)
    bad = [r for r in recs if r["status"] != "ok"]
    if bad:
        parts.append("Not timed:\n\n" + "\n".join(
            f"- {r['status']}: {r.get('algorithm') or r.get('op')} ({r['world_size']} ranks): {r['error']}"
            for r in bad))
    print("\n\n".join(parts))
    return 0
