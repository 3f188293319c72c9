"""Scripted faults: which inference request fails, and how.

A fault plan has an exact *sequence* (consumed one element per inference request, then
exhausted) and *rates* (drawn from a seeded RNG once the sequence is used up), so a run with
the same plan and seed fails the same requests every time.

Compact spec grammar (used by ``--faults`` and accepted wherever a plan is)::

    spec     := "" | "none" | part (";" part)*
    part     := "seq:" step ("," step)*          exact sequence, e.g. seq:ok,429,ok,drop
              | rate ("," rate)*                 rates, e.g. 429:0.1,500:0.05 (or 429:10%)
              | "retry_after=" seconds           Retry-After sent with 429 (default 1)
              | "hang_seconds=" seconds          how long a hang lasts at most (default 60)
    step     := kind ["*" count]                 429*3 = three 429s in a row
    kind     := ok | 429 | 500 | 503 | hang | drop | malformed | html | truncate

Example: ``seq:429*2,ok;500:0.05;retry_after=0.5`` answers 429 twice (Retry-After 0.5 s), then
lets one request through, then fails 5% of the rest with a 500.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    """What the server does instead of (or to) a normal answer."""

    OK = "ok"
    RATE_LIMIT = "429"  # 429 with Retry-After
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    HANG = "hang"  # no answer until hang_seconds pass or the server stops, then the connection drops
    DROP = "drop"  # connection closed without any response
    MALFORMED = "malformed"  # 200 whose body is not JSON
    HTML = "html"  # 200 with an HTML page (a proxy's error page), content-type text/html
    TRUNCATE = "truncate"  # 200 whose content is cut in half, finish_reason "length"


_KINDS = {k.value: k for k in FaultKind}
_MAX_REPEAT = 100_000


def _kind(text: str) -> FaultKind:
    try:
        return _KINDS[text.strip().lower()]
    except KeyError:
        known = ", ".join(_KINDS)
        raise ValueError(f"unknown fault kind {text.strip()!r}; use one of: {known}") from None


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {text!r}")
    return value


@dataclass(frozen=True)
class FaultPlan:
    """Faults to inject into inference requests (chat and text completions only)."""

    rates: Mapping[FaultKind, float] = field(default_factory=dict)
    sequence: tuple[FaultKind, ...] = ()
    retry_after: float = 1.0
    hang_seconds: float = 60.0

    def __post_init__(self) -> None:
        rates = {FaultKind(k): float(v) for k, v in self.rates.items() if FaultKind(k) is not FaultKind.OK}
        if any(not 0.0 <= v <= 1.0 for v in rates.values()):
            raise ValueError(f"fault rates must be between 0 and 1, got {rates}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to more than 1: {rates}")
        object.__setattr__(self, "rates", rates)
        object.__setattr__(self, "sequence", tuple(FaultKind(k) for k in self.sequence))
        if self.retry_after < 0 or self.hang_seconds < 0:
            raise ValueError("retry_after and hang_seconds must not be negative")

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        """Parse the compact spec described in the module docstring."""
        rates: dict[FaultKind, float] = {}
        sequence: list[FaultKind] = []
        options: dict[str, float] = {}
        text = (spec or "").strip()
        if text.lower() in ("", "none"):
            return cls()
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            if part.lower().startswith("seq:"):
                sequence.extend(_steps(part[4:]))
            elif "=" in part:
                key, _, raw = part.partition("=")
                key = key.strip().lower().replace("-", "_")
                if key not in ("retry_after", "hang_seconds"):
                    raise ValueError(f"unknown fault option {key!r}; use retry_after=S or hang_seconds=S")
                options[key] = _number(raw.strip(), key)
            else:
                for item in part.split(","):
                    kind, sep, rate = item.partition(":")
                    if not sep:
                        raise ValueError(f"expected KIND:RATE (e.g. 429:0.1), got {item.strip()!r}")
                    text_rate = rate.strip()
                    if text_rate.endswith("%"):
                        value = _number(text_rate[:-1], "rate") / 100
                    else:
                        value = _number(text_rate, "rate")
                    rates[_kind(kind)] = rates.get(_kind(kind), 0.0) + value
        return cls(rates=rates, sequence=tuple(sequence), **options)

    @classmethod
    def coerce(cls, value: FaultPlan | str | Mapping[str, Any] | None) -> FaultPlan:
        """Accept a plan, a spec string, a JSON-style mapping, or None (no faults)."""
        if isinstance(value, FaultPlan):
            return value
        if value is None or isinstance(value, str):
            return cls.parse(value)
        return cls.from_json(value)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultPlan:
        """Build from ``{"spec": ...}`` or ``{"rates": {...}, "sequence": [...], ...}``."""
        base = cls.parse(str(data["spec"])) if data.get("spec") is not None else cls()
        rates = data.get("rates")
        sequence = data.get("sequence")
        return cls(
            rates={_kind(str(k)): float(v) for k, v in rates.items()} if rates is not None else base.rates,
            sequence=tuple(_kind(str(k)) for k in sequence) if sequence is not None else base.sequence,
            retry_after=float(data.get("retry_after", base.retry_after)),
            hang_seconds=float(data.get("hang_seconds", base.hang_seconds)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.to_spec(),
            "rates": {k.value: v for k, v in self.rates.items()},
            "sequence": [k.value for k in self.sequence],
            "retry_after": self.retry_after,
            "hang_seconds": self.hang_seconds,
        }

    def to_spec(self) -> str:
        parts = []
        if self.sequence:
            parts.append("seq:" + ",".join(k.value for k in self.sequence))
        if self.rates:
            parts.append(",".join(f"{k.value}:{v:g}" for k, v in self.rates.items()))
        defaults = FaultPlan()
        if self.retry_after != defaults.retry_after:
            parts.append(f"retry_after={self.retry_after:g}")
        if self.hang_seconds != defaults.hang_seconds:
            parts.append(f"hang_seconds={self.hang_seconds:g}")
        return ";".join(parts) or "none"


def _steps(text: str) -> Iterable[FaultKind]:
    for step in text.split(","):
        kind, star, count = step.partition("*")
        repeat = 1
        if star:
            if not count.strip().isdigit() or not 0 < int(count) <= _MAX_REPEAT:
                raise ValueError(f"repeat count must be 1..{_MAX_REPEAT}, got {step.strip()!r}")
            repeat = int(count)
        yield from [_kind(kind)] * repeat


class FaultInjector:
    """Hands out the fault for each inference request; safe to change from any thread."""

    def __init__(self, plan: FaultPlan | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._plan = FaultPlan()
        self._position = 0
        self._rng = random.Random(seed)
        self._cumulative: list[tuple[float, FaultKind]] = []
        self.set(plan or FaultPlan())

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set(self, plan: FaultPlan) -> None:
        """Install a plan; its sequence and the RNG start over."""
        total = 0.0
        cumulative = []
        for kind, rate in plan.rates.items():
            total += rate
            cumulative.append((total, kind))
        with self._lock:
            self._plan = plan
            self._position = 0
            self._rng = random.Random(self._seed)
            self._cumulative = cumulative

    def next(self) -> FaultKind:
        # Fast path for the benchmark case: no plan at all.
        if not self._cumulative and not self._plan.sequence:
            return FaultKind.OK
        with self._lock:
            if self._position < len(self._plan.sequence):
                self._position += 1
                return self._plan.sequence[self._position - 1]
            if not self._cumulative:
                return FaultKind.OK
            draw = self._rng.random()
            for bound, kind in self._cumulative:
                if draw < bound:
                    return kind
            return FaultKind.OK
