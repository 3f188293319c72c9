"""What container a NIM or vLLM spec becomes: image, command, env, mounts, GPU, limits, labels.

Building the plan resolves secrets and fetches LoRA adapters but talks to no Docker engine, so
the exact arguments given to the SDK can be checked without one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nimflow import _config
from nimflow._exceptions import ActorConfigError, SecretMissingError
from nimflow.actors.servers import NIM, VLLM, Container, parse_quantity
from nimflow.secrets import get_secret

__all__ = ["LABEL_PREFIX", "ContainerPlan", "container_name", "plan_container"]

LABEL_PREFIX = "nimflow."
NIM_CACHE = "/opt/nim/.cache"
HF_CACHE = "/root/.cache/huggingface"
NGC_REGISTRY = "nvcr.io"


@dataclass
class ContainerPlan:
    """Everything needed to run one replica. `env` holds secret values: never log or label it."""

    actor: str
    replica: int
    name: str
    image: str
    port: int  # where the server answers on 127.0.0.1
    labels: dict[str, str]
    env: dict[str, str] = field(repr=False)
    command: list[str] | None = None
    mounts: dict[str, dict[str, str]] = field(default_factory=dict)  # host path -> {"bind", "mode"}
    gpu: int | str = 0  # count, or "all"
    gpu_ids: tuple[str, ...] = ()  # this replica's own GPUs, placed by the pool
    shm_size: int | None = None
    mem_limit: int | None = None
    nano_cpus: int | None = None
    user: str | None = None
    host_network: bool = True
    container_port: int = 8000  # only with a bridge network
    login: tuple[str, str, str] | None = field(default=None, repr=False)  # registry, user, secret name
    pull: bool = True


def container_name(actor: str, replica: int) -> str:
    return f"nimflow-{actor}-{replica}"


def labels_for(
    actor: str, replica: int, config_hash: str, port: int, ttl: float, model: str, gpus: tuple[str, ...] = ()
) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}gpus": ",".join(gpus),
        f"{LABEL_PREFIX}actor": actor,
        f"{LABEL_PREFIX}replica": str(replica),
        f"{LABEL_PREFIX}config": config_hash,
        f"{LABEL_PREFIX}port": str(port),
        f"{LABEL_PREFIX}ttl": f"{ttl:g}",
        f"{LABEL_PREFIX}model": model,
    }


def alternatives(actor: str) -> str:
    """How to run a pipeline without a local GPU server."""
    return (
        f"To run without it, serve the actor another way: `nimflow run ... --server {actor}=fake` "
        f"(the fake OpenAI server) or `--server {actor}=endpoint:URL` (a server that already runs)."
    )


def _secret(actor: str, name: str) -> str:
    try:
        return get_secret(name, needed_by=f"actor {actor!r}")
    except SecretMissingError:
        raise SecretMissingError(name, f"actor {actor!r}", alternatives(actor)) from None


def fetch_adapters(repo_ids: tuple[str, ...], folder: Path, token: str) -> None:
    """Download each LoRA adapter repo into folder/<last part of the repo id>, once."""
    if importlib.util.find_spec("huggingface_hub") is None:
        raise ActorConfigError(
            f"downloading the LoRA adapters {list(repo_ids)} needs huggingface_hub, which is not installed: "
            "`pip install huggingface_hub`, or put the adapters yourself into " + str(folder)
        )
    from huggingface_hub import snapshot_download  # type: ignore[import-not-found, unused-ignore]

    for repo in repo_ids:
        target = folder / repo.rstrip("/").split("/")[-1]
        if target.is_dir() and any(target.iterdir()):
            continue
        target.mkdir(parents=True, exist_ok=True)
        snapshot_download(repo_id=repo, local_dir=str(target), token=token)


# Replaced in tests to check the LoRA path without the network.
Fetcher = Callable[[tuple[str, ...], Path, str], None]


def plan_container(
    actor: str,
    replica: int,
    spec: NIM | VLLM | Container,
    *,
    port: int,
    ttl: float,
    host_network: bool,
    home: Path | None = None,
    fetch: Fetcher | None = None,
    gpus: tuple[str, ...] = (),
    dry_run: bool = False,
) -> ContainerPlan:
    """`dry_run` (for `nimflow actors plan`): secrets are not read (their values are left empty),
    adapters not fetched, folders not made."""
    home = home or _config.home()
    model = spec.model_name() or (spec.default_model_name() if isinstance(spec, NIM) else "")
    plan = ContainerPlan(
        actor=actor,
        replica=replica,
        name=container_name(actor, replica),
        image=spec.image,
        port=port,
        labels=labels_for(actor, replica, spec.config_hash(), port, ttl, model, gpus),
        env=dict(spec.env),
        gpu=spec.gpu,
        gpu_ids=gpus,
        shm_size=parse_quantity(spec.shm_size),
        mem_limit=parse_quantity(spec.mem),
        nano_cpus=int(spec.cpu * 1e9) if spec.cpu else None,
        host_network=host_network,
        pull=spec.pull,
    )
    secret = (lambda name: "") if dry_run else (lambda name: _secret(actor, name))
    if isinstance(spec, NIM):
        _plan_nim(plan, spec, home, fetch or fetch_adapters, secret, dry_run)
    elif isinstance(spec, VLLM):
        _plan_vllm(plan, spec, home, secret, dry_run)
    else:
        _plan_container(plan, spec, secret)
    return plan


def _plan_container(plan: ContainerPlan, spec: Container, secret: Callable[[str], str]) -> None:
    if plan.host_network and plan.replica > 0 and not spec.follows_port():
        raise ActorConfigError(
            f"actor {plan.actor!r}: under host networking each replica of {spec.image} needs its own port, "
            "and nothing tells the server which: write {port} in args (e.g. args=['--port', '{port}']) or "
            "name the env var the image reads its port from (port_env='PORT')."
        )
    listen = plan.port if plan.host_network else (spec.port or 8000)
    plan.container_port = listen
    plan.command = spec.argv(listen)
    if spec.port_env:
        plan.env[spec.port_env] = str(listen)
    for name in spec.secrets:
        plan.env[name] = secret(name)
    for host, target in spec.volumes.items():
        plan.mounts[host] = {"bind": target, "mode": "rw"}
    plan.labels = {**spec.labels, **plan.labels}  # nimflow's own win (their prefix is refused anyway)


def _plan_nim(
    plan: ContainerPlan, spec: NIM, home: Path, fetch: Fetcher, secret: Callable[[str], str], dry_run: bool
) -> None:
    if spec.secrets.ngc_api_key:
        plan.env["NGC_API_KEY"] = secret(spec.secrets.ngc_api_key)
        if spec.image.startswith(NGC_REGISTRY + "/"):
            plan.login = (NGC_REGISTRY, "$oauthtoken", spec.secrets.ngc_api_key)
    hf_token: str | None = None
    if spec.secrets.hf_token and (spec.hf_repo_ids or _has(spec.secrets.hf_token)):
        hf_token = secret(spec.secrets.hf_token)
        plan.env["HF_TOKEN"] = hf_token
    # The model download survives restarts: a host folder, shared by every NIM of this home.
    cache = home / "cache" / "nim"
    if not dry_run:
        cache.mkdir(parents=True, exist_ok=True)
    plan.mounts[str(cache)] = {"bind": NIM_CACHE, "mode": "rw"}
    if spec.hf_repo_ids:
        peft = spec.env["NIM_PEFT_SOURCE"]
        folder = home / "loras" / plan.actor
        if not dry_run:
            folder.mkdir(parents=True, exist_ok=True)
            assert hf_token is not None
            fetch(tuple(spec.hf_repo_ids), folder, hf_token)
        plan.mounts[str(folder)] = {"bind": peft, "mode": "ro"}
    # NIM images run as an unprivileged user; run as the caller so the cache stays writable.
    plan.user = _uid()
    plan.container_port = 8000
    if plan.host_network:
        plan.env["NIM_SERVER_PORT"] = str(plan.port)
    if spec.model:
        plan.env.setdefault("NIM_SERVED_MODEL_NAME", spec.model)


def _plan_vllm(
    plan: ContainerPlan, spec: VLLM, home: Path, secret: Callable[[str], str], dry_run: bool
) -> None:
    if spec.hf_token:
        token = secret(spec.hf_token)
        plan.env["HF_TOKEN"] = token
        plan.env["HUGGING_FACE_HUB_TOKEN"] = token
    cache = home / "cache" / "huggingface"
    if not dry_run:
        cache.mkdir(parents=True, exist_ok=True)
    plan.mounts[str(cache)] = {"bind": HF_CACHE, "mode": "rw"}
    listen_port = plan.port if plan.host_network else plan.container_port
    # With host networking the server must bind loopback itself; in a bridge network it binds all
    # of the container's interfaces and only 127.0.0.1 of the host is published.
    host = "127.0.0.1" if plan.host_network else "0.0.0.0"
    command = ["--model", spec.model, "--host", host, "--port", str(listen_port), *spec.args]
    if spec.lora_modules:
        command += ["--enable-lora", "--lora-modules"]
        command += [f"{name}={path}" for name, path in spec.lora_modules.items()]
    plan.command = command


def _has(name: str) -> bool:
    from nimflow.secrets import has_secret

    return has_secret(name)


def _uid() -> str | None:
    import os

    return str(os.getuid()) if hasattr(os, "getuid") else None


def run_kwargs(plan: ContainerPlan) -> dict[str, Any]:
    """The keyword arguments for `client.containers.run` (device requests built by the caller's SDK)."""
    kwargs: dict[str, Any] = {
        "image": plan.image,
        "name": plan.name,
        "detach": True,
        "init": True,  # PID 1 forwards SIGTERM, so stop() is quick
        "labels": dict(plan.labels),
        "environment": dict(plan.env),
        "volumes": {k: dict(v) for k, v in plan.mounts.items()},
    }
    if plan.command is not None:
        kwargs["command"] = list(plan.command)
    if plan.host_network:
        kwargs["network_mode"] = "host"
    else:
        kwargs["ports"] = {f"{plan.container_port}/tcp": ("127.0.0.1", plan.port)}
    if plan.shm_size:
        kwargs["shm_size"] = plan.shm_size
    if plan.mem_limit:
        kwargs["mem_limit"] = plan.mem_limit
    if plan.nano_cpus:
        kwargs["nano_cpus"] = plan.nano_cpus
    if plan.user:
        kwargs["user"] = plan.user
    return kwargs
