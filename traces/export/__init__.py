"""Fine-tuning exports of traces: formats, filters, PII scrubbing,
deduplication, grouped splits, validation and manifests.

Entry point: ``traces.export.service.run_export``; the job records around it
live in ``traces.export.jobs``.
"""

from traces.export.request import FORMATS, ExportFilters, ExportOptions, ExportRequest

__all__ = ["FORMATS", "ExportFilters", "ExportOptions", "ExportRequest"]
