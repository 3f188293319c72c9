"""The local Batch API's worker: takes batches from the database one at a time and answers them
with the same workflow as ``nimflow batch``, moving status and request_counts as the OpenAI
Batch API does (validating -> in_progress -> finalizing -> completed; failed; cancelling ->
cancelled). Batches left unfinished by a stopped server are taken up again when it starts: the
answers already stored are not sent again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from nimflow._store import Store

from ._format import AtomicWriter, line_failed, open_input, read_requests, validate_file
from ._run import BatchSummary, environment, run_lines
from ._tables import BatchFile, BatchJob

log = logging.getLogger("nimflow.batch")

CHUNK = 100  # requests per recorded run: request_counts and cancels move at this step
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class Worker:
    """Runs in its own thread; ``wake()`` after a batch is created or cancelled."""

    def __init__(self, store: Store, server: str, folder: Path, ttl: float = 900, chunk: int = CHUNK) -> None:
        self.store = store
        self.server = server
        self.folder = folder
        self.ttl = ttl
        self.chunk = chunk
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nimflow-batch-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self._next()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self.process(job)
            except Exception as error:  # a batch that breaks does not stop the others
                log.exception("batch %s failed", job.id)
                self._update(job.id, status="failed", failed_at=int(time.time()), errors=_errors(str(error)))

    def _next(self) -> BatchJob | None:
        with self.store.session() as session:
            query = (
                select(BatchJob).where(col(BatchJob.status).in_(ACTIVE)).order_by(col(BatchJob.created_at))
            )
            return session.exec(query).first()

    def _get(self, job_id: str) -> BatchJob:
        with self.store.session() as session:
            job = session.get(BatchJob, job_id)
            assert job is not None
            return job

    def _update(self, job_id: str, **values: Any) -> None:
        with self.store.session() as session:
            job = session.get(BatchJob, job_id)
            if job is not None:
                for name, value in values.items():
                    setattr(job, name, value)
                session.add(job)
                session.commit()

    def _add_file(self, path: Path, filename: str) -> str:
        row = BatchFile(
            id=new_id("file-"),
            filename=filename,
            purpose="batch_output",
            bytes=path.stat().st_size,
            created_at=int(time.time()),
            path=str(path),
        )
        self.store.add(row)
        return row.id

    def process(self, job: BatchJob) -> None:
        if job.status == "cancelling":
            self._update(job.id, status="cancelled", cancelled_at=int(time.time()))
            return
        with self.store.session() as session:
            source = session.get(BatchFile, job.input_file_id)
        if source is None:
            self._update(
                job.id, status="failed", failed_at=int(time.time()), errors=_errors("input file is gone")
            )
            return
        path = Path(source.path)
        models: dict[str, None] = {}
        total, problems = validate_file(path, models)
        if problems:
            self._update(job.id, status="failed", failed_at=int(time.time()), errors=_errors(*problems))
            return
        self._update(
            job.id, status="in_progress", in_progress_at=job.in_progress_at or int(time.time()), total=total
        )
        env = environment(self.server, ttl=self.ttl, models=models)
        output = AtomicWriter(self.folder / f"{job.id}_output.jsonl")
        failures = AtomicWriter(self.folder / f"{job.id}_error.jsonl")
        completed = failed = 0
        cancelled = False
        try:
            with open_input(path) as handle:
                for index, line in enumerate(
                    run_lines(read_requests(handle), env, chunk_size=self.chunk, summary=BatchSummary()), 1
                ):
                    if line_failed(line):
                        failed += 1
                        failures.write(line)
                    else:
                        completed += 1
                    output.write(line)
                    if index % self.chunk == 0 or index == total:
                        self._update(job.id, completed=completed, failed=failed)
                        if self._get(job.id).status == "cancelling" or self._stop.is_set():
                            cancelled = self._get(job.id).status == "cancelling"
                            if not cancelled:  # the server stops: taken up again at its next start
                                output.discard()
                                failures.discard()
                                return
                            break
        except BaseException:
            output.discard()
            failures.discard()
            raise
        now = int(time.time())
        if not cancelled:
            self._update(job.id, status="finalizing", finalizing_at=now)
        output.commit()
        failures.commit()
        values: dict[str, Any] = {"output_file_id": self._add_file(output.path, output.path.name)}
        if failed:
            values["error_file_id"] = self._add_file(failures.path, failures.path.name)
        if cancelled:
            values.update(status="cancelled", cancelled_at=int(time.time()))
        else:
            values.update(status="completed", completed_at=int(time.time()))
        self._update(job.id, **values)


def _errors(*messages: str) -> str:
    return json.dumps(
        [{"code": "invalid_request", "message": m, "param": None, "line": None} for m in messages[:100]]
    )
