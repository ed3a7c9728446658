"""Each record kind's figures and tables, by kind (analysis/kinds.py says how each kind is compared).

The view modules (figures.py and tables.py, step.py, infer.py) read the kinds and import matplotlib; this module
sits above them and above kinds.py, so summarizing a campaign loads no matplotlib and no module imports one that
imports it back.
"""

from __future__ import annotations

from . import figures, infer, step, tables
from .kinds import Views

VIEWS: dict[str, Views] = {
    "attention": Views(figures=figures.FIGURES, titles=figures.TITLES, captions=figures.CAPTIONS,
                       tables=tables.TABLES),
    "model": Views(figures=step.FIGURES, titles=step.TITLES, captions=step.CAPTIONS, tables=step.TABLES),
    "infer": Views(figures=infer.FIGURES, titles=infer.TITLES, captions=infer.CAPTIONS, tables=infer.TABLES),
}


def of(kind: str) -> Views:
    """The figures and tables of a record kind (a key of kinds.KINDS)."""
    return VIEWS[kind]
