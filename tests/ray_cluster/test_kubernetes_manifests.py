"""`manifests(env)` against the pod template the NIM plugin documents, field by field, and the
`nimflow actors kubernetes FILE` command that prints them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nimflow as nf
from nimflow._exceptions import ActorConfigError
from nimflow.actors.kubernetes import manifests, secret_ref

pytest.importorskip(
    "kubernetes", reason="the kubernetes client is not installed: pip install 'nimflow[kubernetes]'"
)

NIM_IMAGE = "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"


def nim_actor(**kwargs: Any) -> nf.ActorEnvironment:
    server = nf.NIM(
        image=NIM_IMAGE,
        secrets=nf.NIMSecrets(ngc_api_key="NGC_API_KEY", hf_token="HF_TOKEN"),
        hf_repo_ids=["Samhita/OrpoLlama-3-8B-Instruct"],
        env={"NIM_PEFT_SOURCE": "/home/nvs/loras"},
        gpu=1, cpu=2, mem="20Gi", shm_size="16Gi",
    )  # fmt: skip
    return nf.ActorEnvironment(
        name="nim_actor", server=server, **{"replica_count": 2, "ttl_seconds": 900, **kwargs}
    )


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_nim_replicas_become_a_deployment_and_a_service_each_with_the_plugin_pod_template() -> None:
    objects = manifests(nim_actor())
    deployments, services = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    assert [d["metadata"]["name"] for d in deployments] == ["nimflow-nim-actor-0", "nimflow-nim-actor-1"]
    assert [s["metadata"]["name"] for s in services] == ["nimflow-nim-actor-0", "nimflow-nim-actor-1"]
    assert {o["kind"] for o in objects} == {"Deployment", "Service"}  # Secrets are referenced, not made

    deployment = deployments[1]
    assert deployment["apiVersion"] == "apps/v1" and deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    labels = deployment["metadata"]["labels"]
    config = nim_actor().server.config_hash()
    assert labels == {
        "app.kubernetes.io/managed-by": "nimflow",
        "nimflow.actor": "nim_actor",
        "nimflow.replica": "1",
        "nimflow.config": config,
    }
    assert deployment["metadata"]["annotations"] == {
        "nimflow.model": "meta/llama3-8b-instruct",
        "nimflow.ttl": "900",
    }
    selector = {"nimflow.actor": "nim_actor", "nimflow.replica": "1"}
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"] == labels

    pod = template["spec"]
    assert pod["imagePullSecrets"] == [{"name": "ngc-registry"}]
    assert pod["securityContext"] == {"fsGroup": 1000, "runAsGroup": 1000, "runAsUser": 1000}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}
    assert volumes["nim-cache"] == {"name": "nim-cache", "emptyDir": {}}
    assert volumes["lora"] == {"name": "lora", "emptyDir": {}}

    (server,) = pod["containers"]
    assert server["name"] == "model-server" and server["image"] == NIM_IMAGE
    assert server["ports"] == [{"name": "http", "containerPort": 8000}]
    env = {e["name"]: e for e in server["env"]}
    assert env["NGC_API_KEY"] == {
        "name": "NGC_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "ngc-api-key", "key": "NGC_API_KEY"}},
    }
    assert env["NIM_PEFT_SOURCE"] == {"name": "NIM_PEFT_SOURCE", "value": "/home/nvs/loras"}
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    assert mounts["nim-cache"]["mountPath"] == "/opt/nim/.cache"
    assert mounts["lora"] == {"name": "lora", "mountPath": "/home/nvs/loras", "readOnly": True}
    amounts = {"cpu": "2", "memory": "20Gi", "nvidia.com/gpu": "1"}
    assert server["resources"] == {"requests": amounts, "limits": amounts}
    startup = server["startupProbe"]
    assert startup["httpGet"] == {"path": "/v1/health/ready", "port": "http"}
    assert (
        startup["failureThreshold"] >= 100 and startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    )
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"

    (init,) = pod["initContainers"]
    assert init["name"] == "download-loras"
    assert init["volumeMounts"] == [{"name": "lora", "mountPath": "/home/nvs/loras"}]
    assert init["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}}
    ]
    script = init["command"][-1]
    assert init["command"][:2] == ["sh", "-c"]
    assert (
        "Samhita/OrpoLlama-3-8B-Instruct" in script
        and '"$LOCAL_PEFT_DIRECTORY/OrpoLlama-3-8B-Instruct"' in script
    )
    assert "export LOCAL_PEFT_DIRECTORY=/home/nvs/loras" in script

    service = services[1]
    assert service["metadata"]["labels"] == labels
    assert service["spec"] == {
        "selector": selector,
        "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
    }


def test_no_secret_value_ever_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGC_API_KEY", "nvapi-very-secret-value")
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret_value")
    text = repr(manifests(nim_actor()))
    assert "very-secret" not in text and "very_secret" not in text


def test_vllm_without_lora_or_ngc_has_no_init_container_or_pull_secret() -> None:
    server = nf.VLLM(model="Qwen/Qwen2.5-0.5B-Instruct", args=["--dtype=half"], gpu=1, mem="16Gi")
    objects = manifests(nf.ActorEnvironment("vllm", server=server))
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod and "imagePullSecrets" not in pod
    (container,) = pod["containers"]
    assert container["args"] == [
        "--model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--dtype=half",
    ]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}}
    ]
    assert {v["name"] for v in pod["volumes"]} == {"dshm", "hf-cache"}


def test_what_has_no_pod_says_so() -> None:
    assert manifests(nf.ActorEnvironment("ep", server=nf.OpenAIEndpoint("http://127.0.0.1:9/v1"))) == []
    with pytest.raises(ActorConfigError, match="no image"):
        manifests(nf.ActorEnvironment("proc", server=nf.LocalProcess("serve --port {port}")))
    with pytest.raises(ActorConfigError, match="number of GPUs"):
        manifests(nf.ActorEnvironment("all", server=nf.VLLM(model="m", gpu="all")))
    assert secret_ref("NGC_API_KEY") == ("ngc-api-key", "NGC_API_KEY")


def test_the_cli_prints_yaml_for_every_actor_of_a_file(tmp_path: Path) -> None:
    import yaml

    pipeline = tmp_path / "pipe.py"
    pipeline.write_text(
        "import nimflow as nf\n"
        "nim = nf.NIM(image='nvcr.io/nim/meta/llama3-8b-instruct:1.0.0')\n"
        "actor = nf.ActorEnvironment('nim-actor', server=nim, replica_count=2)\n"
        "@actor.task\n"
        "def ask(q: str) -> str:\n"
        "    return q\n"
        "@nf.workflow\n"
        "def wf(q: str = 'x') -> str:\n"
        "    return ask(q=q)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "nimflow", "actors", "kubernetes", str(pipeline)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "nimflow-nim-actor-0"), ("Service", "nimflow-nim-actor-0"),
        ("Deployment", "nimflow-nim-actor-1"), ("Service", "nimflow-nim-actor-1"),
    ]  # fmt: skip
    assert done.stdout.startswith(
        "# actor nim-actor: NIM nvcr.io/nim/meta/llama3-8b-instruct:1.0.0, 2 replica(s)"
    )
