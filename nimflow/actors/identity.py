"""What answers an actor's requests, for cache keys: model, adapters, image and its digest for
containers, the model id as /v1/models reports it for endpoints; never where it listens."""

from __future__ import annotations

import anyio.to_thread
import httpx

from nimflow.actors.servers import OpenAIEndpoint, ServerSpec

__all__ = ["serving_identity"]


async def serving_identity(spec: ServerSpec, http: httpx.AsyncClient, api_key: str | None = None) -> str:
    base = spec.identity()
    if isinstance(spec, OpenAIEndpoint) and not spec.model:
        model = await _listed_model(spec, http, api_key)
        return f"{base}{model}" if model else base
    image = getattr(spec, "image", None)
    if spec.kind == "docker" and isinstance(image, str):
        digest = await anyio.to_thread.run_sync(_image_digest, image)
        if digest:
            return f"{base}@{digest}"
    return base


async def _listed_model(spec: OpenAIEndpoint, http: httpx.AsyncClient, api_key: str | None) -> str:
    # Unreachable or odd servers give no id here: the acquisition that follows says why, clearly.
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await http.get(spec.base_url + "/models", headers=headers, timeout=30.0)
        data = response.json().get("data", [])
        bases = [str(m["id"]) for m in data if not m.get("parent")] or [str(m["id"]) for m in data]
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return ""
    return bases[0] if bases else ""


def _image_digest(image: str) -> str:
    """The local image's id (a content digest), or "" when the image or the engine is not here."""
    from nimflow.actors.launchers import launcher_for

    launcher = launcher_for("docker")
    digest = getattr(launcher, "image_digest", None)
    if digest is None:
        return ""
    try:
        return str(digest(image) or "")
    except Exception:  # no engine: the acquisition says so; the key is the image reference alone
        return ""
