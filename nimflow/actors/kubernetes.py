"""The Kubernetes objects an actor's replicas would be: a Deployment and a Service per replica.

Built with the official client's models (so a missing required field fails here, not in the
cluster) and turned into plain dicts by its serializer. The pod follows the pod template the NIM
plugin builds: the NGC image-pull secret, NGC_API_KEY from a Secret, /dev/shm as a memory
emptyDir of `shm_size`, an emptyDir at /opt/nim/.cache, an init container that downloads the LoRA
adapters into the NIM_PEFT_SOURCE volume, a startup probe with a high failure threshold on the
health endpoint, and GPU/CPU/memory requests equal to their limits. Secrets appear by name only.

The labels are what a launcher adopts by, as the Docker labels are: actor, replica, config hash.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimflow._exceptions import ActorConfigError
from nimflow.actors.containers import HF_CACHE, LABEL_PREFIX, NGC_REGISTRY, NIM_CACHE
from nimflow.actors.servers import NIM, VLLM, OpenAIEndpoint, ServerSpec, parse_quantity

if TYPE_CHECKING:
    from nimflow.actors.environment import ActorEnvironment

__all__ = ["IMAGE_PULL_SECRET", "LORA_IMAGE", "manifests", "plan_text", "secret_ref"]

IMAGE_PULL_SECRET = "ngc-registry"  # kubectl create secret docker-registry ngc-registry ...
LORA_IMAGE = "python:3.12-alpine"
CONTAINER_PORT = 8000
PROBE_PERIOD = 10  # seconds
MIN_FAILURE_THRESHOLD = 100  # the model download and load take a long time on the first start
MANAGED_BY = {"app.kubernetes.io/managed-by": "nimflow"}


def _client() -> Any:
    if importlib.util.find_spec("kubernetes") is None:
        raise ActorConfigError(
            "printing Kubernetes objects needs the kubernetes client: `pip install 'nimflow[kubernetes]'`."
        )
    from kubernetes import client

    return client


def secret_ref(name: str) -> tuple[str, str]:
    """A nimflow secret name as a Kubernetes Secret (name, key): NGC_API_KEY -> (ngc-api-key, NGC_API_KEY)."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-"), name


def _object_name(actor: str, replica: int) -> str:
    # Kubernetes names are DNS labels: lowercase letters, digits and '-'.
    base = re.sub(r"[^a-z0-9-]+", "-", actor.lower()).strip("-")
    return f"nimflow-{base}-{replica}"[:63].rstrip("-")


def _labels(actor: str, replica: int, spec: ServerSpec) -> dict[str, str]:
    return {
        **MANAGED_BY,
        f"{LABEL_PREFIX}actor": actor,
        f"{LABEL_PREFIX}replica": str(replica),
        f"{LABEL_PREFIX}config": spec.config_hash(),
    }


def _annotations(env: ActorEnvironment, spec: NIM | VLLM) -> dict[str, str]:
    # Values a label cannot hold (a model name has '/'), still read back on adoption.
    model = spec.model_name() or (spec.default_model_name() if isinstance(spec, NIM) else "")
    return {f"{LABEL_PREFIX}model": model, f"{LABEL_PREFIX}ttl": f"{env.ttl_seconds:g}"}


def _secret_env(client: Any, env_name: str, secret: str) -> Any:
    name, key = secret_ref(secret)
    return client.V1EnvVar(
        name=env_name,
        value_from=client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name=name, key=key)),
    )


