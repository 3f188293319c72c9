"""Ray launcher: each replica a detached, named Ray actor that runs the server on the node Ray chose.

The Ray actor asks Ray for the server's GPUs, CPUs and memory, starts the server on its node (the
Docker launcher against that node's engine for NIM/vLLM/Container, given the GPUs Ray assigned the
actor; a subprocess for LocalProcess), waits for
its health endpoint and reports its URL; nimflow then routes to that URL as to a local replica.

Names carry what adoption needs: `<actor>:<replica>:<token>` in the namespace `nimflow`, the token
new for every start, so a restart never waits for Ray to release the old name of a dead actor.
A replica's handle (recorded in the database) is `<gcs address>|<name>|<node id>|<node ip>`, so the
janitor and `nimflow actors stop` reach it from any process without other state. The Ray actor
itself (what runs on the node) is ray_node.ReplicaServer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nimflow._exceptions import ActorConfigError, ServerExitedError, StartupTimeoutError, UserInputError
from nimflow.actors.launchers.base import Progress, ReplicaInfo
from nimflow.actors.launchers.ray_node import ReplicaServer
from nimflow.actors.servers import NIM, VLLM, Container, FakeOpenAI, LocalProcess, ServerSpec, parse_quantity

__all__ = [
    "NAMESPACE",
    "Ray",
    "RayLauncher",
    "describe_handle",
    "parse_placement",
    "replica_options",
    "runs_on_ray",
]

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

    def address_source(self) -> str:
        """Where resolved_address() came from, for `nimflow actors plan`."""
        if self.address:
            return "nf.Ray(address=...) or --placement"
        return ADDRESS_ENV if os.environ.get(ADDRESS_ENV) else f"the default: {ADDRESS_ENV} is not set"

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


def runs_on_ray(spec: ServerSpec) -> bool:
    """Whether a Ray placement can run this server (the rest is refused at start)."""
    return isinstance(spec, NIM | VLLM | Container | LocalProcess | FakeOpenAI)


def replica_options(spec: ServerSpec) -> dict[str, Any]:
    """What each replica's Ray actor asks the cluster for: num_gpus, num_cpus, memory (bytes)."""
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
        gpus: Sequence[str] = (),  # unused: Ray gives the actor its GPUs (num_gpus) on its node
        progress: Progress | None = None,
    ) -> ReplicaInfo:
        ray = _ray()

        if not runs_on_ray(spec):
            raise ActorConfigError(
                f"actor {actor!r}: a Ray placement runs NIM, VLLM, Container and LocalProcess, not {spec!r}."
            )
        gcs = self._gcs()
        name = f"{actor}:{replica}:{uuid.uuid4().hex[:8]}"
        # A fixed port is the user's (port + replica, as locally); otherwise the node picks a free one.
        fixed_port = port if int(getattr(spec, "port", 0) or 0) else 0
        remote_cls = ray.remote(ReplicaServer)
        handle = remote_cls.options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            max_restarts=0,  # nimflow restarts a dead replica itself, as it does locally
            max_concurrency=4,  # describe/logs/stop answer while serve() waits for the server
            scheduling_strategy="SPREAD",
            **replica_options(spec),
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
