"""Deadlines for slow clients on the local host: no connection holds a slot by sending nothing, or a byte at a time.

uvicorn alone times out only the silence after a response (`timeout_keep_alive`), and any byte that arrives
cancels that timer for good: a connection that never sends, or drip-feeds its headers or body, stays open
forever. This protocol (uvicorn's httptools protocol plus two deadlines) closes it:

* **headers**: the request line and headers must be complete within `headers` seconds of the connection opening
  or of the previous response ending, however the bytes are spread (the connection is closed, no answer);
* **body**: the body must be complete within `body` seconds of the end of the headers (the client gets
  `408 Request Timeout` in the OpenAI error shape, unless a response already started, and the connection closes);
* **idle**: between requests, uvicorn's keep-alive timeout (`idle` seconds) still applies.

Time spent by the gateway itself (the backend call, a long stream) is never limited here. Under Azure Functions
the platform's front end and host own the client connection, and these settings have no effect.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config.settings import ClientTimeouts

_BODY_LATE = orjson.dumps({"error": {"code": "RequestTimeout", "message": "The request body did not arrive in time."}})
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY_LATE)).encode() + b"\r\n\r\n" + _BODY_LATE
)


class _DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header and body deadlines above (one timer per connection)."""

    timeouts: ClientTimeouts
    _deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, expire: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.timeouts.headers, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if not self.transport.is_closing():
            self._arm(self.timeouts.body, self._body_late)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm(self.timeouts.headers, self._headers_late)

    def _headers_late(self) -> None:
        self._deadline = None
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_started:  # the application finds the client gone
            self.transport.write(_408)
        self.transport.close()


def protocol(timeouts: ClientTimeouts) -> type[asyncio.Protocol]:
    """The protocol class to hand uvicorn (`http=`), with `timeouts` in force."""
    return type("DeadlineProtocol", (_DeadlineProtocol,), {"timeouts": timeouts})


class WorkerProtocol(_DeadlineProtocol):
    """For `serve --workers N`: uvicorn imports the protocol by name in each worker process (a class made by
    `protocol()` cannot travel there), so its deadlines come from the environment, read once per process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = _environment_timeouts()


#: What to hand uvicorn as `http=` when it starts worker processes.
WORKER_PROTOCOL = f"{__name__}:{WorkerProtocol.__name__}"


@functools.cache
def _environment_timeouts() -> ClientTimeouts:
    from gateway.config.settings import Settings

    return Settings.from_env().client_timeouts
