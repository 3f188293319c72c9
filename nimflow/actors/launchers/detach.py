"""Start a command fully detached from this process, and learn its exit code later.

A tiny wrapper (run with `python -c`) forks: the first process prints the second one's pid and
exits at once (so the caller reaps it immediately and owns no long-lived child); the second
becomes a session leader, runs the command in its process group with output to a log file,
waits for it and writes its exit code to a file. Any nimflow process can then tell a crash (and
its code) from a stop, and signal the whole group to stop it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["spawn_detached"]

_WRAPPER = r"""
import os, signal, subprocess, sys
exit_path, log_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
pid = os.fork()
if pid:
    print(pid, flush=True)
    os._exit(0)
os.setsid()
# Stopping signals the whole group: the command gets them; this wrapper waits for it to exit.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0); os.dup2(log, 1); os.dup2(log, 2)
try:
    child = subprocess.Popen(argv, preexec_fn=lambda: (signal.signal(signal.SIGTERM, signal.SIG_DFL),
                                                     signal.signal(signal.SIGINT, signal.SIG_DFL)))
    code = child.wait()
except OSError as exc:
    print("cannot run %r: %s" % (argv[0], exc.strerror), flush=True)
    code = 127
if code < 0:
    code = 128 - code  # killed by a signal, as a shell reports it
if exit_path:
    with open(exit_path + ".tmp", "w") as f:
        f.write(str(code))
    os.replace(exit_path + ".tmp", exit_path)
os._exit(0)
"""


def spawn_detached(
    argv: Sequence[str], *, log: Path, exit_file: Path | None = None, env: Mapping[str, str] | None = None
) -> int:
    """Run argv detached; return the pid of its session leader (signal its group to stop it)."""
    if exit_file is not None:
        exit_file.unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(exit_file or ""), str(log), *argv],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=dict(env) if env is not None else None,
        timeout=30, check=False,
    )  # fmt: skip
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise OSError(f"could not start {argv[0]!r}: {out.stderr.strip()[-300:]}") from None
