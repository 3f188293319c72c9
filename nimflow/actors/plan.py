"""`nimflow actors plan`: what `nimflow run` would start for each actor, without starting it.

Secrets are never read: environment variables are listed by name only. GPU ids are placed as
a run would place them now (NIMFLOW_GPUS or NVML, minus the GPUs warm replicas hold). An actor
placed on Ray gets no local GPUs: the plan says what each replica asks of the cluster instead,
without connecting to it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from nimflow._exceptions import ActorError, NimflowError
from nimflow._redact import redact
from nimflow._store import Store
from nimflow.actors.containers import plan_container, run_kwargs
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.launchers.ray import NAMESPACE, Ray, replica_options, runs_on_ray
from nimflow.actors.overrides import ActorOverride, resolve_server
from nimflow.actors.placement import assign_gpus
from nimflow.actors.servers import NIM, VLLM, Container, FakeOpenAI, LocalProcess, OpenAIEndpoint, ServerSpec

__all__ = ["HOST_NETWORK_NIM", "plan_actors"]

HOST_NETWORK_NIM = (
    "NIM under host networking listens on every interface of the host: it cannot be bound to "
    "127.0.0.1 only (its images take a port, not an address); firewall the port, or run the engine "
    "with a bridge network so the port is published on 127.0.0.1."
)


def _host_network() -> tuple[bool, str]:
    choice = os.environ.get("NIMFLOW_DOCKER_NETWORK", "").lower()
    if choice in ("host", "bridge"):
        return choice == "host", "NIMFLOW_DOCKER_NETWORK"
    from nimflow.actors.launchers.docker import DockerLauncher

    try:
        return DockerLauncher().host_network(), "the Docker engine"
    except ActorError:
        return False, "assumed: no Docker engine answers"


def plan_actors(
    envs: Iterable[ActorEnvironment], overrides: Mapping[str, ActorOverride], store: Store
) -> list[dict[str, Any]]:
    plans = []
    for env in envs:
        spec = resolve_server(env.server, overrides.get(env.name), env.name)
        plans.append(_plan(env, spec, store))
    return plans


def _plan(env: ActorEnvironment, spec: ServerSpec, store: Store) -> dict[str, Any]:
    base: dict[str, Any] = {
        "actor": env.name,
        "server": spec.describe(),
        "replicas": env.replica_count,
        "ttl_seconds": env.ttl_seconds,
        "request_timeout": env.request_timeout,
        "model": spec.model_name(),
        "adapters": list(spec.adapters()),
        "health_endpoint": spec.health_endpoint,
        "notes": [],
    }
    if env.scales:  # "replicas" is the max: what the plan makes room for
        base.update(min_replicas=env.min_replicas, scaledown_seconds=env.scaledown_seconds)
    if isinstance(spec, OpenAIEndpoint):
        base.update(kind="endpoint", url=redact(spec.base_url), api_key_secret=spec.api_key_name)
        base["notes"].append("an endpoint that already runs: nothing is started")
        return base
    if isinstance(spec, FakeOpenAI):
        base.update(kind="fake", command="nimflow fake server (a subprocess, answers are not from a model)")
        if env.placement is not None:
            base["notes"].append("a fake server runs on this machine even with a Ray placement")
        return base
    if env.placement is not None:
        return _plan_ray(env, spec, env.placement, base)
    if isinstance(spec, LocalProcess):
        base.update(
            kind="process",
            command=shlex.join(spec.argv()),
            env=sorted(spec.env),
            ports=[_port(spec, i) for i in range(env.replica_count)],
        )
        return base
    assert isinstance(spec, NIM | VLLM | Container)
    host_network, network_source = _host_network()
    try:
        gpus = assign_gpus(store, env.name, spec, list(range(env.replica_count)), {})
    except NimflowError as exc:
        gpus = {}
        base["notes"].append(f"GPU placement would fail: {exc}")
    replicas = []
    for index in range(env.replica_count):
        port = spec.base_port() + index if spec.base_port() else 0
        plan = plan_container(
            env.name, index, spec, port=port, ttl=env.ttl_seconds, host_network=host_network,
            gpus=gpus.get(index, ()), dry_run=True,
        )  # fmt: skip
        kwargs = run_kwargs(plan)
        replicas.append(
            {
                "name": plan.name,
                "port": port or "a free port, chosen at start",
                "gpu_device_ids": list(plan.gpu_ids) or ("all" if plan.gpu == "all" else []),
                "labels": kwargs["labels"],
            }
        )
        if index == 0:
            base.update(
                kind="container",
                image=plan.image,
                command=plan.command,
                env=sorted(plan.env),  # names only: values are never shown
                mounts={host: f"{m['bind']} ({m['mode']})" for host, m in plan.mounts.items()},
                shm_size=plan.shm_size,
                mem_limit=plan.mem_limit,
                nano_cpus=plan.nano_cpus,
                user=plan.user,
                network_mode=("host" if host_network else "bridge") + f" ({network_source})",
            )
    base["containers"] = replicas
    if isinstance(spec, NIM) and host_network:
        base["notes"].append(HOST_NETWORK_NIM)
    return base


def _plan_ray(
    env: ActorEnvironment, spec: ServerSpec, placement: Ray, base: dict[str, Any]
) -> dict[str, Any]:
    """The replicas go to the Ray cluster: what each asks of it, and what runs on the node."""
    base.update(
        kind="ray",
        ray_address=redact(placement.resolved_address()),
        ray_address_from=placement.address_source(),
        ray_namespace=NAMESPACE,
    )
    if not runs_on_ray(spec):
        base["notes"].append(
            f"a Ray placement runs NIM, VLLM, Container and LocalProcess servers, not {spec.describe()}"
        )
        return base
    try:
        options = replica_options(spec)
    except NimflowError as exc:
        options = {}
        base["notes"].append(f"Ray placement would fail: {exc}")
    # On the node Ray picks: a subprocess, or a container through that node's Docker engine.
    if isinstance(spec, LocalProcess):
        base.update(runs="process", command=shlex.join(spec.argv()), env=sorted(spec.env))
    else:
        assert isinstance(spec, NIM | VLLM | Container)
        plan = plan_container(
            env.name, 0, spec, port=spec.base_port(), ttl=env.ttl_seconds, host_network=False, dry_run=True
        )
        base.update(
            runs="container", image=plan.image, command=plan.command, env=sorted(plan.env),
            shm_size=plan.shm_size,
        )  # fmt: skip
    base["ray_replicas"] = [
        {
            "name": f"{env.name}:{index}:<token, new at each start>",
            "asks_ray_for": options,
            "port": _port(spec, index) if spec.base_port() else "a free port on its node, chosen at start",
            "gpus": f"{options.get('num_gpus', 0)} of the node Ray picks (no GPU of this machine)",
        }
        for index in range(env.replica_count)
    ]
    base["notes"].append(
        "replicas run as detached Ray actors (SPREAD over the nodes); nothing here connected to the cluster"
    )
    return base


def _port(spec: ServerSpec, index: int) -> int | str:
    return spec.base_port() + index if spec.base_port() else "a free port, chosen at start"
