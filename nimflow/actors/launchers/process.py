"""Process launcher: a model server run as a subprocess (LocalProcess, or the fake server).

Each replica runs in its own session (process group), so stopping it also stops its children
and a Ctrl-C in the terminal does not kill a server meant to stay warm. A state file per replica
under NIMFLOW_HOME plays the role of Docker labels: another nimflow process finds the replica
there and checks the pid still belongs to the same process (its start time) before adopting it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nimflow import _config
from nimflow._exceptions import ActorConfigError, PortInUseError
from nimflow.actors.launchers.base import Progress, ReplicaInfo, port_is_free
from nimflow.actors.launchers.detach import spawn_detached
from nimflow.actors.servers import FakeOpenAI, LocalProcess, ServerSpec
from nimflow.testing import FakeOptions, command

__all__ = ["ProcessLauncher", "fake_server_argv"]

_STOP_WAIT = 10.0


def fake_server_argv(spec: FakeOpenAI, port: int) -> list[str]:
    options = FakeOptions(
        port=port, model=spec.model, adapters=tuple(spec.adapter_names), latency_ms=spec.latency_ms
    )
    return command(options)


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None if sys.platform.startswith("linux") else ("?" if _pid_alive(pid) else None)
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessLauncher:
    kind = "process"

    def __init__(self, home: Path | None = None) -> None:
        self._home = home

    @property
    def folder(self) -> Path:
        folder = (self._home or _config.home()) / "actors"
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        return folder

    def _state_path(self, actor: str, replica: int) -> Path:
        return self.folder / f"{actor}-{replica}.json"

    def _exit_path(self, actor: str, replica: int) -> Path:
        return self.folder / f"{actor}-{replica}.exit"

    def log_path(self, actor: str, replica: int) -> Path:
        return self.folder / "logs" / f"{actor}-{replica}.log"

    # -- Launcher ------------------------------------------------------------------------------

    def find(self, actor: str | None = None) -> list[ReplicaInfo]:
        found = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if actor is None or data.get("actor") == actor:
                found.append(self.status(ReplicaInfo(**data)))
        return found

    def start(
        self,
        actor: str,
        replica: int,
        spec: ServerSpec,
        *,
        port: int,
        ttl: float,
        gpus: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> ReplicaInfo:
        if isinstance(spec, FakeOpenAI):
            argv, env_extra, model = fake_server_argv(spec, port), {}, spec.model
        elif isinstance(spec, LocalProcess):
            argv, env_extra, model = spec.argv(port), dict(spec.env), spec.model or ""
        else:
            raise ActorConfigError(f"actor {actor!r}: the process launcher cannot run {spec!r}.")
        if not port_is_free(port):
            raise PortInUseError(
                f"actor {actor!r} replica {replica}: port {port} on 127.0.0.1 is already in use by another "
                "program. Stop it, or give the server another port (port=0 picks a free one)."
            )
        if progress:
            progress(f"starting `{' '.join(argv[:4])} ...`")
        env = {**os.environ, **env_extra, "PORT": str(port)}
        self.log_path(actor, replica).write_bytes(b"")  # this start's log only
        try:
            pid = spawn_detached(
                argv, log=self.log_path(actor, replica), exit_file=self._exit_path(actor, replica), env=env
            )
        except OSError as exc:
            raise ActorConfigError(f"actor {actor!r}: {exc}") from None
        ticks = _start_ticks(pid) or "?"
        info = ReplicaInfo(
            actor=actor,
            replica=replica,
            kind=spec.kind,
            handle=f"{pid}@{ticks}",
            base_url=f"http://127.0.0.1:{port}/v1",
            port=port,
            config_hash=spec.config_hash(),
            model=model,
            ttl=ttl,
            name=f"pid {pid}",
        )
        self._state_path(actor, replica).write_text(json.dumps(_state(info)))
        return info

    def status(self, info: ReplicaInfo) -> ReplicaInfo:
        pid, ticks = _parse_handle(info.handle)
        current = _start_ticks(pid)
        info.running = current is not None and (ticks in ("?", current))
        info.exit_code = None
        if not info.running:
            with contextlib.suppress(OSError, ValueError):
                info.exit_code = int(self._exit_path(info.actor, info.replica).read_text())
        return info

    def logs(self, info: ReplicaInfo, lines: int = 40) -> str:
        try:
            with open(self.log_path(info.actor, info.replica), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64_000))
                tail = f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(tail)

    def stop(self, info: ReplicaInfo) -> None:
        pid, _ = _parse_handle(info.handle)
        if self.status(info).running:
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_WAIT
            while time.monotonic() < deadline and self.status(info).running:
                time.sleep(0.05)
            if self.status(info).running:
                _signal_group(pid, signal.SIGKILL)
        path = self._state_path(info.actor, info.replica)
        with contextlib.suppress(OSError, json.JSONDecodeError):
            if json.loads(path.read_text()).get("handle") == info.handle:
                path.unlink()


def _state(info: ReplicaInfo) -> dict[str, object]:
    return {
        "actor": info.actor,
        "replica": info.replica,
        "kind": info.kind,
        "handle": info.handle,
        "base_url": info.base_url,
        "port": info.port,
        "config_hash": info.config_hash,
        "model": info.model,
        "ttl": info.ttl,
        "name": info.name,
    }


def _parse_handle(handle: str) -> tuple[int, str]:
    pid, _, ticks = handle.partition("@")
    return int(pid), ticks or "?"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The replica leads its own session, so its pgid is its pid: this reaches its children too.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
