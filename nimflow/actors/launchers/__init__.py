"""Launchers start, find, watch and stop model server replicas: docker, process, endpoint."""

from nimflow.actors.launchers.base import Launcher, Progress, ReplicaInfo, free_port, port_is_free

__all__ = ["Launcher", "Progress", "ReplicaInfo", "free_port", "port_is_free"]
