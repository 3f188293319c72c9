"""Where nimflow keeps its state: NIMFLOW_HOME (default ./.nimflow) and NIMFLOW_DB_URL."""

from __future__ import annotations

import os
from pathlib import Path

from nimflow._exceptions import StorageError


def home() -> Path:
    """The state folder, created on first use. Relative paths are taken from the working directory."""
    path = Path(os.environ.get("NIMFLOW_HOME", ".nimflow")).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"NIMFLOW_HOME={path} cannot be created ({exc.strerror}). "
            "Point NIMFLOW_HOME at a folder you can write."
        ) from None
    return path


def db_url() -> str:
    """Any SQLAlchemy URL; by default a SQLite file in the state folder."""
    return os.environ.get("NIMFLOW_DB_URL") or f"sqlite:///{home() / 'nimflow.db'}"
