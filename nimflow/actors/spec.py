"""What every server spec offers the actor pool, and the size quantities specs are written in.

A spec says what it needs through these properties (owned, shared, base_port, ...), so the pool and
the launchers never branch on the kind of server; the concrete specs are in servers.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from typing import Any, ClassVar, Literal

from nimflow._exceptions import ActorConfigError

__all__ = ["Kind", "ServerSpec", "parse_quantity"]

Kind = Literal["docker", "process", "endpoint", "fake"]

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]i?|[kmgt]b|[KMGT]B)?\s*$")
_UNITS = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_quantity(value: int | str | None) -> int | None:
    """Bytes from "20Gi", "512Mi", "16g" (docker style, binary) or an int; None stays None."""
    if value is None or isinstance(value, int):
        return value
    match = _QUANTITY.match(value)
    if not match:
        raise ActorConfigError(
            f"{value!r} is not a size: write it like '20Gi', '512Mi' or a number of bytes."
        )
    number, unit = float(match.group(1)), (match.group(2) or "")
    if not unit:
        return int(number)
    base = unit[0].lower()
    # "Gi" is binary; docker's own "g" is binary too; only "G"/"GB" (SI) are powers of 1000.
    binary = unit.endswith("i") or unit.islower()
    factor = 1024 ** (list(_UNITS).index(base) + 1) if binary else _UNITS[base]
    return int(number * factor)


# How long to wait for a server, or whether to pull it, does not change the server itself.
_NOT_IN_HASH = {"startup_timeout", "pull", "health_endpoint"}


def _short_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ServerSpec:
    """What every server spec offers to the pool: what it needs is said by these properties, so
    the pool never branches on the kind of server."""

    kind: ClassVar[Kind]  # recorded in the replica rows: which launcher finds and stops it
    health_endpoint: str | None
    startup_timeout: float

    @property
    def owned(self) -> bool:
        """nimflow starts and stops it (False: a server that runs without us)."""
        return True

    @property
    def shared(self) -> bool:
        """Kept warm for its TTL and adopted by later runs (False: it belongs to one run)."""
        return self.owned

    def base_port(self) -> int:
        """The host port of replica 0 (replica i uses base + i); 0 picks free ports."""
        return int(getattr(self, "port", 0) or 0)

    def model_name(self) -> str | None:
        """The model the server is expected to serve; None means "whatever /v1/models lists first"."""
        raise NotImplementedError

    def adapters(self) -> tuple[str, ...]:
        """LoRA adapter names the server is expected to serve as models."""
        return ()

    def identity(self) -> str:
        """What serves the answers, for cache keys; known without starting anything."""
        raise NotImplementedError

    def config_hash(self) -> str:
        """Changes whenever a running replica would have to be replaced. Secret names only."""
        fields = {k: v for k, v in asdict(self).items() if k not in _NOT_IN_HASH}  # type: ignore[call-overload]
        return _short_hash({"kind": type(self).__name__, **fields})

    def describe(self) -> str:
        """One line for the run summary."""
        raise NotImplementedError
