"""`--workers N`: a run's cached calls computed by N processes, the run's own and N-1 workers.

A worker is a copy of the run's process, forked before the run starts (or, for a caller on its
own event loop, `python -m nimflow._workers`, which loads the workflow's file), given the run's id
and inputs on a pipe once the run has them. It builds the same graph and runs it under claims of
its own (owner `<run>/w<i>`), so the run's process and its workers split each cached map chunk by
chunk, as cooperating runs do;
the run's process then finds the workers' items in the cache. A worker writes the rows of the
items it computed, under the run's id, and nothing else: one run row, one progress display, one
summary. A worker runs only the cached maps and the nodes they depend on (uncached ones run in
every process: their values feed the maps); what comes after them runs in the run's process
alone, since it may write rows or files that must be written once.

The workers route to the same actor servers; each process gets 1/N of every actor's in-flight cap
per replica, so the cap holds across them, and 1/N of each map's concurrency, so that no process
claims more of a map's items than it can run at once. The run's process claims a map's items once
its workers are ready (or after READY_SECONDS), and runs the nodes before the maps meanwhile:
claiming first, it would have taken a whole map before they had loaded the workflow. A worker
that fails or dies costs nothing but time: its leases are released or expire, and the run's
process takes its items over.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import IO, Any, NoReturn

import anyio

from nimflow import _serialize
from nimflow._context import bind_run
from nimflow._exceptions import UserInputError
from nimflow._graph import Graph
from nimflow._liveness import few_malloc_arenas, quiet_gc
from nimflow._loader import load_module, workflows_in
from nimflow._scheduler import DEFAULT_ASYNC_CONCURRENCY, DEFAULT_THREADS, Scheduler
from nimflow._store import Store
from nimflow._task import TaskSpec
from nimflow._workflow import WorkflowSpec

__all__ = ["Workers", "share_maps", "shared_caps"]

DEFAULT_MAX_IN_FLIGHT = 256  # an actor's per-replica cap when it sets none (as the pool's)
READY = b"nimflow-worker-ready\n"  # what a worker prints on stdout just before it computes
READY_SECONDS = 60.0  # how long the run's process waits for its workers before it starts anyway


class Workers:
    """The N-1 worker processes of a run, started with it and waited for at its end.

    They are made before the run has its id (`fork`, or `spawn`) and wait for it on a pipe; `begin`
    sends it. A forked worker is a copy of the run's process, made before the run starts a thread
    or an event loop: it has the interpreter, the libraries and the workflow loaded already, where
    a spawned one (`python -m nimflow._workers`, for a caller on its own event loop or with threads
    running) spends a second or more loading them.
    """

    def __init__(self, procs: Sequence[tuple[_Process, IO[bytes]]], load: Mapping[str, Any]) -> None:
        self._procs = procs
        self._load = load  # what a spawned worker needs to load the workflow
        self._errors: list[str] | None = None  # once waited for

    @classmethod
    def fork(cls, count: int, wf: WorkflowSpec[..., Any]) -> Workers | None:
        """`count - 1` forked workers; None where forking is not safe (threads are running)."""
        if count <= 1 or threading.active_count() > 1 or not hasattr(os, "fork"):
            return None
        sys.stdout.flush()  # else what this process printed would be printed by the copies too
        sys.stderr.flush()
        procs: list[tuple[_Forked, IO[bytes]]] = []
        for _ in range(1, count):
            spec_read, spec_write = os.pipe()
            ready_read, ready_write = os.pipe()
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by wait())
            pid = os.fork()
            if pid == 0:  # the worker: the earlier workers' pipe ends are not its own
                for proc, _ in procs:
                    proc.close_pipes()
                os.close(spec_write)
                os.close(ready_read)
                _forked_main(wf, spec_read, ready_write, log.fileno())
            os.close(spec_read)
            os.close(ready_write)
            procs.append((_Forked(pid, os.fdopen(spec_write, "wb"), os.fdopen(ready_read, "rb")), log))
        return cls(procs, {})

    @classmethod
    def spawn(cls, count: int, wf: WorkflowSpec[..., Any], source_file: str | None) -> Workers:
        file = source_file or inspect.getsourcefile(wf.fn)
        if file is None:
            raise UserInputError(f"workflow {wf.name}: --workers needs it defined in a Python file.")
        procs: list[tuple[_Process, IO[bytes]]] = []
        for _ in range(1, count):
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by wait())
            proc = subprocess.Popen(
                [sys.executable, "-m", "nimflow._workers"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
            procs.append((proc, log))
        return cls(procs, {"file": os.path.abspath(file), "workflow": wf.name})

    def begin(
        self,
        run_id: str,
        inputs: Mapping[str, Any],
        use_cache: bool,
        servers: Mapping[str, Any] | None,
        db_url: str,
    ) -> None:
        """Send each worker the run to work for."""
        spec = {
            **self._load,
            "run_id": run_id,
            "inputs": dict(inputs),
            "use_cache": use_cache,
            "servers": base64.b64encode(pickle.dumps(dict(servers or {}))).decode(),
            "workers": len(self._procs) + 1,
            "db_url": db_url,
        }
        for index, (proc, _) in enumerate(self._procs, start=1):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({**spec, "index": index}).encode())
            proc.stdin.close()

    def ready(self, timeout: float = READY_SECONDS) -> None:
        """Block until every worker is about to compute (or has exited, or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        waiting = {proc.stdout.fileno(): proc.stdout for proc, _ in self._procs if proc.stdout is not None}
        while waiting and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(list(waiting), [], [], left)
            for fd in readable:
                line = waiting[fd].readline()  # what a workflow file prints on import is skipped
                if line in (READY, b""):  # ready, or exited (wait() reports why)
                    waiting.pop(fd).close()

    def wait(self) -> list[str]:
        """Wait for every worker; what those that failed said on stderr (the end of it). Called
        again, it returns the same without waiting."""
        if self._errors is not None:
            return self._errors
        errors = []
        for proc, log in self._procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()  # never begun (the run failed first): it ends at end of file
            if proc.wait() != 0:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip()[-2000:]
                errors.append(f"worker pid {proc.pid} exited with {proc.returncode}: {tail}")
            if proc.stdout is not None:
                proc.stdout.close()
            log.close()
        self._errors = errors
        return errors

    def stop(self) -> None:
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.terminate()


class _Forked:
    """A forked worker, with the part of subprocess.Popen's surface that Workers uses."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGTERM)

    def close_pipes(self) -> None:
        for pipe in (self.stdin, self.stdout):
            if pipe is not None:
                os.close(pipe.fileno())  # the fd only: the file object is the run's process's


_Process = subprocess.Popen[bytes] | _Forked


def _forked_main(wf: WorkflowSpec[..., Any], spec_fd: int, ready_fd: int, log_fd: int) -> NoReturn:
    """A forked worker's life: wait for the run, work for it, and leave without running the run's
    process's exit handlers (they are not the worker's)."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # nobody reads a worker's output
        os.dup2(log_fd, 2)
        with os.fdopen(spec_fd, "rb") as source:
            spec = source.read()
        if spec:  # else the run ended before it began its workers
            _serve(json.loads(spec), wf, ready_fd)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def worker_graph(graph: Graph[TaskSpec[..., Any]]) -> Graph[TaskSpec[..., Any]]:
    """The part of the graph a worker runs: the cached maps and their upstream nodes."""
    by_id = {node.id: node for node in graph}
    needed: set[str] = set()
    todo = [node.id for node in graph if node.is_map and node.task.cache]
    while todo:
        node_id = todo.pop()
        if node_id not in needed:
            needed.add(node_id)
            todo.extend(by_id[node_id].upstream)
    return Graph(nodes=[node for node in graph if node.id in needed], output=None)


