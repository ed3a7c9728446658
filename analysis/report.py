"""One self-contained page per campaign: every figure, the tables, the configuration, the provenance."""

from __future__ import annotations

import base64
import html
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import field, figures, metrics, tables, views
from .kinds import KINDS, mask_names, mask_order, present
from .records import load


def summaries(df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """(kind -> its metrics.summarize, what -> why not) for every kind with successful records in ``df``."""
    made, skipped = {}, {}
    for kind in present(df):
        try:
            made[kind] = metrics.summarize(df, kind)
        except ValueError as e:
            skipped[f"{kind} figures"] = str(e)
    return made, skipped


def build_figures(df: pd.DataFrame, out: Path, formats: tuple[str, ...], baseline: str = "ring", width: str = "two",
                  summary: dict[str, pd.DataFrame] | None = None) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Write every figure the campaign supports; return (name -> files, name -> why it was skipped).

    Every kind's figures (kinds.py), then the kernels' and the collectives'. ``summary``: the kinds' summaries
    (:func:`summaries`), when the caller already has them.
    """
    import matplotlib.pyplot as plt

    made, skipped = {}, {}
    if summary is None:
        summary, skipped = summaries(df)
    for kind, s in summary.items():
        for name, draw in views.of(kind).figures.items():
            try:
                fig = draw(s, baseline=baseline, width=width, records=df)
            except figures.NoData as e:
                skipped[name] = str(e)
                continue
            made[name] = figures.save(fig, out, name, formats)
            plt.close(fig)
    if "kind" in df and (df["kind"] == "kernel").any():
        fig = figures.kernels_tflops(df, width=width)
        made["kernels"] = figures.save(fig, out, "kernels", formats)
        plt.close(fig)
    if "kind" in df and (df["kind"] == "collective").any():
        try:
            fig = figures.collectives_busbw(df, width=width)
            made["collectives"] = figures.save(fig, out, "collectives", formats)
            plt.close(fig)
        except figures.NoData as e:
            skipped["collectives"] = str(e)
    return made, skipped


def build_tables(df: pd.DataFrame, baseline: str = "ring", summary: dict[str, pd.DataFrame] | None = None
                 ) -> tuple[list[tuple[str, tables.Table, bool, str]], dict[str, str]]:
    """([(heading, table, folded, kind)] of every kind's TABLES, what -> why not drawn). A masked campaign's
    tables come one per mask (tables.by_mask), the mask in the heading."""
    made, skipped = [], {}
    if summary is None:
        summary, _ = summaries(df)
    for kind, s in summary.items():
        for what, (heading, make, folded) in views.of(kind).tables.items():
            for mask, part in tables.by_mask(s):
                try:
                    t = tables.for_mask(make(part, baseline=baseline, records=df), mask)
                except ValueError as e:  # no baseline
                    skipped[what + (f" ({mask})" if mask else "")] = str(e)
                    continue
                made.append((heading.format(baseline=baseline) + (f": mask {mask}" if mask else ""), t, folded, kind))
    return made, skipped


def _config(df: pd.DataFrame) -> dict[str, str]:
    cols = ["algorithm", "world_size", "nodes", "seq", "prompt_len", "new_tokens", "batch", "heads", "kv_heads",
            "head_dim", "dtype", "causal", "mask", "mode", "kernel", "iters", "warmup", "op", "level"]
    numeric = ("prompt_len", "new_tokens")  # (the older columns keep the text order their reports have had)
    vals = {c: sorted(df[c].dropna().unique(), key=None if c in numeric else str) for c in cols if c in df}
    if "mask" in vals:  # as the figures and tables name them (drawn documents by their distribution)
        vals["mask"] = sorted(set(mask_names(df).dropna()), key=mask_order)
    return {c: ", ".join(map(str, v)) for c, v in vals.items() if v or c != "mask"}


def _provenance(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("run_id", "run_date", "commit", "dirty", "hosts", "run_nodes", "run_ranks_per_node",
                        "run_cpus_per_node", "devices", "torch", "mpi_library", "slurm_job_id") if c in df]
    names = {"run_id": "run", "run_date": "date", "dirty": "uncommitted changes", "run_nodes": "nodes",
             "run_ranks_per_node": "ranks per node", "run_cpus_per_node": "cores per node", "mpi_library": "MPI",
             "slurm_job_id": "Slurm job"}
    return df[cols].drop_duplicates().sort_values(cols[:1]).reset_index(drop=True).rename(columns=names)


def _html_table(t: tables.Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns)
    num = [t.is_numeric(j) for j in range(len(t.columns))]
    body = "".join("<tr>" + "".join(f"<td{' class=num' if num[j] else ''}>{html.escape(tables.cell(v))}</td>"
                                    for j, v in enumerate(r)) + "</tr>" for r in t.rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def default_out(campaign: str | Path, what: str) -> Path:
    """Where a command writes for a campaign when not told: beside its records, except for the tracked
    results/ tree, which is never a default write target (runs/NAME/WHAT instead)."""
    from .records import DEFAULT_ROOT, _paths

    path = _paths(campaign)[0]
    base = path.parent if path.suffix == ".parquet" else path
    tracked = Path(__file__).resolve().parent.parent / "results"
    if base.resolve().is_relative_to(tracked):
        return DEFAULT_ROOT / base.name / what
    return base / what


def _vals(df: pd.DataFrame, col: str) -> list[str]:
    if col not in df:
        return []
    return [str(v) for v in sorted(df[col].dropna().unique(), key=str) if str(v) not in ("", "None", "nan")]


def setting(df: pd.DataFrame) -> list[tuple[str, str]]:
    """What a reader needs to judge the numbers: hardware (and whether ranks shared cores or GPUs), the kernel,
    the versions and where the code came from, as (heading, sentence) pairs."""
    from .figures import on_gpus, plural

    att = df[df["kind"] == "attention"] if "kind" in df else df
    gpu = on_gpus(att) if len(att) else False
    nodes = sorted({int(n) for n in df.get("run_nodes", pd.Series(dtype=float)).dropna()}) or \
        sorted({int(n) for n in df.get("nodes", pd.Series(dtype=float)).dropna()})
    hosts = sorted({h for v in _vals(df, "hosts") for h in v.split(",")})
    rpn = [int(v) for v in df.get("run_ranks_per_node", pd.Series(dtype=float)).dropna()]
    cpus = [int(v) for v in df.get("run_cpus_per_node", pd.Series(dtype=float)).dropna()]
    devices = sorted({d for v in _vals(df, "devices") for d in v.split(",") if d != "cpu"})
    node_text = (plural(nodes[0], "node") if len(nodes) == 1 else f"{', '.join(map(str, nodes))} nodes") if nodes \
        else "1 node"
    if gpu:
        hw = (f"GPUs: {', '.join(devices) or 'not named'}; runs on {node_text}, up to "
              f"{plural(max(rpn), 'rank')} per node, one GPU per rank (launch refuses more NCCL ranks than GPUs): "
              "ranks did not share GPUs." if rpn else f"GPUs: {', '.join(devices) or 'not named'}.")
    else:
        hw = f"CPU ranks (no GPU) on host {', '.join(hosts) or 'not recorded'}; runs on {node_text}"
        if rpn and cpus:
            shared = max(rpn) > min(cpus)
            hw += (f", up to {plural(max(rpn), 'rank')} on a node with {plural(min(cpus), 'core')}: "
                   + ("ranks shared cores at the largest rank counts, so those times include contention."
                      if shared else "every rank had a core of its own."))
        elif rpn:
            hw += (f", up to {plural(max(rpn), 'rank')} per node; cores per node were not recorded by these runs "
                   "(older provenance), so whether ranks shared cores is not known from the records.")
        else:
            hw += "."
    tags = _vals(df, "tag")
    if tags:
        hw += " Campaign tag: " + "; ".join(f"\u201c{t}\u201d" for t in tags) + "."
    kernels = _vals(att, "kernel")
    versions = _vals(att, "kernel_version")
    kernel = ", ".join(kernels) or "not recorded"
    if versions:
        kernel += f" ({', '.join(versions)})"
    if "dtype" in att:
        kernel += f"; element types {', '.join(_vals(att, 'dtype'))}"
    soft = []
    for col, name in (("python", "Python"), ("torch", "torch"), ("mpi4py", "mpi4py"), ("mpi_library", "MPI"),
                      ("cuda", "CUDA"), ("hip", "HIP"), ("nccl", "NCCL/RCCL")):
        vals = _vals(df, col)
        if vals:
            soft.append(f"{name} {', '.join(v.replace('Version:', '').strip() for v in vals)}")
    commits = _vals(df, "commit")
    dirty = "dirty" in df and df["dirty"].fillna(False).astype(bool).any()
    code = (f"commit {', '.join(c[:12] for c in commits)}" + (" (with uncommitted changes in some runs)" if dirty
                                                               else "")) if commits else "commit not recorded"
    return [("Hardware", hw), ("Kernel", kernel), ("Software", "; ".join(soft) or "not recorded"), ("Code", code)]


def timeline_figures(campaign: str | Path, out: Path, formats: tuple[str, ...]) -> dict[str, list[Path]]:
    """The timeline figures of a campaign that has traces (ringx-bench trace); none when it has not."""
    from . import timeline  # imports torch (ringx.timeline): only when a report is written
    from .records import _paths

    path = _paths(campaign)[0]
    base = path.parent if path.suffix == ".parquet" else path
    try:
        return timeline.write(base, out, formats)
    except timeline.NoTraces:
        return {}


# The figures' format each report embeds or links (drawing both took twice as long as either)
FIGURE_FORMAT = {"html": ("png",), "md": ("png",), "latex": ("pdf",)}


def write(campaign: str | Path, out: str | Path | None = None, fmt: str = "html", baseline: str = "ring") -> Path:
    """Write the report (HTML with embedded images, Markdown beside PNG files, or a LaTeX document beside PDF
    files); return its path."""
    return write_formats(campaign, out, (fmt,), baseline)[fmt]


def write_formats(campaign: str | Path, out: str | Path | None, fmts: Sequence[str],
                  baseline: str = "ring") -> dict[str, Path]:
    """Write the report in each of ``fmts`` (html, md, latex) into ``out``, drawing each figure once per file
    format (HTML and Markdown share the PNG files); return format -> path."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load(campaign)
    notes = [str(w.message) for w in caught]
    name = str(df["campaign"].iloc[0]) if "campaign" in df else Path(campaign).name
    out = Path(out) if out else default_out(campaign, "report")
    out.mkdir(parents=True, exist_ok=True)
    summary, skipped = summaries(df)
    formats = tuple(dict.fromkeys(x for fmt in fmts for x in FIGURE_FORMAT[fmt]))
    made, skipped_figs = build_figures(df, out / "figures", formats, baseline, summary=summary)
    made.update(timeline_figures(campaign, out / "figures", formats))
    made_tables, skipped_tables = build_tables(df, baseline, summary)
    skipped = {**skipped, **skipped_figs, **skipped_tables}
    bad = df[df["status"] != "ok"] if "status" in df else df.iloc[0:0]
    failures = tables.frame_table(bad[[c for c in ("status", "algorithm", "op", "level", "world_size", "seq",
                                                   "prompt_len", "error") if c in bad]])
    config, prov = _config(df), tables.frame_table(_provenance(df))
    title = f"ringx-bench report: campaign {name}"
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    summary_line = ", ".join(f"{v} {k}" for k, v in counts.items())
    intro = (f"{len(df)} records ({summary_line}). Every time is the slowest rank's per iteration; spread: "
             f"{metrics.SPREAD_METHOD}; speedups are over {baseline} (above 1: faster) with a 95% bootstrap "
             "interval, and one whose interval contains 1 is marked within noise.")
    titles, captions = dict(figures.TITLES), dict(figures.CAPTIONS)
    for n in made:
        if n.startswith("timeline-"):
            titles[n] = f"Timeline of one traced call ({n.removeprefix('timeline-').replace('fwd-bwd', 'fwd+bwd')})"
            from .timeline import CAPTION

            captions[n] = CAPTION
    for k in KINDS.values():
        titles.update(views.of(k.record).titles)
        captions.update(views.of(k.record).captions)
    fig_kind = {n: k.record for k in KINDS.values() for n in views.of(k.record).figures}
    figs = [(titles.get(n, n).format(baseline=baseline), captions.get(n, "").format(baseline=baseline), n, paths,
             KINDS[fig_kind[n]].section if n in fig_kind else None) for n, paths in made.items()]
    tabs = [(head, t, folded, KINDS[kind].section) for head, t, folded, kind in made_tables]
    f_figs, f_tabs, f_skipped = _field(summary.get("attention"), out / "figures", formats)
    figs += f_figs
    tabs += f_tabs
    skipped.update(f_skipped)
    # Results first (the kinds without a section of their own, the kernels', collectives' and timeline figures),
    # then each kind's own section (serving); figures and tables numbered through the whole page.
    order = ["Results", field.SECTION] + [k.section for k in KINDS.values() if k.section]
    sections = [(name, [(i, f[:4]) for i, f in enumerate(figs, start=1) if (f[4] or "Results") == name],
                 [(i, t[:3]) for i, t in enumerate(tabs, start=1) if (t[3] or "Results") == name]) for name in order]
    sections = [(n, f, t) for n, f, t in sections if f or t] or sections[:1]  # an empty Results, as ever, if no other
    render = {"latex": _latex, "md": _markdown, "html": _html}
    return {fmt: render[fmt](out, title, intro, notes, df, sections, config, prov, failures, skipped) for fmt in fmts}


def _field(summary: pd.DataFrame | None, out: Path, formats: tuple[str, ...]) -> tuple[list, list, dict]:
    """(figures, tables, why not drawn) of the section against the field's implementations (field.py): nothing
    when the campaign holds no outsider."""
    import matplotlib.pyplot as plt

    if summary is None or not field.outsiders(summary):
        return [], [], {}
    try:
        d = field.rows(summary)  # bootstrap intervals: computed once for the figure and the table
        fig = field.figure(summary, d=d)
        t = field.table(summary, d=d)
    except (figures.NoData, ValueError) as e:
        return [], [], {field.SECTION: str(e)}
    paths = figures.save(fig, out, field.FIGURE, formats)
    plt.close(fig)
    return ([(field.TITLE, field.CAPTION, field.FIGURE, paths, field.SECTION)],
            [("Ours over each outside implementation", t, False, field.SECTION)], {})


def _markdown(out: Path, title: str, intro: str, notes: list[str], df: pd.DataFrame, sections, config: dict,
              prov: tables.Table, failures: tables.Table, skipped: dict) -> Path:
    lines = [f"# {title}", "", intro, ""] + [f"- {n}" for n in notes]
    lines += ["## Hardware, kernel and software", ""] + [f"- **{k}**: {v}" for k, v in setting(df)] + [""]
    for section, sec_figs, sec_tabs in sections:
        lines += [f"## {section}", ""]
        for i, (head, cap, fig_name, paths) in sec_figs:
            png = next(p for p in paths if p.suffix == ".png")
            lines += [f"### {head}", "", f"![{fig_name}]({png.relative_to(out)})", "", f"*Figure {i}. {cap}*", ""]
        for i, (head, t, _folded) in sec_tabs:
            lines += [f"### Table {i}. {head}", "", tables.render(t, "markdown")]
    lines += ["## Measured configurations", ""] + [f"- {k}: {v}" for k, v in config.items()] + [""]
    lines += ["## Runs and their provenance", "", tables.render(prov, "markdown")]
    if failures.rows:
        lines += ["## Failed or skipped measurements", "", tables.render(failures, "markdown")]
    if skipped:
        lines += ["## Figures and tables not drawn", ""] + [f"- {k}: {v}" for k, v in skipped.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _html(out: Path, title: str, intro: str, notes: list[str], df: pd.DataFrame, sections, config: dict,
          prov: tables.Table, failures: tables.Table, skipped: dict) -> Path:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "img{max-width:100%;display:block;margin:auto}figure{margin:1.5em 0}"
             "figcaption{font-size:13px;color:#333;margin-top:.4em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}td.num{text-align:right}"
             ".scroll{overflow-x:auto;max-width:100%}dt{font-weight:bold}"
             "dd{margin:0 0 .6em 1.5em}.caption{font-size:13px;color:#333}</style>",
             f"</head><body><h1>{e(title)}</h1>", f"<p>{e(intro)}</p>"]
    parts += [f"<p><b>Note:</b> {e(n)}</p>" for n in notes]
    parts += ["<h2>Hardware, kernel and software</h2><dl>"] + [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>"
                                                              for k, v in setting(df)] + ["</dl>"]
    for section, sec_figs, sec_tabs in sections:
        parts.append(f"<h2>{e(section)}</h2>")
        for i, (head, cap, _name, paths) in sec_figs:
            png = next(p for p in paths if p.suffix == ".png")
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<h3>{e(head)}</h3><figure><img alt='{e(head)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption><b>Figure {i}.</b> {e(cap)}</figcaption></figure>")
        for i, (head, t, folded) in sec_tabs:
            parts += [f"<h3>Table {i}. {e(head)}</h3>", f"<p class='caption'>{e(t.caption)}</p>"]
            parts += (["<details open><summary>every configuration and algorithm</summary>", _html_table(t),
                       "</details>"] if folded else [_html_table(t)])
    parts += ["<h2>Measured configurations</h2><ul>"] + [f"<li>{e(k)}: {e(v)}</li>" for k, v in config.items()]
    parts += ["</ul>", "<h2>Runs and their provenance</h2>", _html_table(prov)]
    if failures.rows:
        parts += ["<h2>Failed or skipped measurements</h2>", _html_table(failures)]
    if skipped:
        parts += ["<h2>Figures and tables not drawn</h2><ul>"] + [f"<li>{e(k)}: {e(v)}</li>"
                                                                 for k, v in skipped.items()] + ["</ul>"]
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


LATEX_PREAMBLE = [r"\documentclass[10pt]{article}", r"\usepackage[T1]{fontenc}",
                  r"\usepackage[letterpaper,margin=0.65in]{geometry}",  # 7.2 in of text: a two-column figure's width
                  r"\usepackage{graphicx}", r"\usepackage{booktabs}", r"\usepackage{float}"]


def _fit(latex: str) -> str:
    """A rendered table placed here (not floated away from its section), its tabular shrunk to the text width
    where it is wider (graphicx: \\width is the tabular's natural width)."""
    return (latex.replace(r"\begin{table}", r"\begin{table}[H]").replace(r"\begin{table*}", r"\begin{table}[H]")
            .replace(r"\end{table*}", r"\end{table}")
            .replace(r"\begin{tabular}", r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{"
                                         r"\begin{tabular}")
            .replace(r"\end{tabular}", r"\end{tabular}}"))


def _latex(out: Path, title: str, intro: str, notes: list[str], df: pd.DataFrame, sections, config: dict,
           prov: tables.Table, failures: tables.Table, skipped: dict) -> Path:
    """report.tex: a standalone LaTeX document (pdflatex) with the same sections as the HTML page; figures are
    the PDF files beside it, tables the one writer's booktabs (each table's \\label as `analysis table` gives it;
    figures labelled fig:NAME)."""
    esc = tables.latex_escape
    lines = [*LATEX_PREAMBLE, r"\begin{document}", r"\section*{" + esc(title) + "}", esc(intro), ""]
    lines += [r"\paragraph{Note.} " + esc(n) for n in notes]
    lines += [r"\subsection*{Hardware, kernel and software}", r"\begin{description}"]
    lines += [r"\item[" + esc(k) + "] " + esc(v) for k, v in setting(df)] + [r"\end{description}"]
    for section, sec_figs, sec_tabs in sections:
        lines.append(r"\subsection*{" + esc(section) + "}")
        for _i, (head, cap, fig_name, paths) in sec_figs:
            pdf = next(p for p in paths if p.suffix == ".pdf")
            lines += [r"\begin{figure}[H]", r"\centering",
                      r"\includegraphics[width=\linewidth]{" + pdf.relative_to(out).as_posix() + "}",
                      r"\caption{\textbf{" + esc(head) + ".} " + esc(cap) + "}", r"\label{fig:" + fig_name + "}",
                      r"\end{figure}"]
        for _i, (_head, t, _folded) in sec_tabs:
            lines.append(_fit(tables.render(t, "latex")))
    lines += [r"\subsection*{Measured configurations}", r"\begin{itemize}"]
    lines += [r"\item " + esc(f"{k}: {v}") for k, v in config.items()] + [r"\end{itemize}"]
    lines += [r"\subsection*{Runs and their provenance}", _fit(tables.render(prov, "latex"))]
    if failures.rows:
        lines += [r"\subsection*{Failed or skipped measurements}", _fit(tables.render(failures, "latex"))]
    if skipped:
        lines += [r"\subsection*{Figures and tables not drawn}", r"\begin{itemize}"]
        lines += [r"\item " + esc(f"{k}: {v}") for k, v in skipped.items()] + [r"\end{itemize}"]
    lines.append(r"\end{document}")
    path = out / "report.tex"
    path.write_text("\n".join(lines) + "\n")
    return path
