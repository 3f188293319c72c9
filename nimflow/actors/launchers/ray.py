"""Ray launcher: each replica a detached, named Ray actor that runs the server on the node Ray chose.

The Ray actor asks Ray for the server's GPUs, CPUs and memory, starts the server on its node (the
Docker launcher against that node's engine for NIM/vLLM, a subprocess for LocalProcess), waits for
its health endpoint and reports its URL; nimflow then routes to that URL as to a local replica.

Names carry what adoption needs: `<actor>:<replica>:<token>` in the namespace `nimflow`, the token
new for every start, so a restart never waits for Ray to release the old name of a dead actor.
A replica's handle (recorded in the database) is `<gcs address>|<name>|<node id>|<node ip>`, so the
janitor and `nimflow actors stop` reach it from any process without other state.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimflow._exceptions import ActorConfigError, ServerExitedError, StartupTimeoutError, UserInputError
from nimflow.actors.launchers.base import Progress, ReplicaInfo, free_port
from nimflow.actors.servers import NIM, VLLM, FakeOpenAI, LocalProcess, ServerSpec, parse_quantity

if TYPE_CHECKING:
    from nimflow.actors.launchers.docker import DockerLauncher

__all__ = ["NAMESPACE", "Ray", "RayLauncher", "describe_handle", "parse_placement"]

NAMESPACE = "nimflow"
ADDRESS_ENV = "NIMFLOW_RAY_ADDRESS"
_PROBE_TIMEOUT = 10.0  # a replica that does not answer its Ray actor within this is taken as down
_STOP_WAIT = 10.0
_INSTALL = "pip install 'nimflow[ray]'"

log = logging.getLogger("nimflow.actors.ray")


def _ray() -> Any:
    # Imported on use: Ray is an optional extra, and heavy to import.
    import ray

    return ray


def _ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken install, or one hidden on purpose
        return False


@dataclass(frozen=True)
class Ray:
    """Place an actor's replicas on a Ray cluster. `address` as `ray.init` takes it ("auto", or the
    head's "HOST:PORT"); None reads NIMFLOW_RAY_ADDRESS and falls back to "auto"."""

    address: str | None = None

    def __post_init__(self) -> None:
        if not _ray_installed():
            raise ActorConfigError(
                f"placement=nf.Ray(...) needs Ray, which is not installed: `{_INSTALL}` "
                "(on this machine and on every node of the cluster)."
            )

    def resolved_address(self) -> str:
        return self.address or os.environ.get(ADDRESS_ENV) or "auto"

    def launcher(self) -> RayLauncher:
        return RayLauncher(self)


def parse_placement(text: str) -> Ray:
    """`ray` or `ray:ADDRESS` (the value of `--placement ACTOR=...`)."""
    kind, sep, rest = text.strip().partition(":")
    if kind == "ray":
        return Ray(address=rest.strip() or None) if sep else Ray()
    raise UserInputError(
        f"--placement value {text!r} is not understood: use `ray` (NIMFLOW_RAY_ADDRESS, else a local "
        "cluster) or `ray:ADDRESS`, e.g. ray:auto or ray:10.0.0.5:6379."
    )


def describe_handle(handle: str) -> str:
    """What `nimflow actors ls` shows for a Ray replica: its node's id and address."""
    _, _, node_id, node_ip = _parse_handle(handle)
    return f"node {node_id[:12]} {node_ip}"


def _parse_handle(handle: str) -> tuple[str, str, str, str]:
    parts = handle.split("|")
    if len(parts) != 4:
        raise ActorConfigError(f"{handle!r} is not a Ray replica handle.")
    return parts[0], parts[1], parts[2], parts[3]


# -- the driver side ------------------------------------------------------------------------------

_connect_lock = threading.Lock()


