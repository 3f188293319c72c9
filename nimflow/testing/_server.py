"""Ways to run the fake server: in a thread (FakeServer), in the foreground (serve), or as a
subprocess (FakeServerProcess / spawn)."""

from __future__ import annotations

import dataclasses
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import uvicorn

from ._app import FakeApp
from ._faults import FaultPlan
from ._http import Script
from ._log import RequestRecord
from ._options import API_KEY_ENV, FakeOptions

READY_PREFIX = "nimflow fake server ready on "
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
        self, options: FakeOptions | None = None, /, *, script: Script | None = None, **knobs: Any
    ) -> None:
        # Knobs are FakeOptions' fields (model=..., latency_ms=..., faults=...), over ``options``.
        config = _options(options, knobs)
        self.host = config.host
        self.port = config.port
        self.app = FakeApp(config, script=script)
        self._log = self.app.log
        self._faults = self.app.faults
        self._log_level = config.log_level
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
        self.configure(faults=faults)

    @property
    def metrics(self) -> str:
        return self.app.metrics.render(self.config.model)

    @property
    def peak_in_flight(self) -> int:
        """The most requests answered at once since the server started."""
        return self.app.metrics.peak_in_flight

    @property
    def script(self) -> Script | None:
        return self.app.script

    @script.setter
    def script(self, script: Script | None) -> None:
        """Replace the scripted answers (None: the fake's own answers)."""
        self.app.script = script

    def configure(self, **updates: Any) -> None:
        """Change live options (latency_ms, latency_per_token_ms, faults) while serving."""
        self.app.configure(**updates)

    @property
    def config(self) -> FakeOptions:
        """The options it serves with now (``port`` as asked; read the bound one from ``.port``)."""
        return self.app.config


def _options(options: FakeOptions | None, knobs: dict[str, Any]) -> FakeOptions:
    base = options or FakeOptions(port=0)
    return dataclasses.replace(base, **knobs) if knobs else base


def serve(options: FakeOptions | None = None, /, **knobs: Any) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; prints one ready line to stdout."""
    config = dataclasses.replace(options or FakeOptions(), **knobs)
    app = FakeApp(config)
    host, port, log_level = config.host, config.port, config.log_level
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
        options: FakeOptions | None = None,
        /,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        **knobs: Any,
    ) -> None:
        self.config = _options(options, knobs)
        self.host = self.config.host
        self.port = self.config.port
        self.args = command(self.config, python)
        # Secrets (the API key) go through the environment, not argv, so `ps` does not show them.
        self._env = {**os.environ, **(env or {})}
        self._env.pop(API_KEY_ENV, None)
        self._env.update(self.config.env())
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

    def configure(self, **updates: Any) -> None:
        """Change live options (latency_ms, latency_per_token_ms, faults) over HTTP."""
        if "faults" in updates:
            updates["faults"] = FaultPlan.coerce(updates["faults"]).to_json()
        _http_json("POST", f"{self.url}/_fake/config", updates)


def command(options: FakeOptions, python: str = sys.executable) -> list[str]:
    """The argv that runs a fake server with these options (secrets: ``options.env()``)."""
    return [python, "-m", "nimflow.testing", *options.argv()]


def spawn(**options: Any) -> FakeServerProcess:
    """Start the fake server in its own process; same keyword options as FakeServerProcess."""
    return FakeServerProcess(**options).start()
