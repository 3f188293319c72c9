"""A second, tiny OpenAI-compatible server image (stdlib only, not nimflow's fake server), to test
nf.Container with an image nimflow knows nothing about. Built FROM scratch like fake_image.py."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from pathlib import Path
from typing import Any

REPOSITORY = "nimflow-test-tiny"

SERVER = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
port = int(args[args.index("--port") + 1]) if "--port" in args else int(os.environ.get("TINY_PORT", "8000"))
model = args[args.index("--model") + 1] if "--model" in args else "tiny-model"
greeting = os.environ.get("TINY_GREETING", "")
token = "yes" if os.environ.get("TINY_TOKEN") else "no"


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"ok": True})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": model, "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        text = body["messages"][-1]["content"]
        content = f"tiny[{greeting}|token={token}|port={port}]: {text}"
        self._send(200, {
            "id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model", model),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    def log_message(self, *a):
        pass


print(f"tiny server on 127.0.0.1:{port} model={model}", flush=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def ensure_image(client: Any, fake_image_module: Any) -> str:
    """Build (or find) the tiny image: the host's python and stdlib, plus SERVER."""
    import docker.errors

    tag = hashlib.sha256(SERVER.encode() + fake_image_module.content_hash().encode()).hexdigest()[:12]
    ref = f"{REPOSITORY}:{tag}"
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    f = fake_image_module
    dynload = sorted((f.STDLIB / "lib-dynload").glob("*.so"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        f._add(tar, f.PYTHON, "usr/bin/python3.11")
        f._add_tree(tar, f.STDLIB, "usr/lib/python3.11", f.SKIP_STDLIB)
        for lib in sorted(f._libraries([f.PYTHON, *dynload])):
            real = Path(lib).resolve()
            tar.add(str(real), arcname=str(lib).lstrip("/"), recursive=False)
        data = SERVER.encode()
        info = tarfile.TarInfo("app/tiny.py")
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    changes = [
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/usr/bin",
        'ENTRYPOINT ["/usr/bin/python3.11", "/app/tiny.py"]',
    ]
    client.api.import_image_from_data(buf.getvalue(), repository=REPOSITORY, tag=tag, changes=changes)
    client.images.get(ref)
    return ref
