"""Readiness: poll a replica's health until it answers 200, watching that it is still alive,
then check that `/v1/models` lists the expected model and adapters."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from nimflow._exceptions import ModelNotServedError, ServerExitedError, StartupTimeoutError
from nimflow.actors.launchers.base import Launcher, ReplicaInfo
from nimflow.actors.servers import ServerSpec

__all__ = ["check_models", "wait_ready"]

_LOG_LINES = 20
_LOG_EVERY = 2.0  # seconds between log-tail refreshes shown while waiting


def _exited_message(info: ReplicaInfo, what: str, log_tail: str) -> str:
    if info.oom_killed:
        why = (
            f"was killed for using more memory than its limit (OOMKilled, exit code {info.exit_code}); "
            "raise mem= (and note /dev/shm counts against it)"
        )
    elif info.exit_code is None:
        why = "disappeared (removed or killed from outside)"
    else:
        why = f"exited with code {info.exit_code}"
    tail = log_tail.strip() or "(its log is empty)"
    return (
        f"actor {info.actor!r} replica {info.replica}: {what} {why} while starting. Last log lines:\n{tail}"
    )


async def wait_ready(
    launcher: Launcher,
    info: ReplicaInfo,
    spec: ServerSpec,
    http: httpx.AsyncClient,
    *,
    progress: Callable[[str], None] | None = None,
    deadline: float | None = None,
) -> None:
    """Return when the health endpoint answers 200; raise at once if the replica exits meanwhile."""
    what = info.name or info.handle
    if spec.health_endpoint is None:
        return
    url = info.root_url + spec.health_endpoint
    deadline_s = spec.startup_timeout if deadline is None else deadline
    started = time.monotonic()
    delay, last_log_at, last_line, last_reason = 0.1, 0.0, "", ""
    # Bounded: each round sleeps at least 0.1 s and the deadline ends the loop.
    while True:
        fresh = await anyio.to_thread.run_sync(launcher.status, info)
        if not fresh.running:
            tail = await anyio.to_thread.run_sync(launcher.logs, info, _LOG_LINES)
            raise ServerExitedError(_exited_message(fresh, what, tail), fresh.exit_code, tail)
        try:
            response = await http.get(url, timeout=5.0)
            if response.status_code == 200:
                return
            last_reason = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last_reason = type(exc).__name__
        elapsed = time.monotonic() - started
        if elapsed > deadline_s:
            tail = await anyio.to_thread.run_sync(launcher.logs, info, _LOG_LINES)
            raise StartupTimeoutError(
                f"actor {info.actor!r} replica {info.replica}: {what} did not answer 200 on {url} within "
                f"{deadline_s:g}s (last: {last_reason}). Raise startup_timeout= if the model is still "
                f"downloading or loading; otherwise see its log. Last log lines:\n{tail.strip() or '(empty)'}"
            )
        if progress:
            if elapsed - last_log_at >= _LOG_EVERY:
                last_log_at = elapsed
                tail = await anyio.to_thread.run_sync(launcher.logs, info, 1)
                last_line = tail.strip().splitlines()[-1][:120] if tail.strip() else ""
            suffix = f" | {last_line}" if last_line else ""
            progress(f"waiting for {spec.health_endpoint} ({elapsed:.0f}s of {deadline_s:g}s){suffix}")
        await anyio.sleep(delay)
        delay = min(delay * 1.5, 2.0)


async def check_models(
    info: ReplicaInfo, spec: ServerSpec, http: httpx.AsyncClient, *, api_key: str | None = None
) -> str:
    """The model name to use; raise when the model or an adapter is missing from `/v1/models`."""
    url = info.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await http.get(url, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise ModelNotServedError(
            f"actor {info.actor!r}: cannot list the models at {url} ({type(exc).__name__}); "
            "is the server running?"
        ) from None
    if response.status_code in (401, 403):
        raise ModelNotServedError(
            f"actor {info.actor!r}: {url} refused the request (HTTP {response.status_code}); give the "
            "endpoint the right api_key (a secret's name)."
        )
    if response.status_code != 200:
        raise ModelNotServedError(f"actor {info.actor!r}: {url} answered HTTP {response.status_code}.")
    try:
        data: list[dict[str, Any]] = response.json().get("data", [])
        ids = [str(m["id"]) for m in data]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ModelNotServedError(
            f"actor {info.actor!r}: {url} did not answer an OpenAI model list."
        ) from None
    expected = spec.model_name()
    missing = [name for name in ((expected,) if expected else ()) + spec.adapters() if name not in ids]
    if missing:
        raise ModelNotServedError(
            f"actor {info.actor!r}: the server at {info.base_url} does not serve {missing}; it serves {ids}. "
            "Check the model name (and the LoRA adapters' folder names)."
        )
    if expected:
        return expected
    bases = [str(m["id"]) for m in data if not m.get("parent")]
    if not (bases or ids):
        raise ModelNotServedError(f"actor {info.actor!r}: the server at {info.base_url} lists no model.")
    return (bases or ids)[0]
