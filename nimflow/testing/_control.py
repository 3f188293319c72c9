"""The fake server's control endpoints under /_fake/: its request log, fault plan and live options.

They are never logged and never need the API key; tests and `FakeServerProcess` drive a server
in another process through them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from . import _openai as oa
from ._faults import FaultPlan
from ._http import Disconnected, Receive, Send, read_body, respond

if TYPE_CHECKING:
    from ._app import FakeApp

ControlRoute = Callable[[Receive, Send], Awaitable[None]]


class ControlRoutes:
    """The /_fake/ routes of one FakeApp."""

    def __init__(self, app: FakeApp) -> None:
        self._app = app

    def routes(self) -> dict[tuple[str, str], ControlRoute]:
        return {
            ("GET", "/_fake/log"): self.get_log,
            ("DELETE", "/_fake/log"): self.clear_log,
            ("GET", "/_fake/faults"): self.get_faults,
            ("POST", "/_fake/faults"): self.set_faults,
            ("GET", "/_fake/config"): self.get_config,
            ("POST", "/_fake/config"): self.set_config,
        }

    async def get_log(self, receive: Receive, send: Send) -> None:
        records = [r.to_json() for r in self._app.log.snapshot()]
        await respond(send, 200, oa.dumps({"requests": records}))

    async def clear_log(self, receive: Receive, send: Send) -> None:
        self._app.log.clear()
        await respond(send, 200, b'{"cleared":true}')

    async def get_faults(self, receive: Receive, send: Send) -> None:
        await respond(send, 200, oa.dumps(self._app.faults.plan.to_json()))

    async def set_faults(self, receive: Receive, send: Send) -> None:
        try:
            data = json.loads(await read_body(receive) or b"{}")
            plan = FaultPlan.coerce(data if isinstance(data, dict | str) or data is None else str(data))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            await respond(send, 400, oa.error_body(f"Bad fault plan: {error}", "BadRequestError", 400))
            return
        except Disconnected:
            return
        self._app.configure(faults=plan)
        await respond(send, 200, oa.dumps(plan.to_json()))

    async def get_config(self, receive: Receive, send: Send) -> None:
        await respond(send, 200, oa.dumps(self._app.config.public()))

    async def set_config(self, receive: Receive, send: Send) -> None:
        try:
            data = json.loads(await read_body(receive) or b"{}")
            self._app.configure(**data)
        except (ValueError, TypeError, AttributeError) as error:
            await respond(send, 400, oa.error_body(f"Bad options: {error}", "BadRequestError", 400))
            return
        except Disconnected:
            return
        await respond(send, 200, oa.dumps(self._app.config.public()))
