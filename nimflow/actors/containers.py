"""What container a NIM or vLLM spec becomes: image, command, env, mounts, GPU, limits, labels.

Building the plan resolves secrets and fetches LoRA adapters but talks to no Docker engine, so
the exact arguments given to the SDK can be checked without one.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nimflow import _config
from nimflow._exceptions import ActorConfigError, SecretMissingError
from nimflow.actors.servers import NIM, VLLM, parse_quantity
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
    shm_size: int | None = None
    mem_limit: int | None = None
    nano_cpus: int | None = None
    user: str | None = None
    host_network: bool = True
    container_port: int = 8000  # only with a bridge network
    login: tuple[str, str, str] | None = field(default=None, repr=False)  # registry, user, secret name
    pull: bool = True

    def secret_values(self) -> list[str]:
        """Values to scrub from anything shown to the user (logs of a failed start, errors)."""
        from nimflow.secrets import get_secret as _get

        values = [v for k, v in self.env.items() if k in _SECRET_ENV]
        if self.login:
            with contextlib.suppress(SecretMissingError):
                values.append(_get(self.login[2]))
        return [v for v in values if len(v) >= 4]


_SECRET_ENV = {"NGC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}


def container_name(actor: str, replica: int) -> str:
    return f"nimflow-{actor}-{replica}"


def labels_for(
    actor: str, replica: int, config_hash: str, port: int, ttl: float, model: str
) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}actor": actor,
        f"{LABEL_PREFIX}replica": str(replica),
        f"{LABEL_PREFIX}config": config_hash,
        f"{LABEL_PREFIX}port": str(port),
        f"{LABEL_PREFIX}ttl": f"{ttl:g}",
        f"{LABEL_PREFIX}model": model,
    }


def _secret(actor: str, name: str) -> str:
    try:
        return get_secret(name, needed_by=f"actor {actor!r}")
    except SecretMissingError:
        hint = f"Or serve it without one: --server {actor}=fake (the fake server) or --server {actor}=endpoint:URL."
        raise SecretMissingError(name, f"actor {actor!r}", hint) from None


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
    spec: NIM | VLLM,
    *,
    port: int,
    ttl: float,
    host_network: bool,
    home: Path | None = None,
    fetch: Fetcher | None = None,
) -> ContainerPlan:
    home = home or _config.home()
    model = spec.model_name() or (spec.default_model_name() if isinstance(spec, NIM) else "")
    plan = ContainerPlan(
        actor=actor,
        replica=replica,
        name=container_name(actor, replica),
        image=spec.image,
        port=port,
        labels=labels_for(actor, replica, spec.config_hash(), port, ttl, model),
        env=dict(spec.env),
        gpu=spec.gpu,
        shm_size=parse_quantity(spec.shm_size),
        mem_limit=parse_quantity(spec.mem),
        nano_cpus=int(spec.cpu * 1e9) if spec.cpu else None,
        host_network=host_network,
        pull=spec.pull,
    )
    if isinstance(spec, NIM):
        _plan_nim(plan, spec, home, fetch or fetch_adapters)
    else:
        _plan_vllm(plan, spec, home)
    return plan


def _plan_nim(plan: ContainerPlan, spec: NIM, home: Path, fetch: Fetcher) -> None:
    actor = plan.actor
    if spec.secrets.ngc_api_key:
        plan.env["NGC_API_KEY"] = _secret(actor, spec.secrets.ngc_api_key)
        if spec.image.startswith(NGC_REGISTRY + "/"):
            plan.login = (NGC_REGISTRY, "$oauthtoken", spec.secrets.ngc_api_key)
    hf_token: str | None = None
    if spec.secrets.hf_token and (spec.hf_repo_ids or _has(spec.secrets.hf_token)):
        hf_token = _secret(actor, spec.secrets.hf_token)
        plan.env["HF_TOKEN"] = hf_token
    # The model download survives restarts: a host folder, shared by every NIM of this home.
    cache = home / "cache" / "nim"
    cache.mkdir(parents=True, exist_ok=True)
    plan.mounts[str(cache)] = {"bind": NIM_CACHE, "mode": "rw"}
    if spec.hf_repo_ids:
        peft = spec.env["NIM_PEFT_SOURCE"]
        folder = home / "loras" / actor
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


def _plan_vllm(plan: ContainerPlan, spec: VLLM, home: Path) -> None:
    if spec.hf_token:
        token = _secret(plan.actor, spec.hf_token)
        plan.env["HF_TOKEN"] = token
        plan.env["HUGGING_FACE_HUB_TOKEN"] = token
    cache = home / "cache" / "huggingface"
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
