"""The node side of a Ray placement: the body of the Ray actor that runs one replica's server.

It runs on the node Ray chose: starts the server there (a subprocess under a watchdog, or a
container through that node's Docker engine), waits for its health endpoint and answers the
driver's questions (describe, logs, shutdown) about it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimflow.actors.launchers.base import ReplicaInfo, free_port
from nimflow.actors.servers import NIM, VLLM, Container, FakeOpenAI, LocalProcess, ServerSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nimflow.actors.launchers.docker import DockerLauncher

__all__ = ["ReplicaServer", "container_gpus"]

_STOP_WAIT = 10.0

# The server's parent: it ends the server when the Ray worker that started it is gone (killed, or
# its node lost), so no server outlives its actor; it exits with the server's exit code. Ray
# SIGKILLs a dead worker's children, so the server also gets SIGTERM when this watchdog dies.
_WATCHDOG = r"""
import os, signal, subprocess, sys
parent, argv = int(sys.argv[1]), sys.argv[2:]
signal.signal(signal.SIGTERM, signal.SIG_IGN)

def prepare():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):  # SIGTERM the server should this watchdog be SIGKILLed
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

child = subprocess.Popen(argv, preexec_fn=prepare)
code = None
while code is None:
    try:
        code = child.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        if os.getppid() != parent:
            child.terminate()
            try:
                code = child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
os._exit(code if code >= 0 else 128 - code)
"""


def container_gpus(spec: ServerSpec, assigned: Sequence[object]) -> tuple[str, ...]:
    """The device ids the node's Docker launcher gives the container: the GPUs Ray assigned to this
    actor when the spec asks for GPUs, none otherwise (Ray may still hand a GPU-less actor ids)."""
    if not getattr(spec, "gpu", 0):
        return ()
    return tuple(str(gpu) for gpu in assigned)


class ReplicaServer:
    """Runs on the node Ray chose: starts the server there and answers for it."""

    def __init__(self, actor: str, replica: int, spec: ServerSpec, port: int, ttl: float) -> None:
        ray: Any = importlib.import_module("ray")  # an optional extra: imported where it runs

        self.actor, self.replica, self.spec, self.ttl = actor, replica, spec, ttl
        context = ray.get_runtime_context()
        self.name = str(context.get_actor_name())
        self.node_id = str(context.get_node_id())
        self.node_ip = str(ray.util.get_node_ip_address())
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="nimflow-replica-"))
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.container: ReplicaInfo | None = None
        self.model = spec.model_name() or ""

    # What the driver asks for.

    def serve(self) -> dict[str, Any]:
        with self.lock:
            if self.process is None and self.container is None:
                self._start()
        return self._wait_ready()

    def describe(self) -> dict[str, Any]:
        running, code = self._alive()
        return {
            "actor": self.actor, "replica": self.replica, "name": self.name, "node_id": self.node_id,
            "node_ip": self.node_ip, "port": self.port, "url": f"http://{self.node_ip}:{self.port}/v1",
            "config_hash": self.spec.config_hash(), "model": self.model, "ttl": self.ttl,
            "running": running, "exit_code": code,
        }  # fmt: skip

    def logs(self, lines: int = 40) -> str:
        if self.container is not None:
            return self._docker().logs(self.container, lines)
        try:
            text = (self.folder / "server.log").read_bytes()[-64_000:].decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def shutdown(self) -> None:
        with self.lock:
            if self.container is not None:
                self._docker().stop(self.container)
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=_STOP_WAIT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()

    # Inside.

    def _docker(self) -> DockerLauncher:
        from nimflow.actors.launchers.docker import DockerLauncher

        return DockerLauncher()

    def _start(self) -> None:
        spec = self.spec
        if isinstance(spec, NIM | VLLM | Container):
            ray: Any = importlib.import_module("ray")
            # Ray's ids are the node's own GPUs: the container gets exactly those, not any N of them.
            gpus = container_gpus(spec, ray.get_gpu_ids())
            self.container = self._docker().start(
                self.actor, self.replica, spec, port=self.port, ttl=self.ttl, gpus=gpus
            )
            self.model = self.container.model or self.model
            return
        if isinstance(spec, FakeOpenAI):
            from nimflow.actors.launchers.process import fake_server_argv

            argv, extra = fake_server_argv(spec, self.port), {}
        else:
            assert isinstance(spec, LocalProcess)
            argv, extra = spec.argv(self.port), dict(spec.env)
        env = {**os.environ, **extra, "PORT": str(self.port)}
        with open(self.folder / "server.log", "wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *argv],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # its own group: stopping it reaches the server's children too
            )  # fmt: skip

    def _alive(self) -> tuple[bool, int | None]:
        if self.container is not None:
            fresh = self._docker().status(self.container)
            return fresh.running, fresh.exit_code
        if self.process is None:
            return False, None
        code = self.process.poll()
        return code is None, code

    def _wait_ready(self) -> dict[str, Any]:
        import httpx

        spec = self.spec
        url = f"http://127.0.0.1:{self.port}{spec.health_endpoint or '/v1/models'}"
        deadline = time.monotonic() + spec.startup_timeout
        delay = 0.1
        with httpx.Client(trust_env=False) as http:
            while True:  # bounded by the startup deadline
                running, code = self._alive()
                if not running:
                    tail = self.logs(20)
                    return {
                        **self.describe(), "exit_code": code, "log_tail": tail,
                        "error": f"actor {self.actor!r} replica {self.replica}: the server on Ray node "
                        f"{self.node_ip} exited with code {code} while starting. Last log lines:\n"
                        f"{tail.strip() or '(its log is empty)'}",
                    }  # fmt: skip
                try:
                    if http.get(url, timeout=5.0).status_code == 200:
                        return self.describe()
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    return {
                        **self.describe(), "timeout": True,
                        "error": f"actor {self.actor!r} replica {self.replica}: the server on Ray node "
                        f"{self.node_ip} did not answer 200 on {url} within {spec.startup_timeout:g}s; "
                        "raise startup_timeout= if it is still loading.",
                    }  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 1.5, 2.0)