def _resources(client: Any, spec: NIM | VLLM) -> Any:
    if spec.gpu == "all":
        raise ActorConfigError(
            f"{spec.describe()}: gpu='all' has no meaning in a Kubernetes pod; give a number of GPUs."
        )
    amounts: dict[str, str] = {"cpu": f"{spec.cpu:g}" if spec.cpu else "1"}
    mem = parse_quantity(spec.mem)
    if mem:
        amounts["memory"] = _quantity(mem)
    if spec.gpu:
        amounts["nvidia.com/gpu"] = str(spec.gpu)
    # Requests equal to limits: the Guaranteed class, so the pod is the last to be evicted.
    return client.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def _quantity(size: int) -> str:
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _probe(client: Any, spec: NIM | VLLM, *, startup: bool) -> Any:
    threshold = max(MIN_FAILURE_THRESHOLD, math.ceil(spec.startup_timeout / PROBE_PERIOD)) if startup else 3
    return client.V1Probe(
        http_get=client.V1HTTPGetAction(path=spec.health_endpoint or "/", port="http"),
        period_seconds=PROBE_PERIOD,
        failure_threshold=threshold,
    )


def _lora_init(client: Any, spec: NIM, peft: str) -> Any:
    downloads = "".join(
        f'mkdir -p "$LOCAL_PEFT_DIRECTORY/{repo.rstrip("/").split("/")[-1]}" && '
        f'hf download {repo} --local-dir "$LOCAL_PEFT_DIRECTORY/{repo.rstrip("/").split("/")[-1]}"\n'
        for repo in spec.hf_repo_ids
    )
    script = (
        "set -e\n"
        'pip install --quiet "huggingface_hub[cli]"\n'
        f"export LOCAL_PEFT_DIRECTORY={peft}\n"
        f"{downloads}"
        'chmod -R a+rX "$LOCAL_PEFT_DIRECTORY"\n'
    )
    assert spec.secrets.hf_token is not None  # NIM checks this when hf_repo_ids are given
    return client.V1Container(
        name="download-loras",
        image=LORA_IMAGE,
        command=["sh", "-c", script],
        env=[_secret_env(client, "HF_TOKEN", spec.secrets.hf_token)],
        resources=client.V1ResourceRequirements(
            requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"}
        ),
        volume_mounts=[client.V1VolumeMount(name="lora", mount_path=peft)],
    )


