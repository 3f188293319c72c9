"""A raw HTTP client for the fake server's own tests: sees drops and non-JSON bodies as they are."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawHTTP:
    """One request per connection with http.client: sees drops and non-JSON bodies as they are."""

    def request(
        self,
        url: str,
        method: str = "GET",
        path: str = "/",
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            connection.request(
                method, path, body=data, headers={"content-type": "application/json", **(headers or {})}
            )
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def chat(self, url: str, content: str = "Hello there. How are you?", **fields: Any) -> Reply:
        body = {
            "model": "meta/llama3-8b-instruct",
            "messages": [{"role": "user", "content": content}],
            **fields,
        }
        return self.request(url, "POST", "/v1/chat/completions", body)
