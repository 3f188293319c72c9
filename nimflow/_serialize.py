"""Values <-> JSON, driven by type hints through pydantic's TypeAdapter.

Inputs are turned into canonical JSON for cache keys; outputs are stored as JSON and rebuilt from
the task's return hint on a cache hit, so a cached dataclass comes back as that dataclass.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from nimflow._exceptions import SerializationError

_adapters: dict[Any, TypeAdapter[Any]] = {}
_lock = threading.Lock()


def adapter(hint: Any) -> TypeAdapter[Any]:
    """A cached TypeAdapter for `hint` (building one costs far more than using it)."""
    try:
        return _adapters[hint]
    except KeyError:
        pass
    except TypeError:  # an unhashable hint: build it every time
        return TypeAdapter(hint)
    with _lock:
        built = _adapters.get(hint) or TypeAdapter(hint)
        _adapters[hint] = built
    return built


def to_jsonable(value: Any, hint: Any, what: str) -> Any:
    """`value` as plain JSON data (dicts, lists, str, numbers, bools, None)."""
    try:
        return adapter(hint).dump_python(value, mode="json")
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        raise SerializationError(
            f"{what}: cannot turn a value of type {type(value).__name__} into JSON ({exc}). "
            "Task inputs and outputs must be JSON-friendly: str, int, float, bool, None, lists, dicts, "
            "tuples, dataclasses or pydantic models, with type hints that say so."
        ) from exc


def dumps(value: Any, hint: Any, what: str) -> str:
    try:
        return adapter(hint).dump_json(value).decode()
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        raise SerializationError(
            f"{what}: cannot turn a value of type {type(value).__name__} into JSON ({exc}). "
            "Return JSON-friendly values (str, numbers, lists, dicts, dataclasses, pydantic models) "
            "and annotate the return type."
        ) from exc


def loads(text: str | bytes, hint: Any, what: str) -> Any:
    try:
        return adapter(hint).validate_json(text)
    except ValidationError as exc:
        raise SerializationError(f"{what}: stored JSON does not match the type hint {hint!r}: {exc}") from exc


def validate(value: Any, hint: Any, what: str) -> Any:
    """Coerce a user-given value (e.g. from the command line) to `hint`, or say what is wrong."""
    try:
        return adapter(hint).validate_python(value)
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise SerializationError(f"{what}: expected {type_name(hint)}, got {value!r} ({problems})") from exc


def canonical(data: Any) -> str:
    """One JSON text per value: sorted keys, no spaces, so equal inputs give equal cache keys."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