def _pod_spec(client: Any, spec: NIM | VLLM) -> Any:
    env = [client.V1EnvVar(name=k, value=v) for k, v in sorted(spec.env.items())]
    volumes = []
    mounts = []
    shm = parse_quantity(spec.shm_size)
    if shm:
        volumes.append(
            client.V1Volume(
                name="dshm",
                empty_dir=client.V1EmptyDirVolumeSource(medium="Memory", size_limit=_quantity(shm)),
            )
        )
        mounts.append(client.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    init_containers = []
    pull_secrets = None
    args = None
    if isinstance(spec, NIM):
        if spec.secrets.ngc_api_key:
            env.insert(0, _secret_env(client, "NGC_API_KEY", spec.secrets.ngc_api_key))
            if spec.image.startswith(NGC_REGISTRY + "/"):
                pull_secrets = [client.V1LocalObjectReference(name=IMAGE_PULL_SECRET)]
        if spec.model:
            env.append(client.V1EnvVar(name="NIM_SERVED_MODEL_NAME", value=spec.model))
        volumes.append(client.V1Volume(name="nim-cache", empty_dir=client.V1EmptyDirVolumeSource()))
        mounts.append(client.V1VolumeMount(name="nim-cache", mount_path=NIM_CACHE))
        if spec.hf_repo_ids:
            peft = spec.env["NIM_PEFT_SOURCE"]
            volumes.append(client.V1Volume(name="lora", empty_dir=client.V1EmptyDirVolumeSource()))
            mounts.append(client.V1VolumeMount(name="lora", mount_path=peft, read_only=True))
            init_containers.append(_lora_init(client, spec, peft))
    else:
        if spec.hf_token:
            env.insert(0, _secret_env(client, "HF_TOKEN", spec.hf_token))
        volumes.append(client.V1Volume(name="hf-cache", empty_dir=client.V1EmptyDirVolumeSource()))
        mounts.append(client.V1VolumeMount(name="hf-cache", mount_path=HF_CACHE))
        args = ["--model", spec.model, "--host", "0.0.0.0", "--port", str(CONTAINER_PORT), *spec.args]
        if spec.lora_modules:
            args += ["--enable-lora", "--lora-modules", *(f"{k}={v}" for k, v in spec.lora_modules.items())]
    server = client.V1Container(
        name="model-server",
        image=spec.image,
        args=args,
        ports=[client.V1ContainerPort(name="http", container_port=CONTAINER_PORT)],
        env=env or None,
        resources=_resources(client, spec),
        volume_mounts=mounts,
        startup_probe=_probe(client, spec, startup=True),
        readiness_probe=_probe(client, spec, startup=False),
    )
    return client.V1PodSpec(
        containers=[server],
        init_containers=init_containers or None,
        image_pull_secrets=pull_secrets,
        volumes=volumes,
        # NIM images run as an unprivileged user; the group owns the emptyDirs so it can write them.
        security_context=client.V1PodSecurityContext(run_as_user=1000, run_as_group=1000, fs_group=1000)
        if isinstance(spec, NIM)
        else None,
    )


def manifests(env: ActorEnvironment, spec: ServerSpec | None = None) -> list[dict[str, Any]]:
    """The objects for every replica of `env` (served by `spec`, default its server), as dicts."""
    spec = env.server if spec is None else spec
    if isinstance(spec, OpenAIEndpoint):
        return []  # it already runs: nothing to create
    if not isinstance(spec, NIM | VLLM):
        raise ActorConfigError(
            f"actor {env.name!r}: {spec.describe()} has no image to run in a pod; Kubernetes replicas "
            "are NIM or VLLM servers."
        )
    client = _client()
    objects: list[Any] = []
    for replica in range(env.replica_count):
        name = _object_name(env.name, replica)
        labels = _labels(env.name, replica, spec)
        selector = {f"{LABEL_PREFIX}actor": env.name, f"{LABEL_PREFIX}replica": str(replica)}
        meta = client.V1ObjectMeta(name=name, labels=labels, annotations=_annotations(env, spec))
        objects.append(
            client.V1Deployment(
                api_version="apps/v1",
                kind="Deployment",
                metadata=meta,
                spec=client.V1DeploymentSpec(
                    replicas=1,
                    selector=client.V1LabelSelector(match_labels=selector),
                    # One GPU set per replica: never two pods of a replica at once during a rollout.
                    strategy=client.V1DeploymentStrategy(type="Recreate"),
                    template=client.V1PodTemplateSpec(
                        metadata=client.V1ObjectMeta(labels=labels, annotations=_annotations(env, spec)),
                        spec=_pod_spec(client, spec),
                    ),
                ),
            )
        )
        objects.append(
            client.V1Service(
                api_version="v1",
                kind="Service",
                metadata=client.V1ObjectMeta(name=name, labels=labels),
                spec=client.V1ServiceSpec(
                    selector=selector,
                    ports=[client.V1ServicePort(name="http", port=CONTAINER_PORT, target_port="http")],
                ),
            )
        )
    serialized: list[dict[str, Any]] = client.ApiClient().sanitize_for_serialization(objects)
    return serialized


def plan_text(file: Path, workflow: str | None = None) -> str:
    """YAML documents for every actor a workflow file uses (what `nimflow actors kubernetes` prints)."""
    import yaml

    from nimflow._loader import pick_workflow
    from nimflow.actors.environment import ActorEnvironment

    wf = pick_workflow(file, workflow)
    envs = {n.task.actor.name: n.task.actor for n in wf.build() if isinstance(n.task.actor, ActorEnvironment)}
    parts = []
    for name, env in sorted(envs.items()):
        parts.append(f"# actor {name}: {env.server.describe()}, {env.replica_count} replica(s)\n")
        if isinstance(env.server, OpenAIEndpoint):
            parts.append("# an endpoint that already runs: nothing to create\n")
            continue
        objects = manifests(env)
        parts.append(yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True))
    return "".join(parts) if parts else "# this workflow uses no actors\n"