def share_maps(graph: Graph[TaskSpec[..., Any]], workers: int) -> None:
    """Each of `workers` processes runs 1/workers of every cached map's concurrency (the scheduler
    claims a map's items in chunks of about that size); uncached maps run whole in every process."""
    if workers <= 1:
        return
    for node in graph:
        if node.is_map and node.task.cache:
            default = DEFAULT_ASYNC_CONCURRENCY if node.task.is_async else DEFAULT_THREADS
            node.concurrency = max(1, (node.concurrency or default) // workers)


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


def _serve(spec: dict[str, Any], wf: WorkflowSpec[..., Any] | None = None, ready_fd: int = 1) -> None:
    """Work for the run in `spec`, with the run's own process settings (see nimflow._liveness)."""
    few_malloc_arenas()
    with quiet_gc():
        anyio.run(_work, spec, wf, ready_fd)


async def _work(spec: dict[str, Any], wf: WorkflowSpec[..., Any] | None = None, ready_fd: int = 1) -> None:
    wf = wf or _load(spec)
    values = {
        name: _serialize.validate(value, wf.input_hints[name], f"workflow input {name!r}")
        for name, value in spec["inputs"].items()
    }
    graph = worker_graph(wf.build())
    share_maps(graph, spec["workers"])
    servers = pickle.loads(base64.b64decode(spec["servers"]))
    run_id = spec["run_id"]
    os.environ["NIMFLOW_DB_URL"] = spec["db_url"]  # the run's database, for whatever opens it here
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
            _say_ready(ready_fd)
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.cache.keep_claims)
                await scheduler.execute()
                tg.cancel_scope.cancel()
    finally:
        store.close()


def _load(spec: Mapping[str, Any]) -> WorkflowSpec[..., Any]:
    found = [wf for wf in workflows_in(load_module(spec["file"])).values() if wf.name == spec["workflow"]]
    if not found:
        raise UserInputError(f"{spec['file']} no longer defines workflow {spec['workflow']!r}.")
    return found[0]


def _say_ready(fd: int) -> None:
    """Tell the run's process; a spawned worker (`fd` is its stdout) then sends what user code
    prints to nowhere (nobody reads the pipe from now on: a full one would block the worker)."""
    sys.stdout.flush()
    os.write(fd, READY)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main() -> None:
    spec = json.loads(sys.stdin.read())
    _serve(spec)


if __name__ == "__main__":
    main()