def _connect(address: str) -> str:
    """Join the cluster once per process; the GCS address (what a handle records)."""
    ray = _ray()

    with _connect_lock:
        if not ray.is_initialized():
            ray.init(
                address=address,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
        return str(ray.get_runtime_context().gcs_address)


def _resources(spec: ServerSpec) -> dict[str, Any]:
    gpu = getattr(spec, "gpu", 0) or 0
    if gpu == "all":
        raise ActorConfigError(
            f"{spec.describe()}: gpu='all' has no meaning on a Ray cluster; give a number of GPUs."
        )
    options: dict[str, Any] = {"num_gpus": int(gpu), "num_cpus": float(getattr(spec, "cpu", None) or 0)}
    mem = parse_quantity(getattr(spec, "mem", None))
    if mem:
        options["memory"] = mem
    return options


class RayLauncher:
    """The Launcher interface over Ray. Without a placement (the janitor, `actors stop`) it reaches
    replicas through the GCS address in their handle."""

    kind = "ray"

    def __init__(self, placement: Ray | None = None) -> None:
        if not _ray_installed():
            raise ActorConfigError(f"Ray replicas need Ray, which is not installed: `{_INSTALL}`.")
        self.placement = placement

    def _gcs(self) -> str:
        if self.placement is None:
            raise ActorConfigError("this Ray launcher has no cluster address to look replicas up in.")
        return _connect(self.placement.resolved_address())

    def find(self, actor: str | None = None) -> list[ReplicaInfo]:
        ray = _ray()

        gcs = self._gcs()
        names = [
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry.get("namespace") == NAMESPACE
            and (actor is None or str(entry.get("name", "")).startswith(f"{actor}:"))
        ]
        handles = {}
        for name in names:
            try:
                handles[name] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue  # gone meanwhile
        refs = {name: handle.describe.remote() for name, handle in handles.items()}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=_PROBE_TIMEOUT)
        found = []
        for name, ref in refs.items():
            info = None
            if ref in ready:
                try:
                    info = _info(gcs, ray.get(ref))
                except Exception:  # died between listing and asking
                    info = None
            if info is None:
                actor_name, _, rest = name.partition(":")
                replica = int(rest.split(":")[0]) if rest.split(":")[0].isdigit() else 0
                info = ReplicaInfo(
                    actor=actor_name, replica=replica, kind=self.kind, handle=f"{gcs}|{name}||",
                    base_url="", port=0, config_hash="", model="", ttl=0, running=False, name=name,
                )  # fmt: skip
            found.append(info)
        return found

    def start(
        self,
        actor: str,
        replica: int,
        spec: ServerSpec,
        *,
        port: int,
        ttl: float,
        progress: Progress | None = None,
    ) -> ReplicaInfo:
        ray = _ray()

        if not isinstance(spec, NIM | VLLM | LocalProcess | FakeOpenAI):
            raise ActorConfigError(
                f"actor {actor!r}: a Ray placement runs NIM, VLLM and LocalProcess, not {spec!r}."
            )
        gcs = self._gcs()
        name = f"{actor}:{replica}:{uuid.uuid4().hex[:8]}"
        # A fixed port is the user's (port + replica, as locally); otherwise the node picks a free one.
        fixed_port = port if int(getattr(spec, "port", 0) or 0) else 0
        remote_cls = ray.remote(_ReplicaServer)
        handle = remote_cls.options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            max_restarts=0,  # nimflow restarts a dead replica itself, as it does locally
            max_concurrency=4,  # describe/logs/stop answer while serve() waits for the server
            scheduling_strategy="SPREAD",
            **_resources(spec),
        ).remote(actor, replica, spec, fixed_port, ttl)
        if progress:
            progress(f"asking Ray for a node ({name})")
        try:
            result = ray.get(handle.serve.remote(), timeout=spec.startup_timeout + 60)
        except ray.exceptions.GetTimeoutError:
            ray.kill(handle, no_restart=True)
            raise StartupTimeoutError(
                f"actor {actor!r} replica {replica}: Ray found no node for it, or its server did not become "
                f"ready within {spec.startup_timeout:g}s; check the cluster's free GPUs (`ray status`)."
            ) from None
        except ray.exceptions.RayError as exc:
            ray.kill(handle, no_restart=True)
            raise ActorConfigError(
                f"actor {actor!r} replica {replica}: the Ray actor failed: {exc}"
            ) from None
        if result.get("error"):
            ray.kill(handle, no_restart=True)
            message, tail = str(result["error"]), str(result.get("log_tail", ""))
            if result.get("timeout"):
                raise StartupTimeoutError(message)
            raise ServerExitedError(message, result.get("exit_code"), tail)
        return _info(gcs, result)

    def status(self, info: ReplicaInfo) -> ReplicaInfo:
        ray = _ray()

        handle = self._handle(info)
        if handle is None:
            info.running, info.exit_code = False, None
            return info
        try:
            fresh = _info(
                _parse_handle(info.handle)[0], ray.get(handle.describe.remote(), timeout=_PROBE_TIMEOUT)
            )
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            info.running, info.exit_code = False, None  # its node died, or the actor did
            return info
        fresh.running = fresh.running and fresh.base_url == info.base_url
        return fresh

    def logs(self, info: ReplicaInfo, lines: int = 40) -> str:
        ray = _ray()

        handle = self._handle(info)
        if handle is None:
            return ""
        try:
            return str(ray.get(handle.logs.remote(lines), timeout=_PROBE_TIMEOUT))
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return ""

    def stop(self, info: ReplicaInfo) -> None:
        ray = _ray()

        handle = self._handle(info)
        if handle is None:
            return
        # Stopping the server first: a container would outlive a killed actor (a process would not).
        with contextlib.suppress(ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            ray.get(handle.shutdown.remote(), timeout=_STOP_WAIT + 5)
        ray.kill(handle, no_restart=True)

    def _handle(self, info: ReplicaInfo) -> Any:
        ray = _ray()

        gcs, name, _, _ = _parse_handle(info.handle)
        _connect(self.placement.resolved_address() if self.placement else gcs)
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None


def _info(gcs: str, data: dict[str, Any]) -> ReplicaInfo:
    return ReplicaInfo(
        actor=data["actor"],
        replica=int(data["replica"]),
        kind=RayLauncher.kind,
        handle=f"{gcs}|{data['name']}|{data['node_id']}|{data['node_ip']}",
        base_url=data["url"],
        port=int(data["port"]),
        config_hash=data["config_hash"],
        model=data["model"],
        ttl=float(data["ttl"]),
        running=bool(data["running"]),
        exit_code=data.get("exit_code"),
        name=f"{data['name']} on {data['node_ip']}",
    )


# -- the node side: the body of the Ray actor -----------------------------------------------------

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


class _ReplicaServer:
    """Runs on the node Ray chose: starts the server there and answers for it."""

    def __init__(self, actor: str, replica: int, spec: ServerSpec, port: int, ttl: float) -> None:
        ray = _ray()

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
        if isinstance(spec, NIM | VLLM):
            self.container = self._docker().start(
                self.actor, self.replica, spec, port=self.port, ttl=self.ttl
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


def place(wf: Any, assignments: list[str]) -> None:
    """Apply `--placement ACTOR=WHERE` to the workflow's actor environments."""
    envs = {node.task.actor.name: node.task.actor for node in wf.build() if node.task.actor is not None}
    for item in assignments:
        name, sep, where = item.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise UserInputError(f"--placement {item!r}: write it as ACTOR=WHERE, e.g. nim-actor=ray:auto.")
        env = envs.get(name.strip())
        if env is None:
            listing = ", ".join(sorted(envs)) or "none"
            raise UserInputError(
                f"--placement names {name.strip()!r}, which this workflow does not use; its actors: {listing}."
            )
        env.placement = parse_placement(where)
