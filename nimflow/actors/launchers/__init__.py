"""Launchers start, find, watch and stop model server replicas: docker, process, endpoint, ray."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nimflow._exceptions import ActorConfigError
from nimflow.actors.launchers.base import Launcher, Progress, ReplicaInfo, free_port, port_is_free

if TYPE_CHECKING:
    from nimflow.actors.launchers.ray import Ray

__all__ = ["Launcher", "Progress", "ReplicaInfo", "free_port", "launcher_for", "port_is_free"]


def launcher_for(kind: str, placement: Ray | None = None) -> Launcher:
    """The launcher for a server kind (a spec's `kind`, or a replica row's) and its placement:
    the one place that decides which launcher runs what. Imported on demand: only a process that
    runs containers loads the Docker SDK, only one that places on Ray loads Ray."""
    if placement is not None and kind in ("docker", "process"):  # fakes and endpoints stay local
        return placement.launcher()
    if kind == "ray":
        from nimflow.actors.launchers.ray import RayLauncher

        return RayLauncher()
    if kind == "docker":
        from nimflow.actors.launchers.docker import DockerLauncher

        return DockerLauncher()
    if kind in ("process", "fake"):
        from nimflow.actors.launchers.process import ProcessLauncher

        return ProcessLauncher()
    if kind == "endpoint":
        from nimflow.actors.launchers.endpoint import EndpointLauncher

        return EndpointLauncher()
    raise ActorConfigError(f"no launcher runs servers of kind {kind!r}.")
