"""A Batch file as a nimflow workflow: one cached actor task per request, mapped over chunks.

The actor is built from a server spec string; each request is an item of ``nf.map_task`` over
the cached task ``nimflow.batch.request``, whose cache key is the request (url and body) and what
serves it. The file is read in chunks of ``chunk_size`` lines, each chunk one recorded run, so
memory stays bounded by the chunk whatever the file's length. A rerun (after Ctrl-C, kill -9 or
a dead server) finds the stored answers and sends only the rest.
"""

from __future__ import annotations

import copy
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nimflow as nf
from nimflow._exceptions import UserInputError
from nimflow.actors.servers import FakeOpenAI, ServerSpec

from ._format import (
    AtomicWriter,
    Request,
    line_failed,
    models_of,
    open_input,
    output_line,
    problems_error,
    read_requests,
    unsupported_error,
    validate_file,
)
from ._send import send

ACTOR = "batch"
TASK = "nimflow.batch.request"
CHUNK = 10_000
CHUNK_TTL = 120.0  # seconds a server waits for the next chunk of a batch
_USAGE = "use fake, endpoint:URL, vllm:MODEL, nim:IMAGE or container:IMAGE"


def server_spec(spec: str | ServerSpec, model: str | None = None, models: Iterable[str] = ()) -> ServerSpec:
    """``fake`` | ``endpoint:URL`` | ``vllm:MODEL`` | ``nim:IMAGE`` | ``container:IMAGE``. The fake
    server serves ``model`` and the ``models`` the requests name (so any file runs on it)."""
    if isinstance(spec, ServerSpec):
        return spec
    kind, _, rest = spec.strip().partition(":")
    rest = rest.strip()
    if spec.strip() == "fake":
        names = list(dict.fromkeys([*([model] if model else []), *models])) or ["fake-model"]
        return FakeOpenAI(model=names[0], adapter_names=tuple(names[1:]))
    if kind == "endpoint" and rest.startswith(("http://", "https://")):
        return nf.OpenAIEndpoint(base_url=rest, model=model)
    if kind == "vllm" and rest:
        return nf.VLLM(model=rest)
    if kind == "nim" and rest:
        return nf.NIM(image=rest, model=model)
    if kind == "container" and rest:
        import nimflow.actors as actors

        container = getattr(actors, "Container", None)
        if container is None:
            raise UserInputError(f"--server {spec!r}: container servers are not available here; {_USAGE}.")
        server: ServerSpec = container(image=rest, model=model)
        return server
    raise UserInputError(f"--server {spec!r} is not understood: {_USAGE}.")


def environment(
    server: str | ServerSpec,
    *,
    model: str | None = None,
    replicas: int = 1,
    ttl: float = 900,
    concurrency: int | None = None,
    models: Iterable[str] = (),
) -> nf.ActorEnvironment:
    return nf.ActorEnvironment(
        ACTOR,
        server_spec(server, model, models),
        replica_count=replicas,
        ttl_seconds=ttl,
        max_concurrency=concurrency,
    )


async def _request(request: dict[str, Any]) -> dict[str, Any]:
    return await send(nf.current_actor(), request["url"], request["body"])


