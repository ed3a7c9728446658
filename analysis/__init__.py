"""ringx-bench analysis: campaigns -> tidy frames -> speedup/scaling metrics, figures, tables, reports."""

from .load import EmptyCampaign, load
from .metrics import speedup, strong_scaling, summarize, weak_scaling

__all__ = ["EmptyCampaign", "load", "speedup", "strong_scaling", "summarize", "weak_scaling"]
