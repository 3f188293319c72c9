"""Build a small Docker image that runs the fake OpenAI server, without any registry.

The image is a FROM-scratch tar of the host's Debian python3.11 (interpreter, stdlib with its
byte-code, the shared libraries it links, dash as /bin/sh), plus the fake server's sources and
the pure-Python packages it needs. Its entry point speaks both dialects the actor pool uses: NIM
(port and served model name in the environment, LoRA adapters as folders under NIM_PEFT_SOURCE)
and vLLM (`--model --host --port --lora-modules` arguments), so NIM and VLLM specs can be tested
end to end. The tag carries a hash of the content: an unchanged image is reused.

    python tests/docker/fake_image.py      # build (or find) it and print its tag
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
REPOSITORY = "nimflow-test-fake"
# Pure-Python packages the fake server needs at run time (uvicorn and its own).
PACKAGES = ["uvicorn", "anyio", "h11", "click", "sniffio", "idna", "typing_extensions"]
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
               "dist-packages", "config-3.11-x86_64-linux-gnu", "pydoc_data"}  # fmt: skip
SKIP_TESTING = {"__init__.py", "plugin.py", "cli.py"}  # pytest / typer entry points, not the server

ENTRY = r"""
import os, sys, time

def main():
    if os.environ.get("NIMFLOW_FAKE_SLEEP"):
        time.sleep(float(os.environ["NIMFLOW_FAKE_SLEEP"]))
    crash = os.environ.get("NIMFLOW_FAKE_CRASH")
    if crash:
        print("fake server: refusing to start (NIMFLOW_FAKE_CRASH)", flush=True)
        sys.exit(int(crash))
    model = os.environ.get("NIM_SERVED_MODEL_NAME") or os.environ.get("NIMFLOW_FAKE_MODEL") or "meta/llama3-8b-instruct"
    host = os.environ.get("NIMFLOW_FAKE_HOST", "127.0.0.1")
    port = os.environ.get("NIM_SERVER_PORT", "8000")
    adapters = []
    peft = os.environ.get("NIM_PEFT_SOURCE")
    if peft and os.path.isdir(peft):
        adapters = sorted(d for d in os.listdir(peft) if os.path.isdir(os.path.join(peft, d)))
    args, i = sys.argv[1:], 0
    while i < len(args):
        arg = args[i]
        key, _, value = arg.partition("=")
        if key in ("--model", "--port", "--host", "--served-model-name") and not value and i + 1 < len(args):
            i += 1
            value = args[i]
        if key == "--model":
            model = value
        elif key == "--served-model-name":
            model = value.split()[0]
        elif key == "--port":
            port = value
        elif key == "--host":
            host = value
        elif key == "--lora-modules":
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                i += 1
                adapters.append(args[i].split("=", 1)[0])
        i += 1
    argv = [sys.executable, "-m", "nimflow.testing", "--host", host, "--port", port, "--model", model]
    for name in adapters:
        argv += ["--adapter", name]
    argv += os.environ.get("NIMFLOW_FAKE_ARGS", "").split()
    print("fake server: model=%s port=%s adapters=%s" % (model, port, adapters), flush=True)
    os.execv(sys.executable, argv)

main()
"""


def _libraries(paths: list[Path]) -> set[Path]:
    libs: set[Path] = set()
    for path in paths:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False).stdout
        for match in re.finditer(r"(/\S+\.so[^\s]*)", out):
            libs.add(Path(match.group(1)))
    # dlopen'ed by glibc on thread exit, not listed by ldd: without it threads die with SIGSEGV.
    for candidate in ("/lib/x86_64-linux-gnu/libgcc_s.so.1", "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"):
        if Path(candidate).exists():
            libs.add(Path(candidate))
            break
    return libs


def _package_dirs() -> list[Path]:
    found = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"the fake image needs {name!r} installed in this interpreter")
        origin = Path(spec.origin)
        found.append(origin.parent if origin.name == "__init__.py" else origin)
    return found


def _testing_sources() -> list[Path]:
    folder = REPO / "nimflow" / "testing"
    return sorted(p for p in folder.glob("*.py") if p.name not in SKIP_TESTING)


def content_hash() -> str:
    digest = hashlib.sha256()
    stat = PYTHON.stat()
    digest.update(f"{stat.st_size}:{int(stat.st_mtime)}".encode())
    digest.update(ENTRY.encode())
    for path in _testing_sources():
        digest.update(path.name.encode() + path.read_bytes())
    for pkg in _package_dirs():
        version_files = sorted(pkg.parent.glob(f"{pkg.name.split('.')[0]}-*.dist-info"))
        digest.update(f"{pkg.name}:{[v.name for v in version_files]}".encode())
    return digest.hexdigest()[:12]


def _add(tar: tarfile.TarFile, src: Path, arcname: str) -> None:
    tar.add(str(src), arcname=arcname, recursive=False)


def _add_tree(tar: tarfile.TarFile, src: Path, arcname: str, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in skip and not (Path(root) == src and d in skip)]
        rel = Path(root).relative_to(src)
        for name in files:
            if name.endswith((".exe", ".pyi")):
                continue
            path = Path(root) / name
            if path.is_symlink() and not path.exists():
                continue
            tar.add(str(path), arcname=f"{arcname}/{rel / name}".replace("/./", "/"), recursive=False)


def rootfs() -> bytes:
    if not PYTHON.exists():
        raise RuntimeError(
            f"{PYTHON} is missing: `apt-get install python3.11` (Debian) to build the test image"
        )
    dynload = sorted((STDLIB / "lib-dynload").glob("*.so"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, PYTHON, "usr/bin/python3.11")
        _add_tree(tar, STDLIB, "usr/lib/python3.11", SKIP_STDLIB)
        for lib in sorted(_libraries([PYTHON, *dynload])):
            real = lib.resolve()
            tar.add(str(real), arcname=str(lib).lstrip("/"), recursive=False)
            if real != lib and str(real).lstrip("/") != str(lib).lstrip("/"):
                tar.add(str(real), arcname=str(real).lstrip("/"), recursive=False)
        _add(tar, Path("/bin/dash").resolve(), "bin/sh")
        for pkg in _package_dirs():
            if pkg.is_dir():
                _add_tree(tar, pkg, f"app/site/{pkg.name}", {"__pycache__"})
            else:
                _add(tar, pkg, f"app/site/{pkg.name}")
        for path in _testing_sources():
            _add(tar, path, f"app/nimflow/testing/{path.name}")
        for name, text in (("app/nimflow/__init__.py", ""), ("app/nimflow/testing/__init__.py", ""),
                           ("app/entry.py", ENTRY), ("tmp/.keep", "")):  # fmt: skip
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
    return buf.getvalue()


def ensure_image(client: Any) -> str:
    """The tag of the fake-server image, built now if this content was never built."""
    import docker.errors

    tag = content_hash()
    ref = f"{REPOSITORY}:{tag}"
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    changes = [
        "ENV PYTHONPATH=/app/site:/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/usr/bin:/bin",
        'ENTRYPOINT ["/usr/bin/python3.11", "/app/entry.py"]',
        "WORKDIR /tmp",
    ]
    client.api.import_image_from_data(rootfs(), repository=REPOSITORY, tag=tag, changes=changes)
    client.images.get(ref)
    return ref


if __name__ == "__main__":
    import docker

    started = time.monotonic()
    ref = ensure_image(docker.from_env())
    print(f"{ref} ({time.monotonic() - started:.1f}s)", file=sys.stdout)
