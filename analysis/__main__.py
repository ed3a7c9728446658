"""``ringx-bench COMMAND``: figures, tables, reports and the cost model, from campaigns.

CAMPAIGN is a campaign directory (e.g. runs/local-demo or results/cpu-sample), a bare name (looked up
under runs/ only), its records.jsonl, or an exported .parquet file. Output goes beside the campaign's
records, except for the tracked results/ tree: for those, to runs/NAME/ unless --out says otherwise.
Speedups are over --baseline (above 1: faster), each with a bootstrap interval; '~' marks an interval
that contains 1 (within noise). `COMMAND --help` explains each command's options.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

from ringx_suite.cli import Parser, UserError
from ringx_suite.cli import main as cli_main
from ringx_suite.masks import HELP as MASK_HELP

PLUGIN_HELP = ("plugins predicted beside ours, comma-separated: an installed plugin's name, or [NAME=]MODULE:ATTR or "
               "[NAME=]FILE:ATTR (FILE a Python file); each runs as one rank under PyTorch's fake process group on "
               "meta tensors and its own calls are costed")


def build_parser(prog: str = "ringx-bench") -> Parser:
    p = Parser(prog=prog, description=__doc__)
    sub = p.commands()

    def campaign_cmd(name: str, help_: str) -> Parser:
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("campaign", help="campaign directory, bare name under runs/, records.jsonl or .parquet")
        return c

    c = campaign_cmd("figures", "every figure the campaign supports, as PDF/PNG/SVG")
    c.add_argument("--out", help="output directory (default: the campaign's figures/)")
    c.add_argument("--format", default="pdf,png", help="comma-separated: pdf, png, svg (default: pdf,png)")
    c.add_argument("--width", choices=["one", "two"], default="two", help="figure width: one or two columns")
    c.add_argument("--baseline", default="ring", help="speedups are over this algorithm (default: ring)")
    c = campaign_cmd("table", "the speedup table (and each other record kind's first table; one per mask of a masked "
                     "campaign)")
    c.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])
    c.add_argument("--baseline", default="ring", help="speedups are over this algorithm (default: ring)")
    c = campaign_cmd("report", "one self-contained page: figures, tables, configuration, provenance")
    c.add_argument("--out", help="output directory (default: the campaign's report/)")
    c.add_argument("--format", default="html",
                   help="comma-separated: html (one self-contained page), md (beside PNG files), latex (a standalone "
                        "report.tex beside PDF files); several share one drawing of each figure (default: html)")
    c.add_argument("--baseline", default="ring", help="speedups are over this algorithm (default: ring)")
    c = campaign_cmd("timeline", "the timeline figure of a campaign's traced calls (ringx-bench trace), and "
                     "each rank's overlap_fraction")
    c.add_argument("--out", help="output directory (default: the campaign's figures/)")
    c.add_argument("--format", default="png,pdf", help="comma-separated: pdf, png, svg (default: png,pdf)")
    c = campaign_cmd("export", "every record, typed, as one Parquet file")
    c.add_argument("--out", help="the file (default: records.parquet beside the records)")
    c = campaign_cmd("validate", "fit the cost model on the campaign's microbenchmarks; predicted vs measured")
    c.add_argument("--out", help="output directory (default: the campaign's model/)")
    c.add_argument("--cores-per-node", type=int, help="CPU cores shared by a node's ranks")
    c.add_argument("--cores-per-rank", type=int,
                   help="CPU ranks bound to cores of their own: how many each had (jobs/checks/cpu-scale.sh: 1); "
                        "with fewer than 2, transfers and blocks take turns on the core")
    c = sub.add_parser("predict", help="predicted time of every algorithm at one configuration, and the fastest",
                       description="predicted time of every algorithm at one configuration on a machine "
                                   "description (a profile's [model] table); a sweep file's points: "
                                   "`ringx-bench sweep predict FILE`")
    c.add_argument("--machine", required=True, help="a profile with a [model] table, e.g. frontier")
    c.add_argument("--ranks", default="8,64,512", help="comma-separated rank counts (default: 8,64,512)")
    c.add_argument("--seq", type=int, default=1 << 20, help="global sequence length (default 1M)")
    c.add_argument("--batch", type=int, default=1, help="sequences per call (default 1); every message and block "
                   "grows with it, the latencies do not")
    c.add_argument("--heads", type=int, default=32)
    c.add_argument("--kv-heads", type=int, default=8)
    c.add_argument("--head-dim", type=int, default=128)
    c.add_argument("--causal", choices=["true", "false"], default="true")
    c.add_argument("--mask", help="a mask in place of --causal: " + MASK_HELP)
    c.add_argument("--seed", type=int, default=0, help="seed of a drawn document distribution (default 0)")
    c.add_argument("--mode", choices=["fwd", "fwd+bwd"], default="fwd+bwd")
    c.add_argument("--plugin", help=PLUGIN_HELP)
    c = sub.add_parser("map", help="the predicted fastest algorithm and Ulysses x ring degrees over sequence and "
                       "ranks", description="the predicted fastest algorithm (and usp's Ulysses x ring degrees) at "
                       "every (sequence length, ranks), one panel per machine")
    c.add_argument("--machines", default="frontier,perlmutter,alps", help="profiles with a [model] table")
    c.add_argument("--seqs", default="131072,262144,524288,1048576", help="global sequence lengths")
    c.add_argument("--ranks", default="8,64,512", help="rank counts")
    c.add_argument("--mask", help="a mask in place of causal: " + MASK_HELP)
    c.add_argument("--seed", type=int, default=0, help="seed of a drawn document distribution (default 0)")
    c.add_argument("--algorithms", help="comma-separated algorithms (default: every one)")
    c.add_argument("--plugin", help=PLUGIN_HELP)
    c.add_argument("--out", help="output directory (default: runs/model)")
    c = sub.add_parser("curve", help="predicted speedup over ring up to many GPUs",
                       description="predicted speedup over ring up to many GPUs, with a campaign's measured points")
    c.add_argument("campaign", nargs="?", help="optional campaign whose measured speedups are drawn too")
    c.add_argument("--machine", required=True, help="a profile with a [model] table, e.g. frontier")
    c.add_argument("--seq", type=int, default=1 << 20, help="global sequence length (default 1M)")
    c.add_argument("--max-ranks", type=int, default=4096, help="largest rank count (default 4096)")
    c.add_argument("--out", help="output directory (default: runs/model)")
    c = sub.add_parser("mask", help="a picture of a mask's block structure and per-rank work for a layout",
                       description="a picture of a mask for a layout: the downsampled S x S visibility with each "
                       "position's rank, the (query rank, key rank) blocks by kind (skipped, full, causal, partial "
                       "band) and each rank's visible pairs with the imbalance max/mean")
    c.add_argument("--mask", required=True, help=MASK_HELP)
    c.add_argument("--seq", type=int, required=True, help="global sequence length")
    c.add_argument("--ranks", type=int, required=True, help="ranks (the layout's world size)")
    c.add_argument("--layout", help="contiguous, zigzag or stripe (default: --algorithm's layout for the mask)")
    c.add_argument("--algorithm", help="a ringx algorithm: its layout for the mask, named in the title")
    c.add_argument("--seed", type=int, default=0, help="seed of a drawn document distribution (default 0)")
    c.add_argument("--out", help="output directory (default: runs/masks)")
    c.add_argument("--format", default="pdf,png", help="comma-separated: pdf, png, svg (default: pdf,png)")
    from ringx_analysis import serving_model

    serving_model.add_parser(sub)
    return p


def commands() -> dict[str, str]:
    """Command -> its one-line help (the ringx-bench command lists them beside bench's)."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {c.dest: c.help for c in sub._choices_actions}


def main(argv: list[str] | None = None, prog: str = "ringx-bench") -> int:
    a = build_parser(prog).parse_args(argv)
    return cli_main(f"{prog} {a.command}", lambda: run(a))


def run(a) -> int:
    if a.command == "serving":
        from ringx_analysis import serving_model

        return serving_model.run(a)
    if a.command == "mask":
        return mask_picture(a)
    warnings.showwarning = lambda msg, *args, **kw: print(f"warning: {msg}", file=sys.stderr)  # one line each
    if a.command in ("predict", "validate", "curve", "map"):
        from ringx_analysis import costmodel_cli

        return costmodel_cli.run(a)

    if a.command == "timeline":
        return _timeline(a)

    from ringx_analysis import kinds, metrics, report, tables, views
    from ringx_analysis.records import EmptyCampaign, load

    warnings.simplefilter("always")
    try:
        if a.command == "export":
            from ringx_analysis.records import export_parquet

            path, n = export_parquet(a.campaign, a.out or report.default_out(a.campaign, "records.parquet"))
            print(f"{n} records -> {path}")
            return 0
        if a.command == "report":
            for path in report.write_formats(a.campaign, a.out, _formats(a.format, report.FIGURE_FORMAT),
                                             a.baseline).values():
                print(f"report: {path}")
            return 0
        df = load(a.campaign)
        if a.command == "table":  # each kind's first table (kinds.py), one per mask of a masked campaign
            for kind in kinds.present(df) or ["attention"]:  # attention's error where there is none
                _, make, _ = next(iter(views.of(kind).tables.values()))
                for mask, part in tables.by_mask(metrics.summarize(df, kind)):
                    t = tables.for_mask(make(part, baseline=a.baseline, records=df), mask)
                    print(tables.render(t, a.format), end="")
            return 0
        formats = _formats(a.format)
        out = Path(a.out) if a.out else report.default_out(a.campaign, "figures")
        made, skipped = report.build_figures(df, out, formats, a.baseline, a.width)
        for name, paths in made.items():
            print(f"{name}: {', '.join(map(str, paths))}")
        for name, why in skipped.items():
            print(f"skipped {name}: {why}")
        return 0 if made else 1
    except (EmptyCampaign, metrics.MissingBaseline, ValueError) as e:
        raise UserError(str(e)) from None


def _timeline(a) -> int:
    from ringx_analysis import tables, timeline

    formats = _formats(a.format)
    try:
        from ringx_analysis.report import default_out

        out = a.out or default_out(timeline.trace_dir(a.campaign).parent, "figures")
        made = timeline.write(a.campaign, out, formats)
        rows = timeline.rows(timeline.load(a.campaign))
    except timeline.NoTraces as e:
        raise UserError(str(e)) from None
    cols = ["mode", "algorithm", "world_size", "rank", "overlap_fraction", "comm_ms", "hidden_ms", "compute_ms",
            "span_ms", "slowest"]
    t = tables.Table(cols, [[r.get(c, "") for c in cols] for r in rows], "")
    print(tables.render(t, "markdown"), end="")
    csv = Path(next(iter(made.values()))[0]).parent / "timeline-overlap.csv"
    csv.write_text(tables.render(t, "csv"))
    print(f"overlap per rank: {csv}")
    for name, paths in made.items():
        print(f"{name}: {', '.join(map(str, paths))}")
    return 0


def _formats(text: str, known: Iterable[str] = ("pdf", "png", "svg")) -> tuple[str, ...]:
    """A comma-separated --format, each entry one of ``known``, repeats dropped."""
    formats = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    for f in formats:
        if f not in known:
            raise UserError(f"--format {f!r}: choose from {', '.join(known)}")
    if not formats:
        raise UserError(f"--format: name one or more of {', '.join(known)}")
    return formats


def mask_picture(a) -> int:
    """`analysis mask`: draw analysis/maskview.py's picture and print the per-rank pairs."""
    import matplotlib.pyplot as plt

    import ringx
    from ringx.layouts import LAYOUTS
    from ringx_analysis import figures, maskview
    from ringx_suite import masks

    if a.seq < 1 or a.ranks < 1:
        raise UserError(f"--seq and --ranks must be positive, got {a.seq} and {a.ranks}")
    m = masks.parse(a.mask, a.seq, a.seed)
    layout = a.layout
    if a.algorithm:
        if a.algorithm not in ringx.ALGORITHMS:
            raise UserError(f"--algorithm {a.algorithm!r}: choose from {', '.join(ringx.algorithms.names())}")
        own = ringx.ALGORITHMS[a.algorithm].layout(mask=m, ulysses_degree=1)
        layout = layout or ("zigzag" if (own or "").startswith("zigzag-u") else own) or "contiguous"
    layout = layout or "contiguous"
    if layout not in LAYOUTS:
        raise UserError(f"--layout {layout!r}: choose from {', '.join(LAYOUTS)}")
    if a.seq % (a.ranks * (2 if layout == "zigzag" else 1)):
        raise UserError(f"--seq {a.seq} does not split over {a.ranks} ranks in the {layout} layout "
                        f"(a multiple of {a.ranks * (2 if layout == 'zigzag' else 1)} is needed)")
    formats = _formats(a.format)
    fig, bal = maskview.mask_view(m, a.seq, a.ranks, layout, a.algorithm)
    name = f"mask-{maskview.slug(a.mask)}-{a.seq}-{a.ranks}-{layout}"
    paths = figures.save(fig, Path(a.out) if a.out else Path("runs") / "masks", name, formats)
    plt.close(fig)
    print(f"{m.short()}: {a.seq} tokens over {a.ranks} ranks, layout {layout}: visible pairs per rank "
          f"{list(bal.pairs)}, imbalance {bal.imbalance:.3f} (max/mean)")
    print(f"figure: {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
