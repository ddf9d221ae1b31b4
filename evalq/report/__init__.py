"""Reading results back: paired strategy comparisons and run exports."""

from evalq.report.compare import (
    Comparison,
    Estimate,
    GroupComparison,
    PairedData,
    compare,
    load_paired,
    to_json,
    to_markdown,
    to_rich_table,
)
from evalq.report.export import ExportedTable, export_run

__all__ = [
    "Comparison",
    "Estimate",
    "ExportedTable",
    "GroupComparison",
    "PairedData",
    "compare",
    "export_run",
    "load_paired",
    "to_json",
    "to_markdown",
    "to_rich_table",
]
