"""``nimflow batch-server``: the OpenAI Files and Batches endpoints on local model servers.

Enough of the API for the official client's ``files.create/retrieve/content`` and
``batches.create/retrieve/list/cancel``: uploads are streamed to disk, batches are rows in the
nimflow database, and a worker thread (``_worker``) answers them. An optional bearer token
guards every endpoint.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from sqlmodel import col, select

from nimflow import _config
from nimflow._store import Store

from ._format import SUPPORTED_URLS
from ._tables import BatchFile, BatchJob
from ._worker import Worker, new_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


class BatchAPI:
    def __init__(self, store: Store, worker: Worker, folder: Path, token: str | None = None) -> None:
        self.store = store
        self.worker = worker
        self.folder = folder
        self.token = token

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=1024**3)
        app.router.add_post("/v1/files", self.create_file)
        app.router.add_get("/v1/files/{id}", self.get_file)
        app.router.add_get("/v1/files/{id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{id}", self.get_batch)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel_batch)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return _error(
                    401, "Missing or wrong API key: send 'Authorization: Bearer <token>'.", "invalid_api_key"
                )
        return await handler(request)

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)  # database work off the event loop

    def _row(self, model: type[Any], key: str) -> Any:
        with self.store.session() as session:
            return session.get(model, key)

    # -- files --------------------------------------------------------------------------------
    async def create_file(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        purpose, filename, size, path = None, "upload.jsonl", 0, None
        file_id = new_id("file-")
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or filename
                path = self.folder / f"{file_id}.jsonl"
                with path.open("wb") as out:
                    while chunk := await part.read_chunk(1 << 16):
                        size += len(chunk)
                        await asyncio.to_thread(out.write, chunk)
        if path is None:
            return _error(400, "No file in the upload: send it as the multipart field 'file'.", param="file")
        if purpose != "batch":
            path.unlink(missing_ok=True)
            return _error(400, f"purpose must be 'batch' here, not {purpose!r}.", param="purpose")
        row = BatchFile(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            created_at=int(time.time()),
            path=str(path),
        )
        await self._db(self.store.add, row)
        return web.json_response(row.api())

    async def get_file(self, request: web.Request) -> web.Response:
        row = await self._db(self._row, BatchFile, request.match_info["id"])
        if row is None:
            return _error(404, f"No file with id {request.match_info['id']!r}.", "file_not_found")
        return web.json_response(row.api())

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        row = await self._db(self._row, BatchFile, request.match_info["id"])
        if row is None:
            return _error(404, f"No file with id {request.match_info['id']!r}.", "file_not_found")
        return web.FileResponse(row.path, headers={"content-type": "application/octet-stream"})

    # -- batches ------------------------------------------------------------------------------
    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON.")
        endpoint = body.get("endpoint")
        if endpoint not in SUPPORTED_URLS:
            return _error(400, f"endpoint must be one of {', '.join(SUPPORTED_URLS)}.", param="endpoint")
        if body.get("completion_window", "24h") != "24h":
            return _error(400, "completion_window must be '24h'.", param="completion_window")
        source = await self._db(self._row, BatchFile, str(body.get("input_file_id")))
        if source is None or source.purpose != "batch":
            return _error(
                404,
                f"No batch input file {body.get('input_file_id')!r}; upload it with purpose 'batch'.",
                param="input_file_id",
            )
        metadata = body.get("metadata")
        job = BatchJob(
            id=new_id("batch_"),
            input_file_id=source.id,
            endpoint=endpoint,
            created_at=int(time.time()),
            metadata_json=json.dumps(metadata) if metadata else None,
        )
        await self._db(self.store.add, job)
        self.worker.wake()
        return web.json_response(job.api())

    async def get_batch(self, request: web.Request) -> web.Response:
        job = await self._db(self._row, BatchJob, request.match_info["id"])
        if job is None:
            return _error(404, f"No batch with id {request.match_info['id']!r}.", "batch_not_found")
        return web.json_response(job.api())

    def _list(self, limit: int, after: str | None) -> list[BatchJob]:
        with self.store.session() as session:
            query = select(BatchJob).order_by(col(BatchJob.created_at).desc(), col(BatchJob.id).desc())
            rows = list(session.exec(query))
        if after is not None:
            ids = [r.id for r in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        return rows[: limit + 1]

    async def list_batches(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            return _error(400, "limit must be a number from 1 to 100.", param="limit")
        rows = await self._db(self._list, limit, request.query.get("after"))
        page = rows[:limit]
        data = [r.api() for r in page]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(rows) > limit,
            }
        )

    def _cancel(self, job_id: str) -> BatchJob | None:
        with self.store.session() as session:
            job = session.get(BatchJob, job_id)
            if job is not None and job.status in ("validating", "in_progress"):
                job.status, job.cancelling_at = "cancelling", int(time.time())
                session.add(job)
                session.commit()
            return job

    async def cancel_batch(self, request: web.Request) -> web.Response:
        job = await self._db(self._cancel, request.match_info["id"])
        if job is None:
            return _error(404, f"No batch with id {request.match_info['id']!r}.", "batch_not_found")
        self.worker.wake()
        return web.json_response(job.api())


def serve(
    server: str, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None, ttl: float = 900
) -> None:
    """Serve until SIGINT/SIGTERM; batches left unfinished are taken up at the next start."""
    folder = _config.home() / "batch-files"
    folder.mkdir(parents=True, exist_ok=True)
    store = Store.open()
    worker = Worker(store, server, folder, ttl=ttl)
    api = BatchAPI(store, worker, folder, token)
    worker.start()
    print(f"nimflow batch server on http://{host}:{port}/v1 (requests served by {server})", flush=True)
    try:
        web.run_app(api.app(), host=host, port=port, print=None, access_log=None)
    finally:
        worker.stop()
        store.close()


__all__ = ["BatchAPI", "serve"]
