"""``ringx_analysis`` (this folder, analysis/, installed and imported under that name).

ringx-bench analysis: campaigns -> tidy frames -> speedup/scaling metrics, figures, tables, reports.

Every timed record kind (attention, the training step, serving; kinds.py says how each is compared) goes through
the same ``summarize(df, kind)`` and ``speedup``; step.py holds the training step's own figures and table, infer.py
serving's (TTFT, TPOT), and costmodel_cli.py the cost model's commands (predict, validate, curve, map).

It reads what bench writes through the shared definitions in ``ringx_suite`` (record kinds, store, statistics,
table writer) and uses the cost model in ``costmodel``; it never imports ``bench``. pandas is imported lazily.
"""

_LAZY = {"EmptyCampaign": "records", "KINDS": "kinds", "MissingBaseline": "metrics", "NoData": "metrics",
         "load": "records", "speedup": "metrics", "strong_scaling": "metrics", "summarize": "metrics",
         "weak_scaling": "metrics"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ringx_analysis' has no attribute {name!r}")


__all__ = list(_LAZY)
