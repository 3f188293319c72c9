"""OpenAI Batch files on nimflow's warm pool: ``nimflow batch`` and ``run_batch`` (a recorded,
resumable run; one cached answer per request), ``batch`` inside an actor task, and a local
Batch API (``nimflow batch-server``)."""

from __future__ import annotations

from ._run import BatchSummary, environment, run_batch, run_batch_file, server_spec
from ._send import batch, send

__all__ = ["BatchSummary", "batch", "environment", "run_batch", "run_batch_file", "send", "server_spec"]
