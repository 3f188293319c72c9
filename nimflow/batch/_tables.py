"""The local Batch API's state in the nimflow database: uploaded files and batches.

File contents live on disk under ``NIMFLOW_HOME/batch-files`` (a Batch file may be gigabytes);
the rows say where, and what the OpenAI API reports about them.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Field, SQLModel


class BatchFile(SQLModel, table=True):
    __tablename__ = "batch_files"

    id: str = Field(primary_key=True)  # "file-..."
    filename: str
    purpose: str  # "batch" for uploads, "batch_output" for outputs and error files
    bytes: int
    created_at: int
    path: str  # where the content is, on this machine

    def api(self) -> dict[str, Any]:
        """The OpenAI FileObject."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class BatchJob(SQLModel, table=True):
    __tablename__ = "batch_jobs"

    id: str = Field(primary_key=True)  # "batch_..."
    input_file_id: str = Field(index=True)
    endpoint: str
    completion_window: str = "24h"
    status: str = Field(default="validating", index=True)
    created_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: str | None = None  # JSON list of {"code", "message", "line"}
    metadata_json: str | None = None
    model: str | None = None

    def api(self) -> dict[str, Any]:
        """The OpenAI Batch object."""
        errors = json.loads(self.errors) if self.errors else None
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.created_at + 24 * 3600,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": None,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": json.loads(self.metadata_json) if self.metadata_json else None,
            "model": self.model,
        }
