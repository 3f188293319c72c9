"""Ways to run the fake server: in a thread (FakeServer), in the foreground (serve), or as a
subprocess (FakeServerProcess / spawn)."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import uvicorn

from ._app import DEFAULT_MAX_MODEL_LEN, DEFAULT_MODEL, FakeApp, FakeConfig
from ._faults import FaultInjector, FaultPlan
from ._log import RequestLog, RequestRecord

READY_PREFIX = "nimflow fake server ready on "
API_KEY_ENV = "NIMFLOW_FAKE_API_KEY"
_GRACEFUL_SECONDS = 2

FaultsArg = FaultPlan | str | Mapping[str, Any] | None


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling us when it accepts connections and ending hangs on shutdown."""

    def __init__(self, config: uvicorn.Config, app: FakeApp, on_ready: Callable[[], object] | None) -> None:
        super().__init__(config)
        self._app = app
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn waits for in-flight requests before the lifespan shutdown; end sleeps first.
        self._app.begin_shutdown()
        await super().shutdown(sockets)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_config(app: FakeApp, log_level: str, in_thread: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="on",
        ws="none",
        log_level=log_level,
        # In a thread we share the host's process: leave its logging configuration alone.
        log_config=None if in_thread else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=_GRACEFUL_SECONDS,
        backlog=4096,
    )


class _Urls:
    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI client's base URL: ``http://HOST:PORT/v1``."""
        return self.url + "/v1"


