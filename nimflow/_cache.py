"""Cache keys (pure functions) and the source hash that detects code changed under one version."""

from __future__ import annotations

import hashlib
import inspect
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

from nimflow._serialize import canonical


def cache_key(task: str, cache_version: str, inputs: Mapping[str, Any], served_by: str | None = None) -> str:
    """sha256 over the task name, its cache_version, what served it and the canonical JSON of its inputs.

    `inputs` must already be JSON data with the cache_ignore names removed.
    """
    payload = canonical([task, cache_version, served_by or "", inputs])
    return hashlib.sha256(payload.encode()).hexdigest()


def source_hash(fn: Callable[..., Any]) -> str:
    """A hash of the function's source (or bytecode where no source is available)."""
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = repr(code.co_code if code is not None else fn)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
