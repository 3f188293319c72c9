"""What the Ray tests share: the replicas as Ray and the database know them, bounded waits."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlmodel import select

from nimflow._store import ActorReplica, Store
from nimflow.actors.launchers.ray import NAMESPACE

MARKER = "NIMFLOW_RAY_TEST_CLUSTER"


def assert_answered(items: list[str], outputs: list[str]) -> None:
    """Each item ("Item N ...") got its own answer, in order (the fake server quotes the prompt)."""
    assert len(outputs) == len(items)
    for item, answer in zip(items, outputs, strict=True):
        number = item.split()[1]
        assert f"Item {number} " in answer, (item, answer)


def named_actors() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE}


def wait_until(check: Any, seconds: float, what: str, every: float = 0.25) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds:g}s waiting for {what}")
        time.sleep(every)


def replicas() -> list[ActorReplica]:
    store = Store.open()
    try:
        with store.session() as session:
            return sorted(session.exec(select(ActorReplica)), key=lambda r: (r.actor, r.replica))
    finally:
        store.close()


def node_of(row: ActorReplica) -> str:
    return row.handle.split("|")[2]


def marked_pids(marker: str) -> list[int]:
    """PIDs of the processes of one test cluster: each carries its marker in its environment."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def fake_servers(marker: str) -> list[int]:
    """PIDs of the fake servers (and their watchdogs) the test cluster runs."""
    pids = []
    for pid in marked_pids(marker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"nimflow.testing" in a or a.endswith(b"logged_fake.py") for a in argv):
            pids.append(pid)
    return pids
