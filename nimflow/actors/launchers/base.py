"""The one interface every launcher implements, and the replica record they share."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from nimflow.actors.servers import ServerSpec

Progress = Callable[[str], None]


@dataclass
class ReplicaInfo:
    """One replica as a launcher sees it. `handle` is a container id, a pid@start-time, or a URL."""

    actor: str
    replica: int
    kind: str
    handle: str
    base_url: str  # ends in /v1
    port: int
    config_hash: str
    model: str
    ttl: float
    running: bool = True
    exit_code: int | None = None
    oom_killed: bool = False
    name: str = ""  # container name, for messages
    gpus: tuple[str, ...] = ()  # GPU ids given to it

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")


class Launcher(Protocol):
    kind: str

    def find(self, actor: str | None = None) -> list[ReplicaInfo]:
        """Replicas this launcher knows of (running or exited), for one actor or all."""
        ...

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
        """Start one replica listening on `port`, on the GPUs `gpus` (ids placed by the pool)."""
        ...

    def status(self, info: ReplicaInfo) -> ReplicaInfo:
        """A fresh view: running, or exited with its exit code (or gone)."""
        ...

    def logs(self, info: ReplicaInfo, lines: int = 40) -> str: ...

    def stop(self, info: ReplicaInfo) -> None:
        """Stop and remove; a replica that is already gone is fine."""
        ...


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port whose only sockets are in TIME_WAIT (a server that just died) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
