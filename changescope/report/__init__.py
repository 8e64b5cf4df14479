"""The analyst's report: a self-contained HTML page and 2-D maps of the embeddings."""

from changescope.report.explore import explore
from changescope.report.html import build_report

__all__ = ["build_report", "explore"]
