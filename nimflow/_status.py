"""The states of runs and task runs, as stored in the database and shown by the CLI."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Status"]


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its process died (kill -9, a crash, a reboot) while running

    @property
    def finished(self) -> bool:
        return self not in (Status.PENDING, Status.RUNNING)
