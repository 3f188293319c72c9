"""Endpoint "launcher": a server that already runs. Nothing to start or stop."""

from __future__ import annotations

from collections.abc import Sequence

from nimflow._exceptions import ActorConfigError
from nimflow.actors.launchers.base import Progress, ReplicaInfo
from nimflow.actors.servers import OpenAIEndpoint, ServerSpec

__all__ = ["EndpointLauncher"]


class EndpointLauncher:
    kind = "endpoint"

    def find(self, actor: str | None = None) -> list[ReplicaInfo]:
        return []

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
        if not isinstance(spec, OpenAIEndpoint):
            raise ActorConfigError(
                f"actor {actor!r}: the endpoint launcher needs an OpenAIEndpoint, not {spec!r}."
            )
        return ReplicaInfo(
            actor=actor,
            replica=replica,
            kind=self.kind,
            handle=spec.base_url,
            base_url=spec.base_url,
            port=port,
            config_hash=spec.config_hash(),
            model=spec.model or "",
            ttl=ttl,
            name=spec.base_url,
        )

    def status(self, info: ReplicaInfo) -> ReplicaInfo:
        return info

    def logs(self, info: ReplicaInfo, lines: int = 40) -> str:
        return ""

    def stop(self, info: ReplicaInfo) -> None:
        return None
