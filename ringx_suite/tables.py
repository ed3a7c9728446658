"""The one table writer: Markdown, LaTeX (booktabs) and CSV from columns and rows.

Every command that prints a table builds a :class:`Table` and renders it here,
so alignment, escaping, captions and labels are decided once.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

FORMATS = ("markdown", "latex", "csv")


@dataclass
class Table:
    columns: list[str]
    rows: list[list[object]]
    caption: str = ""
    label: str = ""  # LaTeX \label
    numeric: set[str] = field(default_factory=set)  # right-aligned columns (default: guessed from the cells)
    latex_cells: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, col) -> raw LaTeX for that cell
    latex_caption: str = ""  # the caption when LaTeX cells say things differently (default: caption)
    wide: bool = False  # LaTeX: a table* spanning both columns of a two-column paper

    def is_numeric(self, j: int) -> bool:
        if self.columns[j] in self.numeric:
            return True
        vals = [r[j] for r in self.rows if r[j] not in (None, "")]
        return bool(vals) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)


def cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def latex_escape(s: str) -> str:
    """Text as LaTeX source: the specials escaped, '~' as $\\sim$, an en dash as --."""
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("~", r"$\sim$"), ("\u2013", "--")):
        s = s.replace(a, b)
    return s


def render(t: Table, fmt: str) -> str:
    """The table as markdown, latex or csv text."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(t.columns)
        w.writerows([[cell(v) for v in r] for r in t.rows])
        return buf.getvalue()
    if fmt == "markdown":
        align = ["---:" if t.is_numeric(j) else "---" for j in range(len(t.columns))]
        lines = ["| " + " | ".join(t.columns) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in t.rows]
        out = "\n".join(lines) + "\n"
        return (out + f"\n{t.caption}\n") if t.caption else out
    if fmt == "latex":
        spec = "".join("r" if t.is_numeric(j) else "l" for j in range(len(t.columns)))
        env = "table*" if t.wide else "table"
        out = [r"\begin{" + env + "}", r"\centering", r"\small"]
        if t.caption or t.latex_caption:
            out.append(r"\caption{" + latex_escape(t.latex_caption or t.caption) + "}")
        if t.label:
            out.append(r"\label{" + t.label + "}")
        out += [r"\begin{tabular}{" + spec + "}", r"\toprule",
                " & ".join(latex_escape(c) for c in t.columns) + r" \\", r"\midrule"]
        for i, r in enumerate(t.rows):
            out.append(" & ".join(t.latex_cells.get((i, j), latex_escape(cell(v))) for j, v in enumerate(r))
                       + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{" + env + "}"]
        return "\n".join(out) + "\n"
    raise ValueError(f"unknown table format {fmt!r}: choose {', '.join(FORMATS)}")
