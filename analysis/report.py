"""One self-contained page per campaign: every figure, the tables, the configuration, the provenance."""

from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path

import pandas as pd

from . import figures, metrics, tables
from .records import load


def build_figures(df: pd.DataFrame, out: Path, formats: tuple[str, ...], baseline: str = "ring", width: str = "two",
                  summary: pd.DataFrame | None = None) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Write every figure the campaign supports; return (name -> files, name -> why it was skipped).

    ``summary``: the attention records' ``metrics.summarize``, when the caller already has it.
    """
    import matplotlib.pyplot as plt

    made, skipped = {}, {}
    if summary is None:
        att = df[df["kind"] == "attention"] if "kind" in df else df
        try:
            summary = metrics.summarize(att) if (att.get("status") == "ok").any() else None
        except ValueError as e:
            summary, skipped["attention figures"] = None, str(e)
    if summary is not None:
        for name, fn in figures.FIGURES.items():
            try:
                kw = {"baseline": baseline} if name in ("speedup", "fastest") else {}
                fig = fn(summary, width=width, **kw)
            except (figures.NoData, metrics.MissingBaseline) as e:
                skipped[name] = str(e)
                continue
            made[name] = figures.save(fig, out, name, formats)
            plt.close(fig)
    if "kind" in df and (df["kind"] == "kernel").any():
        fig = figures.kernels_tflops(df, width=width)
        made["kernels"] = figures.save(fig, out, "kernels", formats)
        plt.close(fig)
    if "kind" in df and (df["kind"] == "model").any():  # training steps (bench model): analysis/e2e.py
        from . import e2e

        m, s = e2e.build_figures(df, out, formats, baseline, width)
        made.update(m)
        skipped.update(s)
    if "kind" in df and (df["kind"] == "collective").any():
        try:
            fig = figures.collectives_busbw(df, width=width)
            made["collectives"] = figures.save(fig, out, "collectives", formats)
            plt.close(fig)
        except figures.NoData as e:
            skipped["collectives"] = str(e)
    return made, skipped


def _config(df: pd.DataFrame) -> dict[str, str]:
    cols = ["algorithm", "world_size", "nodes", "seq", "batch", "heads", "kv_heads", "head_dim", "dtype", "causal",
            "mode", "kernel", "iters", "warmup", "op"]
    return {c: ", ".join(str(v) for v in sorted(df[c].dropna().unique(), key=str)) for c in cols if c in df}


def _provenance(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("run_id", "run_date", "commit", "dirty", "hosts", "run_nodes", "devices", "torch",
                        "mpi_library", "slurm_job_id") if c in df]
    return df[cols].drop_duplicates().sort_values(cols[:1]).reset_index(drop=True)


def _html_table(t: tables.Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(tables.cell(v))}</td>" for v in r) + "</tr>" for r in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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


def write(campaign: str | Path, out: str | Path | None = None, fmt: str = "html", baseline: str = "ring") -> Path:
    """Write the report (HTML with embedded images, or Markdown beside PNG files); return its path."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load(campaign)
    notes = [str(w.message) for w in caught]
    name = str(df["campaign"].iloc[0]) if "campaign" in df else Path(campaign).name
    out = Path(out) if out else default_out(campaign, "report")
    out.mkdir(parents=True, exist_ok=True)
    table = summary = None
    try:
        summary = metrics.summarize(df[df["kind"] == "attention"])
        table = tables.speedup_table(summary, baseline)
    except ValueError as e:  # no attention records, or no baseline
        why = str(e)
    made, skipped = build_figures(df, out / "figures", ("png", "pdf"), baseline, summary=summary)
    if table is None:
        skipped["speedup table"] = why
    model_table = None
    if "kind" in df and ((df["kind"] == "model") & (df["status"] == "ok")).any():
        from . import e2e

        model_table = e2e.table(df, baseline)
    bad = df[df["status"] != "ok"] if "status" in df else df.iloc[0:0]
    failures = tables.frame_table(bad[[c for c in ("status", "algorithm", "op", "world_size", "seq", "error")
                                      if c in bad]])
    config, prov = _config(df), tables.frame_table(_provenance(df))
    title = f"ringx-bench report: campaign {name}"
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    summary_line = ", ".join(f"{v} {k}" for k, v in counts.items())
    if fmt == "md":
        lines = [f"# {title}", "", f"{len(df)} records ({summary_line}). Spread: {metrics.SPREAD_METHOD}.", ""]
        lines += [f"- {n}" for n in notes]
        for fig_name, paths in made.items():
            png = next(p for p in paths if p.suffix == ".png")
            cap = figures.CAPTIONS.get(fig_name, "").format(baseline=baseline)
            lines += [f"## {figures.TITLES.get(fig_name, fig_name)}", "", f"![{fig_name}]({png.relative_to(out)})", "",
                      f"*{cap}*", ""]
        if table is not None:
            lines += ["## Speedup table", "", tables.render(table, "markdown")]
        if model_table is not None:
            lines += ["## Training steps", "", tables.render(model_table, "markdown")]
        lines += ["## configuration", ""] + [f"- {k}: {v}" for k, v in config.items()] + [""]
        lines += ["## provenance", "", tables.render(prov, "markdown")]
        if failures.rows:
            lines += ["## not timed", "", tables.render(failures, "markdown")]
        if skipped:
            lines += ["## skipped figures", ""] + [f"- {k}: {v}" for k, v in skipped.items()]
        path = out / "report.md"
        path.write_text("\n".join(lines) + "\n")
        return path
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>",
             f"<p>{len(df)} records ({html.escape(summary_line)}). Spread: {html.escape(metrics.SPREAD_METHOD)}.</p>"]
    parts += [f"<p><b>note:</b> {html.escape(n)}</p>" for n in notes]
    for fig_name, paths in made.items():
        png = next(p for p in paths if p.suffix == ".png")
        data = base64.b64encode(png.read_bytes()).decode()
        cap = html.escape(figures.CAPTIONS.get(fig_name, "").format(baseline=baseline))
        parts.append(f"<h2>{html.escape(figures.TITLES.get(fig_name, fig_name))}</h2><figure><img alt='{fig_name}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{cap}</figcaption></figure>")
    if table is not None:
        parts += ["<h2>Speedup table</h2>", f"<p>{html.escape(table.caption)}</p>", _html_table(table)]
    if model_table is not None:
        parts += ["<h2>Training steps</h2>", f"<p>{html.escape(model_table.caption)}</p>", _html_table(model_table)]
    parts += ["<h2>configuration</h2><ul>"] + [f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                                               for k, v in config.items()] + ["</ul>"]
    parts += ["<h2>provenance</h2>", _html_table(prov)]
    if failures.rows:
        parts += ["<h2>not timed</h2>", _html_table(failures)]
    if skipped:
        parts += ["<h2>skipped figures</h2><ul>"] + [f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                                                     for k, v in skipped.items()] + ["</ul>"]
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
