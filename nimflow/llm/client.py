"""Build the openai clients an actor task uses, wired to the actor's replicas."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx2

from nimflow._redact import remember_secret
from nimflow.llm.context import ActorContext, OpenAIClients
from nimflow.llm.errors import TransportFailures
from nimflow.llm.poster import ChatPoster
from nimflow.llm.retry import DEFAULT_POLICY, AsyncRetryTransport, RetryPolicy, SyncRetryTransport
from nimflow.llm.router import RequestRestart, Router
from nimflow.llm.transport import AsyncRoutingTransport, SyncRoutingTransport

if TYPE_CHECKING:
    import openai

__all__ = ["build_actor_context", "close_actor_context"]

# Servers without authentication accept any bearer token; the openai client insists on one.
_NO_KEY = "nimflow-no-key"


def build_actor_context(
    name: str,
    model: str,
    replica_urls: Sequence[str],
    *,
    api_key: str | None = None,
    max_in_flight_per_replica: int = 256,
    served_by: str = "",
    on_replica_down: RequestRestart | None = None,
    request_timeout: float = 600.0,
    connect_timeout: float = 5.0,
    api_key_name: str | None = None,
    retry_policy: RetryPolicy = DEFAULT_POLICY,
    max_replicas: int | None = None,
    replica_indexes: Sequence[int] | None = None,
) -> ActorContext:
    """Clients for an actor's replicas (URLs like "http://127.0.0.1:8001/v1").

    `on_replica_down(url, done)` asks once per failure episode, when a replica refuses connections,
    for its restart (`router.restarts_in` runs them as tasks of a task group); `done` gets the
    replica's new base URL, or None to leave it out of rotation. `max_replicas` makes the replica set live (router.add/retire, may start empty);
    `replica_indexes` numbers the replicas as their launcher does. `api_key_name` names the secret or env var holding the key, for 401 messages. A request
    with no answer within `request_timeout` seconds is tried once more, then fails saying how to
    raise it.
    """
    urls, userinfo_key = _without_userinfo([u.rstrip("/") for u in replica_urls])
    api_key = api_key or userinfo_key
    router = Router(
        urls, max_in_flight=max_in_flight_per_replica, on_replica_down=on_replica_down,
        max_replicas=max_replicas, indexes=replica_indexes,
    )  # fmt: skip
    # The clients' logical base URL; the routing transport rewrites it to the chosen replica's.
    base_url = urls[0] if urls else "http://nimflow-replica.invalid/v1"
    key = api_key or _NO_KEY
    if api_key:
        remember_secret(api_key)
    http_timeout = httpx2.Timeout(request_timeout, connect=connect_timeout)
    failures = TransportFailures(name, lambda: [r.url for r in router.replicas], request_timeout)
    http_client = httpx2.AsyncClient(
        transport=AsyncRetryTransport(AsyncRoutingTransport(router, base_url), retry_policy, failures),
        timeout=http_timeout,
        trust_env=False,
    )

    def openai_clients() -> tuple[openai.AsyncOpenAI, openai.OpenAI]:
        import openai  # at first use: the helpers post through `http_client` without it

        client = openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=0,  # retries live in the transport (retry.py), around the routing
            timeout=http_timeout,
            http_client=http_client,
        )
        sync_client = openai.OpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=0,
            timeout=http_timeout,
            http_client=httpx2.Client(
                transport=SyncRetryTransport(SyncRoutingTransport(router, base_url), retry_policy, failures),
                timeout=http_timeout,
                trust_env=False,
            ),
        )
        return client, sync_client

    clients = OpenAIClients(openai_clients)
    return ActorContext(
        name=name,
        model=model,
        base_url=base_url,
        clients=clients,
        served_by=served_by,
        router=router,
        api_key_name=api_key_name,
        poster=ChatPoster(http_client, base_url, key, clients),
    )


def _without_userinfo(urls: list[str]) -> tuple[list[str], str | None]:
    """The URLs without `user:password@` (aiohttp refuses it next to the client's Authorization
    header), and the password (else the user), taken as the API key when none is given."""
    plain: list[str] = []
    key: str | None = None
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if "@" not in parts.netloc:
            plain.append(url)
            continue
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        secret = urllib.parse.unquote(password or user)
        remember_secret(secret)
        key = key or secret
        plain.append(urllib.parse.urlunsplit(parts._replace(netloc=host)))
    return plain, key


async def close_actor_context(ctx: ActorContext) -> None:
    """Close the clients and their connections (restarts under way end with their task group)."""
    try:
        if ctx.poster is not None:
            await ctx.poster.aclose()
    finally:
        if ctx.clients.built:
            try:
                await ctx.client.close()
            finally:
                ctx.sync_client.close()
