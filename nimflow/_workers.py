"""`--workers N`: a run's cached calls computed by N processes, the run's own and N-1 workers.

A worker is `python -m nimflow._workers`, given the workflow's file, its inputs and the run's id
on stdin. It builds the same graph and runs it under claims of its own (owner `<run>/w<i>`), so
the run's process and its workers split each cached map chunk by chunk, as cooperating runs do;
the run's process then finds the workers' items in the cache. A worker writes the rows of the
items it computed, under the run's id, and nothing else: one run row, one progress display, one
summary. Uncached nodes run in every process (their values feed the cached maps downstream).

The workers route to the same actor servers; each process gets 1/N of every actor's in-flight cap
per replica, so the cap holds across them. A worker that fails or dies costs nothing but time:
its leases are released or expire, and the run's process takes its items over.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from typing import IO, Any

import anyio

from nimflow import _serialize
from nimflow._context import bind_run
from nimflow._exceptions import UserInputError
from nimflow._graph import Graph
from nimflow._loader import load_module, workflows_in
from nimflow._scheduler import Scheduler
from nimflow._store import Store
from nimflow._task import TaskSpec
from nimflow._workflow import WorkflowSpec

__all__ = ["Workers", "shared_caps"]

DEFAULT_MAX_IN_FLIGHT = 256  # an actor's per-replica cap when it sets none (as the pool's)


class Workers:
    """The N-1 worker processes of a run, started with it and waited for at its end."""

    def __init__(self, procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]]) -> None:
        self._procs = procs

    @classmethod
    def start(
        cls,
        count: int,
        wf: WorkflowSpec[..., Any],
        source_file: str | None,
        run_id: str,
        inputs: Mapping[str, Any],
        use_cache: bool,
        servers: Mapping[str, Any] | None,
        db_url: str,
    ) -> Workers:
        file = source_file or inspect.getsourcefile(wf.fn)
        if file is None:
            raise UserInputError(f"workflow {wf.name}: --workers needs it defined in a Python file.")
        spec = {
            "file": os.path.abspath(file),
            "workflow": wf.name,
            "run_id": run_id,
            "inputs": dict(inputs),
            "use_cache": use_cache,
            "servers": base64.b64encode(pickle.dumps(dict(servers or {}))).decode(),
            "workers": count,
        }
        env = {**os.environ, "NIMFLOW_DB_URL": db_url}
        procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        for index in range(1, count):
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by wait())
            proc = subprocess.Popen(
                [sys.executable, "-m", "nimflow._workers"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({**spec, "index": index}).encode())
            proc.stdin.close()
            procs.append((proc, log))
        return cls(procs)

    def wait(self) -> list[str]:
        """Wait for every worker; what those that failed said on stderr (the end of it)."""
        errors = []
        for proc, log in self._procs:
            if proc.wait() != 0:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip()[-2000:]
                errors.append(f"worker pid {proc.pid} exited with {proc.returncode}: {tail}")
            log.close()
        return errors

    def stop(self) -> None:
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.terminate()


@contextmanager
def shared_caps(actors: Iterable[Any], workers: int) -> Iterator[None]:
    """Each of `workers` processes gets 1/workers of every actor's per-replica in-flight cap."""
    changed = [(actor, actor.max_concurrency) for actor in actors if hasattr(actor, "max_concurrency")]
    if workers > 1:
        for actor, cap in changed:
            actor.max_concurrency = max(1, (cap or DEFAULT_MAX_IN_FLIGHT) // workers)
    try:
        yield
    finally:
        for actor, cap in changed:
            actor.max_concurrency = cap


def actors_of(graph: Graph[TaskSpec[..., Any]]) -> list[Any]:
    return list({id(n.task.actor): n.task.actor for n in graph if n.task.actor is not None}.values())


async def _work(spec: dict[str, Any]) -> None:
    found = [wf for wf in workflows_in(load_module(spec["file"])).values() if wf.name == spec["workflow"]]
    if not found:
        raise UserInputError(f"{spec['file']} no longer defines workflow {spec['workflow']!r}.")
    wf = found[0]
    values = {
        name: _serialize.validate(value, wf.input_hints[name], f"workflow input {name!r}")
        for name, value in spec["inputs"].items()
    }
    graph = wf.build()
    servers = pickle.loads(base64.b64decode(spec["servers"]))
    run_id = spec["run_id"]
    store = Store.open()
    try:
        async with AsyncExitStack() as stack:
            stack.enter_context(shared_caps(actors_of(graph), spec["workers"]))
            actors = None
            if any(node.task.actor is not None for node in graph):
                from nimflow.actors.pool import ActorSession

                actors = await stack.enter_async_context(ActorSession(store, servers))
            stack.enter_context(bind_run(run_id, store))
            owner = f"{run_id}/w{spec['index']}"
            scheduler = Scheduler(
                graph, run_id, store, values, read_cache=spec["use_cache"], resources=actors, owner=owner
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.cache.keep_claims)
                await scheduler.execute()
                tg.cancel_scope.cancel()
    finally:
        store.close()


def main() -> None:
    spec = json.loads(sys.stdin.read())
    anyio.run(_work, spec)


if __name__ == "__main__":
    main()