class FakeServer(_Urls):
    """The fake OpenAI-compatible server on a background thread of this process.

    >>> with FakeServer(latency_ms=5) as server:
    ...     client = openai.OpenAI(base_url=server.base_url, api_key="unused")

    ``port=0`` picks a free port (read it back from ``.port`` once started). ``faults`` is a
    FaultPlan, a spec string (see ``nimflow.testing._faults``) or None.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        adapters: Sequence[str] = (),
        *,
        latency_ms: float = 0.0,
        latency_per_token_ms: float = 0.0,
        max_concurrency: int | None = None,
        api_key: str | None = None,
        faults: FaultsArg = None,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        log_limit: int = 10_000,
        log_level: str = "warning",
    ) -> None:
        self.config = FakeConfig(
            model=model,
            adapters=tuple(adapters),
            latency_ms=latency_ms,
            latency_per_token_ms=latency_per_token_ms,
            max_concurrency=max_concurrency,
            api_key=api_key,
            max_model_len=max_model_len,
            log_limit=log_limit,
            seed=seed,
        )
        self.host = host
        self.port = port
        self._log = RequestLog(log_limit)
        self._faults = FaultInjector(FaultPlan.coerce(faults), seed=seed)
        self.app = FakeApp(self.config, self._faults, self._log)
        self._log_level = log_level
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Self:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this FakeServer was started already; make a new one to serve again")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        errors: list[BaseException] = []
        server = _Uvicorn(_uvicorn_config(self.app, self._log_level, in_thread=True), self.app, ready.set)

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as error:  # reported by start(), not lost in the thread
                errors.append(error)
            finally:
                sock.close()
                ready.set()

        self._server = server
        self._thread = threading.Thread(target=run, name=f"nimflow-fake-server-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or errors or not server.started:
            self.stop()
            raise RuntimeError(
                f"the fake server did not start on {self.url}: {errors[0] if errors else 'timeout'}"
            )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: hangs and latency sleeps end at once, their connections drop."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        # `with FakeServer(...).start() as server` works too.
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests assert on and change --------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first (control endpoints /_fake/* are not logged)."""
        return self._log.snapshot()

    def clear_log(self) -> None:
        self._log.clear()

    @property
    def faults(self) -> FaultPlan:
        return self._faults.plan

    def set_faults(self, faults: FaultsArg) -> None:
        """Replace the fault plan (its sequence starts over); None removes all faults."""
        self._faults.set(FaultPlan.coerce(faults))

    @property
    def metrics(self) -> str:
        return self.app.metrics.render(self.config.model)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str = DEFAULT_MODEL,
    adapters: Sequence[str] = (),
    latency_ms: float = 0.0,
    latency_per_token_ms: float = 0.0,
    max_concurrency: int | None = None,
    api_key: str | None = None,
    faults: FaultsArg = None,
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    seed: int = 0,
    log_limit: int = 10_000,
    log_level: str = "warning",
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; prints one ready line to stdout."""
    config = FakeConfig(
        model=model,
        adapters=tuple(adapters),
        latency_ms=latency_ms,
        latency_per_token_ms=latency_per_token_ms,
        max_concurrency=max_concurrency,
        api_key=api_key,
        max_model_len=max_model_len,
        log_limit=log_limit,
        seed=seed,
    )
    app = FakeApp(config, FaultInjector(FaultPlan.coerce(faults), seed=seed), RequestLog(log_limit))
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host

    def ready() -> None:
        # One line a parent process waits for (FakeServerProcess); it also says loudly
        # that answers come from the fake, so a run is never silently served by it.
        adapters_text = f", adapters: {', '.join(config.adapters)}" if config.adapters else ""
        print(f"{READY_PREFIX}http://{shown}:{bound} (model: {config.model}{adapters_text})", flush=True)

    _Uvicorn(_uvicorn_config(app, log_level, in_thread=False), app, ready).run(sockets=[sock])


def _http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class FakeServerProcess(_Urls):
    """The fake server as its own process (``python -m nimflow.testing``), e.g. for benchmarks.

    ``start()`` returns once the child prints its ready line (it is then accepting connections).
    The log and the faults are reached over HTTP (``/_fake/log``, ``/_fake/faults``).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        adapters: Sequence[str] = (),
        *,
        latency_ms: float = 0.0,
        latency_per_token_ms: float = 0.0,
        max_concurrency: int | None = None,
        api_key: str | None = None,
        faults: FaultsArg = None,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        log_limit: int = 10_000,
        log_level: str = "warning",
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        plan = FaultPlan.coerce(faults)
        args = [python, "-m", "nimflow.testing", "--host", host, "--port", str(port), "--model", model]
        for adapter in adapters:
            args += ["--adapter", adapter]
        args += ["--latency-ms", str(latency_ms), "--latency-per-token-ms", str(latency_per_token_ms)]
        if max_concurrency is not None:
            args += ["--max-concurrency", str(max_concurrency)]
        args += ["--faults", plan.to_spec(), "--max-model-len", str(max_model_len), "--seed", str(seed)]
        args += ["--log-limit", str(log_limit), "--log-level", log_level]
        self.args = args
        # The key goes through the environment, not argv, so `ps` does not show it.
        self._env = {**os.environ, **(env or {})}
        self._env.pop(API_KEY_ENV, None)
        if api_key is not None:
            self._env[API_KEY_ENV] = api_key
        # The child must import this very package, installed or not.
        package_root = str(Path(__file__).resolve().parents[2])
        self._env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, self._env.get("PYTHONPATH")) if p)
        self._process: subprocess.Popen[str] | None = None
        self._stderr: Any = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the fake server process is not started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def start(self, timeout: float = 30.0) -> Self:
        """Spawn the child and wait (at most ``timeout`` s) until it accepts connections."""
        if self._process is not None:
            raise RuntimeError("this FakeServerProcess was started already; make a new one to serve again")
        # Kept open until stop(): it holds the child's stderr for error reports.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=self._env
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while not line.startswith(READY_PREFIX):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self._fail(f"did not get ready within {timeout:g} s")
                line = self._process.stdout.readline()
                if not line:
                    self._fail(f"exited with code {self._process.wait(5)}")
        self.port = int(line[len(READY_PREFIX) :].split()[0].rsplit(":", 1)[1])
        return self

    def _fail(self, what: str) -> None:
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:]
        self.stop()
        raise RuntimeError(f"the fake server process {what}: {' '.join(self.args)}\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout`` s."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        # `with spawn(...) as server` enters an already started process.
        return self if self._process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the same helpers as FakeServer, over HTTP ------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        return [RequestRecord(**r) for r in _http_json("GET", f"{self.url}/_fake/log")["requests"]]

    def clear_log(self) -> None:
        _http_json("DELETE", f"{self.url}/_fake/log")

    @property
    def faults(self) -> FaultPlan:
        return FaultPlan.from_json(_http_json("GET", f"{self.url}/_fake/faults"))

    def set_faults(self, faults: FaultsArg) -> None:
        _http_json("POST", f"{self.url}/_fake/faults", FaultPlan.coerce(faults).to_json())


def spawn(**options: Any) -> FakeServerProcess:
    """Start the fake server in its own process; same keyword options as FakeServerProcess."""
    return FakeServerProcess(**options).start()