@functools.cache
def _workflow(env: nf.ActorEnvironment, concurrency: int | None) -> nf.WorkflowSpec[..., Any]:
    answer = env.task(name=TASK, cache=True, cache_version="1", retries=3)(_request)

    def batch(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Items that fail for good are None (their line gets the error); the others are kept.
        return nf.map_task(answer, concurrency=concurrency, min_success_ratio=0.0)(request=requests)

    batch.__module__, batch.__qualname__ = "nimflow.batch", "file"  # recorded as workflow "batch.file"
    return nf.workflow(batch)


@dataclass
class BatchSummary:
    """What a batch did: counts, tokens, time, and the runs that recorded it."""

    requests: int = 0
    cached: int = 0
    failed: int = 0
    tokens: int = 0
    seconds: float = 0.0
    runs: list[str] = field(default_factory=list)
    served_by: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        runs = ", ".join(self.runs) or "none"
        return (
            f"{self.requests} requests, {self.cached} cached, {self.failed} failed, "
            f"{self.tokens} tokens, {self.seconds:.1f} s (runs: {runs})"
        )


Progress = Callable[[str, Mapping[str, Any]], Any]


def _answer_chunk(
    chunk: list[Request],
    env: nf.ActorEnvironment,
    summary: BatchSummary,
    *,
    concurrency: int | None,
    use_cache: bool,
    progress: Progress | None,
) -> Iterator[str]:
    """Output lines of one chunk, in its order."""
    sent = [r for r in chunk if r.supported]
    answers: dict[int, dict[str, Any] | None] = {}
    errors: dict[int, str] = {}
    if sent:
        result = nf.run(
            _workflow(env, concurrency),
            inputs={"requests": [{"url": r.url, "body": r.body} for r in sent]},
            use_cache=use_cache,
            progress=progress,
        )
        summary.runs.append(result.run_id)
        summary.cached += result.cached
        summary.tokens += result.tokens
        summary.served_by.update(result.served_by)
        answers = dict(enumerate(result.outputs))
        errors = {f.item: f.error for f in result.failures if f.item is not None}
    position = 0
    for request in chunk:
        summary.requests += 1
        if not request.supported:
            summary.failed += 1
            yield output_line(request, None, unsupported_error(request))
            continue
        answer = answers.get(position)
        if answer is None:
            summary.failed += 1
            message = errors.get(position, "no answer")
            yield output_line(request, None, {"code": "request_failed", "message": message})
        else:
            yield output_line(request, answer, None)
        position += 1


def _chunks(requests: Iterable[Request], size: int) -> Iterator[tuple[list[Request], bool]]:
    """Chunks of ``size`` requests, each with whether it is the last (one request read ahead)."""
    iterator = iter(requests)
    chunk = list(itertools.islice(iterator, size))
    while chunk:
        ahead = list(itertools.islice(iterator, 1))
        yield chunk, not ahead
        chunk = ahead + list(itertools.islice(iterator, size - 1))


def _between_chunks(env: nf.ActorEnvironment) -> nf.ActorEnvironment:
    """The environment of the chunks before the last: a batch with ttl 0 stops its server at the
    end of the whole batch, not after every chunk, so those keep it warm for the next chunk (and
    the janitor stops it ``CHUNK_TTL`` seconds after a run that was killed)."""
    if env.ttl_seconds >= CHUNK_TTL:
        return env
    warm = copy.copy(env)
    warm.ttl_seconds = CHUNK_TTL
    return warm


def run_lines(
    requests: Iterable[Request],
    env: nf.ActorEnvironment,
    *,
    concurrency: int | None = None,
    use_cache: bool = True,
    chunk_size: int = CHUNK,
    progress: Progress | None = None,
    summary: BatchSummary | None = None,
) -> Iterator[str]:
    """Output lines for checked requests, chunk by chunk, in input order."""
    summary = summary if summary is not None else BatchSummary()
    started = time.monotonic()
    warm = _between_chunks(env)
    for chunk, last in _chunks(requests, chunk_size):
        yield from _answer_chunk(
            chunk,
            env if last else warm,
            summary,
            concurrency=concurrency,
            use_cache=use_cache,
            progress=progress,
        )
        summary.seconds = time.monotonic() - started


def run_batch(
    requests: Iterable[Mapping[str, Any]],
    *,
    server: str | ServerSpec = "fake",
    model: str | None = None,
    replicas: int = 1,
    concurrency: int | None = None,
    ttl: float = 900,
    use_cache: bool = True,
    chunk_size: int = CHUNK,
) -> list[dict[str, Any]]:
    """Answer Batch requests (dicts of the input file's shape); the output lines, in order."""
    import json

    texts = (json.dumps(dict(r)) for r in requests)
    checked = list(read_requests(texts, model))
    ids = [r.custom_id for r in checked]
    if len(set(ids)) != len(ids):
        seen: dict[str, list[int]] = {}
        for r in checked:
            seen.setdefault(r.custom_id, []).append(r.line)
        dupes = [
            f"custom_id {c!r} appears in requests {', '.join(map(str, n))}"
            for c, n in seen.items()
            if len(n) > 1
        ]
        raise UserInputError("; ".join(dupes) + ". Give every request its own custom_id.")
    models: dict[str, None] = {}
    models_of(checked, models)
    env = environment(server, model=model, replicas=replicas, ttl=ttl, concurrency=concurrency, models=models)
    lines = run_lines(checked, env, concurrency=concurrency, use_cache=use_cache, chunk_size=chunk_size)
    return [json.loads(line) for line in lines]


def run_batch_file(
    input_path: Path,
    output_path: Path,
    *,
    server: str | ServerSpec,
    model: str | None = None,
    replicas: int = 1,
    concurrency: int | None = None,
    ttl: float = 900,
    use_cache: bool = True,
    errors_path: Path | None = None,
    chunk_size: int = CHUNK,
    progress: Progress | None = None,
) -> BatchSummary:
    """Check the whole file first (nothing is sent if a line is wrong), then answer it chunk by
    chunk and write the output (and the failed lines to ``errors_path``) atomically."""
    models: dict[str, None] = {}
    count, problems = validate_file(input_path, models)
    if problems:
        raise problems_error(input_path, problems)
    if count == 0:
        raise UserInputError(
            f"{input_path} has no requests; an OpenAI Batch file has one JSON request a line."
        )
    env = environment(server, model=model, replicas=replicas, ttl=ttl, concurrency=concurrency, models=models)
    summary = BatchSummary()
    output = AtomicWriter(output_path)
    failed = AtomicWriter(errors_path) if errors_path is not None else None
    try:
        with open_input(input_path) as handle:
            lines = run_lines(
                read_requests(handle, model),
                env,
                concurrency=concurrency,
                use_cache=use_cache,
                chunk_size=chunk_size,
                progress=progress,
                summary=summary,
            )
            for line in lines:
                output.write(line)
                if failed is not None and line_failed(line):
                    failed.write(line)
        output.commit()
        if failed is not None:
            failed.commit()
    except BaseException:
        output.discard()
        if failed is not None:
            failed.discard()
        raise
    return summary
