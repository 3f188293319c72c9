"""GPU placement: each replica gets GPU ids of its own, never one another actor's replica holds.

The host's GPUs come from NIMFLOW_GPUS ("0,1,2,3", said by hand) or NVML (nvidia-ml-py, optional,
imported only when a server asks for GPUs). What is held is read from the replica rows, so a
second run, or another actor, does not reuse a GPU a warm replica keeps. Called under the start
lock, so two processes do not place at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from nimflow._exceptions import GPUUnavailableError, UserInputError
from nimflow._store import Store
from nimflow.actors import records
from nimflow.actors.launchers.base import ReplicaInfo
from nimflow.actors.servers import ServerSpec

__all__ = ["assign_gpus", "gpu_count", "host_gpus", "place"]


def gpu_count(spec: ServerSpec) -> int | str:
    """GPUs each replica asks for: a count, or "all" (the whole host, shared, not placed)."""
    value = getattr(spec, "gpu", 0)
    return value if isinstance(value, str) else int(value or 0)


def host_gpus() -> tuple[list[str], str]:
    """The host's GPU ids and where they came from (or why none were found)."""
    text = os.environ.get("NIMFLOW_GPUS")
    if text is not None:
        ids = [part.strip() for part in text.split(",") if part.strip()]
        bad = [i for i in ids if not i.isdigit() and not i.startswith("GPU-")]
        if bad:
            raise UserInputError(
                f"NIMFLOW_GPUS={text!r}: list GPU indexes or UUIDs separated by commas, e.g. NIMFLOW_GPUS=0,1,2,3."
            )
        return ids, "NIMFLOW_GPUS"
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return [], "nvidia-ml-py is not installed (`pip install nvidia-ml-py`)"
    try:
        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(int(pynvml.nvmlDeviceGetCount()))], "NVML"
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return [], f"NVML: {exc}"


def place(
    actor: str,
    count: int,
    replicas: Iterable[int],
    *,
    inventory: list[str],
    source: str,
    held: Mapping[str, str],
) -> dict[int, tuple[str, ...]]:
    """Distinct free GPUs for each replica, in the host's order; GPUUnavailableError if too few."""
    wanted = list(replicas)
    free = [gpu for gpu in inventory if gpu not in held]
    need = count * len(wanted)
    if need > len(free):
        holders = ", ".join(f"GPU {g} by {who}" for g, who in sorted(held.items())) or "none"
        found = (
            f"this host has {len(inventory)} GPU(s) ({source})"
            if inventory
            else f"no GPUs were found ({source})"
        )
        raise GPUUnavailableError(
            f"actor {actor!r} needs {need} GPU(s) ({len(wanted)} replica(s) x gpu={count}), but only "
            f"{len(free)} are free: {found}; held: {holders}. Stop warm replicas (`nimflow actors ls`, "
            "`nimflow actors stop NAME`), lower replica_count or gpu=, or set NIMFLOW_GPUS=0,1,... to list "
            "the GPUs by hand. Without a local GPU, serve the actor another way: "
            f"`--server {actor}=fake` or `--server {actor}=endpoint:URL`."
        )
    return {index: tuple(free[n * count : (n + 1) * count]) for n, index in enumerate(wanted)}


def assign_gpus(
    store: Store, actor: str, spec: ServerSpec, missing: list[int], current: Mapping[int, ReplicaInfo]
) -> dict[int, tuple[str, ...]]:
    """GPU ids for each replica about to start (blocking: reads the database)."""
    count = gpu_count(spec)
    if isinstance(count, str) or count <= 0 or not missing:
        return {}
    inventory, source = host_gpus()
    held = records.held_gpus(store, except_actor=actor)
    for info in current.values():  # this actor's adopted replicas keep theirs
        held.update({gpu: f"{actor}/{info.replica}" for gpu in info.gpus})
    return place(actor, count, missing, inventory=inventory, source=source, held=held)
