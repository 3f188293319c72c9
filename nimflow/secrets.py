"""Secrets: read from the environment first, then from nimflow's secret store.

The store is a JSON file under NIMFLOW_HOME, readable by its owner only (mode 0600), written
atomically. Values never appear in logs, the database, container labels or error messages; only
names do.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nimflow import _config
from nimflow._exceptions import SecretMissingError, UserInputError
from nimflow._redact import remember_secret

__all__ = [
    "Secret",
    "SecretMissingError",
    "check_secret_name",
    "delete_secret",
    "get_secret",
    "has_secret",
    "list_secrets",
    "secret_store_path",
    "set_secret",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Secret:
    """A reference to a secret by name; the value is looked up only when needed."""

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)

    def get(self) -> str:
        return get_secret(self.name)

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise UserInputError(
            f"{name!r} is not a valid secret name: use letters, digits and underscores, "
            "not starting with a digit (e.g. NGC_API_KEY)."
        )


# What API keys look like (OpenAI sk-..., NVIDIA nvapi-..., hosted catalogs ep-..., Hugging Face hf_...).
_KEY_PREFIX = re.compile(r"^(sk|ep|nvapi|hf|gsk|pk|rk|key)[-_]", re.IGNORECASE)
_UPPER_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def looks_like_key(value: str) -> bool:
    """A value rather than a name: a key prefix, or long and random-looking."""
    if _KEY_PREFIX.match(value):
        return True
    mixed = any(c.islower() for c in value) and any(c.isdigit() for c in value)
    return len(value) >= 20 and mixed


def check_secret_name(value: str, *, flag: str) -> str:
    """`value` must name a secret; a key-looking value gets a message that never repeats it."""
    if looks_like_key(value) or not _NAME.match(value):
        raise UserInputError(
            f"{flag}: this looks like an API key itself, not the name of a secret (the value is not "
            "shown). Store it under a name (`export MY_API_KEY=...` or `nimflow secret create "
            'MY_API_KEY`) and pass the name: nf.Secret("MY_API_KEY"), or --api-key ACTOR=MY_API_KEY.'
        )
    return value


def secret_name(value: str | Secret, *, flag: str) -> str:
    """The name behind an `api_key=`: nf.Secret("NAME"), or a plain UPPER_CASE name."""
    if isinstance(value, Secret):
        return value.name
    check_secret_name(value, flag=flag)
    if not _UPPER_NAME.match(value):
        raise UserInputError(
            f"{flag}: {value!r} is taken as the name of a secret; write nf.Secret({value!r}) to say so "
            "(api_key= never takes the key itself)."
        )
    return value


def secret_store_path() -> Path:
    return _config.home() / "secrets.json"


def _read() -> dict[str, str]:
    path = secret_store_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The message names the file, never its content.
        raise UserInputError(
            f"the secret store {path} is not valid JSON; delete it and recreate the secrets."
        ) from exc
    if not isinstance(data, dict):
        raise UserInputError(
            f"the secret store {path} is not a JSON object; delete it and recreate the secrets."
        )
    return {str(k): str(v) for k, v in data.items()}


def _write(data: dict[str, str]) -> None:
    path = secret_store_path()
    # mkstemp creates the file 0600, so the value is never readable by others, not even briefly.
    fd, tmp = tempfile.mkstemp(prefix=".secrets-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get_secret(name: str, needed_by: str = "") -> str:
    """The secret's value from the environment, else from the store; SecretMissingError otherwise."""
    _check_name(name)
    value = os.environ.get(name) or _read().get(name)
    if value:
        remember_secret(value)  # whatever shows text to the user from now on hides it
        return value
    raise SecretMissingError(name, needed_by)


def has_secret(name: str) -> bool:
    try:
        get_secret(name)
    except SecretMissingError:
        return False
    return True


def set_secret(name: str, value: str) -> None:
    _check_name(name)
    if not value:
        raise UserInputError(f"the secret {name} cannot be empty.")
    data = _read()
    data[name] = value
    _write(data)


def list_secrets() -> list[str]:
    """Names of the stored secrets (never values)."""
    return sorted(_read())


def delete_secret(name: str) -> bool:
    """Remove a stored secret; False when there was none by that name."""
    _check_name(name)
    data = _read()
    if name not in data:
        return False
    del data[name]
    _write(data)
    return True
