"""The one redaction function: whatever nimflow prints, logs or stores goes through `redact()` first.

It masks, with "***":
- userinfo in URLs: `http://user:KEY@host/v1` -> `http://***@host/v1`;
- bearer tokens: `Authorization: Bearer sk-...` -> `Authorization: Bearer ***`;
- API-key fragments a server quotes back: `Incorrect API key provided: ep-...4242.` ->
  `Incorrect API key provided: ***.` (also `api_key=...`, `token: ...`, `password=...`);
- keys in the well-known formats (`sk-...`, `nvapi-...`, `hf_...`, `ghp_...`) wherever they stand;
- every value registered with `remember_secret()` (the secret store registers each secret it reads,
  the clients their API key), wherever it stands.
"""

from __future__ import annotations

import re
import threading

__all__ = ["redact", "remember_secret"]

MASK = "***"

# Shorter values would mask ordinary words; real keys and tokens are far longer.
_MIN_SECRET = 8

_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"<>]+@")
_BEARER = re.compile(r"(?P<lead>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
# "<name> ...: value" / "<name>=value": the value up to whitespace, a quote, a comma or a
# sentence-ending period.
_NAMED = re.compile(
    r"(?P<lead>\b(?:api[ _-]?key|access[ _-]?token|auth[ _-]?token|secret|password|passwd|token)"
    r"(?:\s+provided)?['\"]?\s*[:=]\s*['\"]?)"
    r"(?P<value>[^\s'\",;&]+?)(?=[.,;]?(?:[\s'\"&]|$))",
    re.IGNORECASE,
)
_KEY_FORMATS = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{12,}|nvapi-[A-Za-z0-9_-]{12,}|hf_[A-Za-z0-9]{12,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|xox[abp]-[A-Za-z0-9-]{10,})"
)

_lock = threading.Lock()
_secrets: set[str] = set()
_remembered: re.Pattern[str] | None = None


def remember_secret(value: str) -> None:
    """Mask `value` wherever it appears in text `redact()` sees from now on (for this process)."""
    global _remembered
    value = value.strip()
    if len(value) < _MIN_SECRET:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _remembered = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """`text` with URL userinfo, bearer tokens, quoted API keys and remembered secrets masked."""
    if not text:
        return text
    remembered = _remembered
    if remembered is not None:
        text = remembered.sub(MASK, text)
    text = _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _BEARER.sub(rf"\g<lead>{MASK}", text)
    text = _NAMED.sub(lambda m: m["lead"] + (m["value"] if m["value"] == MASK else MASK), text)
    return _KEY_FORMATS.sub(MASK, text)
