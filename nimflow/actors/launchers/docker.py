"""Docker launcher: NIM and vLLM containers through the Docker SDK.

Facts this relies on (measured): `containers.run` pulls silently when an image is missing, so the
image is checked first and pulled only on purpose; a GPU request without the NVIDIA runtime fails
at start and leaves a `created` container behind; a crashed container's reason is only in its
logs, so containers are never auto-removed: failed ones are removed by name here.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nimflow._exceptions import (
    ActorConfigError,
    DockerUnavailableError,
    GPUUnavailableError,
    ImageNotAvailableError,
    PortInUseError,
)
from nimflow._redact import redact, remember_secret
from nimflow.actors.containers import LABEL_PREFIX, ContainerPlan, alternatives, plan_container, run_kwargs
from nimflow.actors.launchers.base import Progress, ReplicaInfo, port_is_free
from nimflow.actors.servers import NIM, VLLM, Container, ServerSpec
from nimflow.secrets import get_secret

__all__ = ["DockerLauncher", "alternatives"]


class DockerLauncher:
    kind = "docker"

    def __init__(
        self,
        client: Any = None,
        *,
        home: Path | None = None,
        fetch: Callable[[tuple[str, ...], Path, str], None] | None = None,
    ) -> None:
        self._client = client
        self._home = home
        self._fetch = fetch
        self._lock = threading.Lock()
        self._host_network: bool | None = None

    # -- engine ---------------------------------------------------------------------------------

    def client(self, actor: str = "") -> Any:
        with self._lock:
            if self._client is None:
                import docker

                client = None
                try:
                    _probe_socket()
                    client = docker.from_env()
                    client.ping()
                except Exception as exc:  # DockerException, requests' ConnectionError, PermissionError
                    if client is not None:
                        client.close()
                    who = f"actor {actor!r} needs a Docker engine, but " if actor else ""
                    raise DockerUnavailableError(
                        f"{who}no Docker engine answers ({_reason(exc)}). Start one (`dockerd`, "
                        "or `bash .ci/docker-setup.sh` on Debian) or set DOCKER_HOST. "
                        + (alternatives(actor) if actor else "")
                    ) from None
                self._client = client
            return self._client

    def host_network(self) -> bool:
        """Host networking when the engine has no bridge network (or NIMFLOW_DOCKER_NETWORK=host)."""
        if self._host_network is None:
            choice = os.environ.get("NIMFLOW_DOCKER_NETWORK", "").lower()
            if choice in ("host", "bridge"):
                self._host_network = choice == "host"
            else:
                self._host_network = not self.client().networks.list(names=["bridge"])
        return self._host_network

    # -- Launcher ------------------------------------------------------------------------------

    def find(self, actor: str | None = None) -> list[ReplicaInfo]:
        label = f"{LABEL_PREFIX}actor" + (f"={actor}" if actor else "")
        containers = self.client(actor or "").containers.list(all=True, filters={"label": [label]})
        return [self._info(c) for c in containers]

    def start(
        self,
        actor: str,
        replica: int,
        spec: ServerSpec,
        *,
        port: int,
        ttl: float,
        gpus: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> ReplicaInfo:
        if not isinstance(spec, NIM | VLLM | Container):
            raise ActorConfigError(
                f"actor {actor!r}: the docker launcher runs NIM, VLLM and Container specs, not {spec!r}."
            )
        client = self.client(actor)
        plan = plan_container(
            actor,
            replica,
            spec,
            port=port,
            ttl=ttl,
            host_network=self.host_network(),
            home=self._home,
            fetch=self._fetch,
            gpus=tuple(gpus),
        )
        self._ensure_image(client, plan, progress)
        if not port_is_free(plan.port):
            raise PortInUseError(
                f"actor {actor!r} replica {replica}: port {plan.port} on 127.0.0.1 is already in use "
                "by another program. Stop it, or give the server another port (port=...; port=0 picks "
                "a free one)."
            )
        if progress:
            progress(f"starting container {plan.name}")
        return self._run(client, plan)

    def status(self, info: ReplicaInfo) -> ReplicaInfo:
        import docker.errors

        try:
            container = self.client(info.actor).containers.get(info.handle)
        except docker.errors.NotFound:
            info.running, info.exit_code = False, None
            return info
        return self._info(container)

    def logs(self, info: ReplicaInfo, lines: int = 40) -> str:
        import docker.errors

        try:
            raw = self.client(info.actor).containers.get(info.handle).logs(tail=lines)
        except docker.errors.NotFound:
            return ""
        for name in _SECRET_ENV:  # an adopted container's logs may hold keys this process never read
            if os.environ.get(name):
                remember_secret(os.environ[name])
        return redact(raw.decode(errors="replace"))

    def stop(self, info: ReplicaInfo) -> None:
        import docker.errors

        client = self.client(info.actor)
        for ref in (info.handle, info.name):
            if not ref:
                continue
            try:
                container = client.containers.get(ref)
            except docker.errors.NotFound:
                continue
            try:
                if container.status == "running":
                    container.stop(timeout=10)
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            return

    # -- helpers -------------------------------------------------------------------------------

    def _ensure_image(self, client: Any, plan: ContainerPlan, progress: Progress | None) -> None:
        import docker.errors

        try:
            client.images.get(plan.image)
            return
        except docker.errors.ImageNotFound:
            pass
        if not plan.pull:
            raise ImageNotAvailableError(
                f"actor {plan.actor!r}: the image {plan.image} is not on this machine and pulling is off "
                f"(pull=False). Pull or build it first (`docker pull {plan.image}`)."
            )
        try:
            if plan.login:
                registry, username, secret_name = plan.login
                if progress:
                    progress(f"logging in to {registry}")
                client.login(username=username, password=get_secret(secret_name), registry=registry)
            repository, tag = _split_image(plan.image)
            if progress:
                progress(f"pulling {plan.image} (this can take a while)")
            for event in client.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise docker.errors.APIError(event["error"])
                if progress and "status" in event:
                    detail = event.get("progress", "")
                    progress(f"pulling {plan.image}: {event['status']} {detail}".strip())
            client.images.get(plan.image)
        except (docker.errors.APIError, docker.errors.ImageNotFound, OSError) as exc:
            raise ImageNotAvailableError(
                f"actor {plan.actor!r}: the image {plan.image} is not on this machine and could not be "
                f"pulled ({redact(_reason(exc))}). Check the name and tag, your "
                "network, and for nvcr.io images the NGC_API_KEY; or build/load the image yourself "
                "(`docker images` lists what is here). " + alternatives(plan.actor)
            ) from None

    def _run(self, client: Any, plan: ContainerPlan) -> ReplicaInfo:
        import docker.errors
        from docker.types import DeviceRequest

        kwargs = run_kwargs(plan)
        if plan.gpu_ids:  # placed by the pool: this replica's own GPUs
            kwargs["device_requests"] = [DeviceRequest(device_ids=list(plan.gpu_ids), capabilities=[["gpu"]])]
        elif plan.gpu:
            count = -1 if plan.gpu == "all" else int(plan.gpu)
            kwargs["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        created = False
        ok = False
        try:
            try:
                container = client.containers.run(**kwargs)
                created = True
            except docker.errors.APIError as exc:
                if getattr(exc, "status_code", None) == 409:
                    raise ActorConfigError(
                        f"actor {plan.actor!r}: a container named {plan.name} already exists; "
                        f"`nimflow actors stop {plan.actor}` removes it."
                    ) from None
                created = True  # create may have succeeded before start failed
                raise
            container.reload()  # the object run() returns has a stale status
            ok = True
            return self._info(container)
        except docker.errors.APIError as exc:
            text = _reason(exc)
            if plan.gpu and ("device driver" in text or "nvidia" in text.lower() or "gpu" in text.lower()):
                raise GPUUnavailableError(
                    f"actor {plan.actor!r} asks for a GPU (gpu={plan.gpu}), but this Docker engine has no "
                    f"NVIDIA runtime ({text}). Install the NVIDIA driver and nvidia-container-toolkit, "
                    "or set gpu=0 for a CPU image. " + alternatives(plan.actor)
                ) from None
            raise ActorConfigError(
                f"actor {plan.actor!r}: Docker refused to start {plan.image}: {redact(text)}"
            ) from None
        finally:
            if created and not ok:
                _remove_by_name(client, plan.name)

    def _info(self, container: Any) -> ReplicaInfo:
        labels = container.labels or {}
        state = (container.attrs or {}).get("State", {})
        port = int(labels.get(f"{LABEL_PREFIX}port", "0") or 0)
        running = container.status in ("running", "created", "restarting")
        return ReplicaInfo(
            actor=labels.get(f"{LABEL_PREFIX}actor", ""),
            replica=int(labels.get(f"{LABEL_PREFIX}replica", "0") or 0),
            kind=self.kind,
            handle=container.id,
            base_url=f"http://127.0.0.1:{port}/v1",
            port=port,
            config_hash=labels.get(f"{LABEL_PREFIX}config", ""),
            model=labels.get(f"{LABEL_PREFIX}model", ""),
            ttl=float(labels.get(f"{LABEL_PREFIX}ttl", "0") or 0),
            running=running,
            exit_code=None if running else state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            name=container.name,
            gpus=tuple(filter(None, labels.get(f"{LABEL_PREFIX}gpus", "").split(","))),
        )

    def image_digest(self, image: str) -> str | None:
        """The local image's id (its config digest), None when it is not on this machine."""
        import docker.errors

        try:
            return str(self.client().images.get(image).id)
        except docker.errors.ImageNotFound:
            return None


_SECRET_ENV = ("NGC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def _probe_socket() -> None:
    """Connect to a local engine's socket first: the SDK leaks its socket when the engine is absent."""
    import socket

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(host.removeprefix("unix://"))


def _remove_by_name(client: Any, name: str) -> None:
    import docker.errors

    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError:
        pass  # best effort: the error being raised is the one that matters


def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    match = re.match(r"^(.*?)(?::([^:/]+))?$", image)
    assert match is not None
    return match.group(1), match.group(2) or "latest"


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
