"""``python -m analysis COMMAND CAMPAIGN``: figures, tables and reports from a campaign.

  figures CAMPAIGN [--out DIR] [--format pdf,png,svg] [--width one|two] [--baseline ring]
  table   CAMPAIGN [--format markdown|latex|csv] [--baseline ring]
  report  CAMPAIGN [--out DIR] [--format html|md] [--baseline ring]
  predict SWEEP_FILE [--machine NAME]      predicted time per point and the fastest algorithm (cost model)
  validate CAMPAIGN [--cores-per-node N]   fit the model on a campaign, compare predictions with measurements
  export  CAMPAIGN [--out FILE]           every record as one Parquet file (default CAMPAIGN/records.parquet)
  curve   [CAMPAIGN] --machine NAME [--seq N] [--max-ranks N]
                                           predicted speedup over ring up to many GPUs, with
                                           CAMPAIGN's measured points at that sequence length

CAMPAIGN is a campaign directory (e.g. results/cpu-sample), a records.jsonl file or an exported
.parquet file (records.jsonl stays the store of record; Parquet loads faster for large campaigns).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["figures", "table", "report", "export", "predict", "validate", "curve"])
    p.add_argument("campaign", nargs="?",
                   help="campaign directory (predict: a sweep file; curve: optional measured points)")
    p.add_argument("--out", help="output directory (figures: CAMPAIGN/figures, report: CAMPAIGN/report); "
                                 "export: a file")
    p.add_argument("--format", help="figures: pdf,png,svg (default pdf,png); table: markdown|latex|csv; "
                                    "report: html|md")
    p.add_argument("--baseline", default="ring", help="algorithm speedups are relative to (default ring)")
    p.add_argument("--width", choices=["one", "two"], default="two", help="figure width: one or two columns")
    p.add_argument("--machine", help="predict/curve: a profile with a [model] table (default: the sweep's)")
    p.add_argument("--cores-per-node", type=int, help="validate: CPU cores shared by a node's ranks")
    p.add_argument("--seq", type=int, default=1 << 20, help="curve: global sequence length (default 1M)")
    p.add_argument("--max-ranks", type=int, default=4096, help="curve: largest rank count (default 4096)")
    a = p.parse_args(argv)
    if a.command != "curve" and not a.campaign:
        p.error(f"{a.command} needs a campaign (predict: a sweep file)")
    if a.command in ("predict", "validate", "curve"):
        from analysis import cli_model

        return cli_model.run(a)

    from analysis import metrics, report, tables
    from analysis.records import EmptyCampaign, load

    warnings.simplefilter("always")
    warnings.showwarning = lambda msg, *args, **kw: print(f"warning: {msg}", file=sys.stderr)
    try:
        if a.command == "export":
            from analysis.records import export_parquet

            path, n = export_parquet(a.campaign, a.out or Path(a.campaign) / "records.parquet")
            print(f"{n} records -> {path}")
            return 0
        if a.command == "report":
            path = report.write(a.campaign, a.out, a.format or "html", a.baseline)
            print(f"report: {path}")
            return 0
        df = load(a.campaign)
        if a.command == "table":
            fmt = a.format or "markdown"
            if fmt not in ("markdown", "latex", "csv"):
                p.error(f"--format {fmt!r}: choose markdown, latex or csv")
            print(tables.render(tables.speedup_table(metrics.summarize(df), a.baseline), fmt), end="")
            return 0
        formats = tuple((a.format or "pdf,png").split(","))
        for f in formats:
            if f not in ("pdf", "png", "svg"):
                p.error(f"--format {f!r}: choose from pdf, png, svg")
        out = Path(a.out) if a.out else Path(a.campaign) / "figures"
        made, skipped = report.build_figures(df, out, formats, a.baseline, a.width)
        for name, paths in made.items():
            print(f"{name}: {', '.join(map(str, paths))}")
        for name, why in skipped.items():
            print(f"skipped {name}: {why}")
        return 0 if made else 1
    except (EmptyCampaign, metrics.MissingBaseline, ValueError) as e:
        print(f"python -m analysis {a.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
