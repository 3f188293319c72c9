"""One redaction function for everything shown, logged or stored: secret values nimflow has
read, and userinfo in URLs, become ***."""

from __future__ import annotations

import re
import threading

__all__ = ["redact", "remember_secret"]

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def remember_secret(value: str) -> None:
    """A secret value read by nimflow (too short ones would hide ordinary text)."""
    if len(value) >= 4:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    with _LOCK:
        values = sorted(_SECRETS, key=len, reverse=True)
    for value in values:
        text = text.replace(value, "***")
    return _USERINFO.sub(r"\g<scheme>***@", text)
