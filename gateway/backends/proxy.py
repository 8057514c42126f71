"""Forwarding to a backend and relaying its answer, chunk by chunk when it streams.

One `aiohttp.ClientSession` per process carries every backend call on the request path: it keeps
connections alive, costs ~0.2 ms CPU per request where httpx costs ~1 ms (see the proxy-client-cost
reference), and never decompresses, so bytes pass through as the backend sent them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import aiohttp
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.backends.health import CONNECTION_FAILURE, TIMEOUT
from gateway.errors import BackendError, BackendTimeout
from gateway.handling.usage import DONE_EVENT, StreamTap
from policies.usage import Usage

if TYPE_CHECKING:
    from gateway.backends.config import Timeouts

#: Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those the gateway recomputes.
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authenticate", "proxy-authorization", "host", "content-length",
    }
)  # fmt: skip
#: Client headers that carry the client's own credentials: never forwarded as the client sent them.
CLIENT_CREDENTIAL_HEADERS = frozenset({"api-key", "ocp-apim-subscription-key", "authorization", "cookie"})
_DROPPED_REQUEST_HEADERS = _HOP_BY_HOP | {"accept-encoding", "expect"}
#: The host writes its own `date`; the backend's `server` would only tell clients what runs behind the gateway.
_DROPPED_RESPONSE_HEADERS = _HOP_BY_HOP | {"date", "server"}
_KEEPALIVE = b": keep-alive\n\n"

logger = logging.getLogger(__name__)


class UpstreamClient:
    """The process-wide backend HTTP client, created on first use inside the running event loop."""

    def __init__(self, connect_timeout: float, read_timeout: float, pool_size: int = 512) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                # One session serves every client: a backend's Set-Cookie must never ride along on another's request.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float | None = None,
        timeouts: Timeouts | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return once the response headers arrived (within `timeout` seconds, when given);
        the caller must release the response.

        A backend's own `timeouts` replace the session's for this request: `connect`; `first_byte` until the
        response headers (aiohttp's sock_read, which starts once the body is sent); then `idle` between chunks
        of the body, which the relay reads. A hung backend thus fails fast without cutting long generations.
        """
        client_timeout = self._timeout
        if timeouts is not None:
            client_timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_read=timeouts.first_byte)
        request = self._get_session().request(method, url, headers=headers, data=body or None, allow_redirects=False, timeout=client_timeout)
        try:
            upstream = await (asyncio.wait_for(request, timeout) if timeout else request)
        except TimeoutError as exc:
            raise BackendTimeout() from exc
        except aiohttp.ClientError as exc:
            raise BackendError() from exc
        if timeouts is not None and timeouts.idle != timeouts.first_byte:
            _wait_per_chunk(upstream, timeouts.idle)
        return upstream

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _wait_per_chunk(upstream: aiohttp.ClientResponse, seconds: float | None) -> None:
    """From now on, allow `seconds` of silence per body chunk (aiohttp keeps one read timeout per connection).

    A body that already arrived whole has released its connection, and aiohttp dropped its timer: nothing to do.
    """
    connection = upstream.connection
    if connection is not None and connection.protocol is not None and not upstream.content.is_eof():
        connection.protocol.read_timeout = seconds
        connection.protocol.start_timeout()


def forwardable(name: str) -> bool:
    """False for hop-by-hop request headers and those the gateway sets itself."""
    return name.lower() not in _DROPPED_REQUEST_HEADERS


def upstream_headers(upstream: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    """The backend's response headers minus hop-by-hop ones, `date` and `server`."""
    return [(name, value) for name, value in upstream.headers.items() if name.lower() not in _DROPPED_RESPONSE_HEADERS]


def raw_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def is_streaming(upstream: aiohttp.ClientResponse) -> bool:
    """SSE, and bodies of unknown length (speech audio), are relayed as they arrive."""
    return upstream.content_type == "text/event-stream" or upstream.content_length is None


async def read_body(upstream: aiohttp.ClientResponse) -> bytes:
    try:
        return await upstream.read()
    except TimeoutError as exc:
        raise BackendTimeout() from exc
    except aiohttp.ClientError as exc:
        raise BackendError() from exc
    finally:
        upstream.release()


class StreamTruncated(Exception):
    """The backend's stream ended before its end: raised out of the relay so the server aborts the client's response.

    An ASGI server that sees an application raise after the response started closes the connection without the
    chunked body's terminating chunk (uvicorn does, under both hosts), so the client sees a truncated transfer —
    the `openai` SDK raises, curl exits 18 — never an answer that merely looks short.
    """


class _QuietTruncation(logging.Filter):
    """Keeps the server's "Exception in ASGI application" traceback out of the logs for a deliberate abort."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamTruncated))


# Both hosts serve through uvicorn (the local host, and the Functions HTTP streaming extension's web server).
logging.getLogger("uvicorn.error").addFilter(_QuietTruncation())

#: How an OpenAI stream ends: `[DONE]` for chat and completions, a final event for the Responses API. Each is
#: anchored by a line start or the JSON's own quotes, so no text inside a JSON string can match.
_END_MARKERS = (
    b"\ndata: [DONE]", b"\ndata:[DONE]",
    *(f"\nevent: {kind}".encode() for kind in ("response.completed", "response.incomplete", "response.failed")),
    *(f'"type":{space}"{kind}"'.encode() for kind in ("response.completed", "response.incomplete", "response.failed") for space in ("", " ")),
)  # fmt: skip
_LONGEST_MARKER = max(map(len, _END_MARKERS))


class EndWatch:
    """Whether an SSE stream has shown its end marker, found without parsing its events (for untapped streams)."""

    __slots__ = ("ended", "_tail")

    def __init__(self) -> None:
        self.ended = False
        self._tail = b"\n"  # the stream's first line starts a line too

    def feed(self, chunk: bytes) -> None:
        if self.ended:
            return
        window = self._tail + chunk
        if (b"[DONE]" in window or b"response." in window) and any(marker in window for marker in _END_MARKERS):
            self.ended = True
        self._tail = window[-_LONGEST_MARKER:]


class RelayResponse(StreamingResponse):
    """Streams a backend response to the client and closes the backend request the moment the client leaves.

    Starlette notices a disconnect only when a write fails; a stream waiting on a slow model would hold the
    backend request open until its next chunk. Listening for `http.disconnect` alongside ends it at once.
    SSE keep-alive comments come from one timer per silence interval that writes only after a silence and only
    between events, so relaying a chunk costs no task or timer of its own.

    A backend stream that breaks off (connection error, idle timeout) or ends without its end marker (`[DONE]`, a
    Responses API final event) aborts the client's response (`StreamTruncated`): a truncated answer never looks
    complete. With a `tap`, SSE events pass through it (usage, text); when it holds back a `[DONE]` for a usage
    chunk the client asked for and the backend did not send, `estimate()` supplies the usage. `on_end(aborted)`
    runs once the stream is over, `aborted` being true when the backend's stream did not reach its end (client
    gone, backend broke off); `on_break(reason)` hears about a backend that broke off or went silent mid-stream.
    """

    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
        status: int,
        headers: list[tuple[bytes, bytes]],
        keepalive_seconds: float,
        tap: StreamTap | None = None,
        on_end: Callable[[bool], Awaitable[None]] | None = None,
        on_break: Callable[[str], None] | None = None,
        estimate: Callable[[], Awaitable[Usage]] | None = None,
    ) -> None:
        self._upstream = upstream
        self._keepalive_seconds = keepalive_seconds
        self._tap = tap
        self._on_end = on_end
        self._on_break = on_break
        self._estimate = estimate
        self._complete = False
        self._sse = upstream.content_type == "text/event-stream"
        self._watch = EndWatch() if self._sse and tap is None else None
        self._at_event_boundary = True
        self._sending = False
        self._client_gone = False
        self._last_write = 0.0
        self._keep_alive_timer: asyncio.TimerHandle | None = None
        self._keep_alive_write: asyncio.Task[None] | None = None
        super().__init__(self._relay(), status_code=status)
        self.raw_headers.extend(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.get_running_loop().create_task(self._cancel_on_disconnect(receive, task))
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
            task.uncancel()  # our own cancellation: the client left, which is not an error
        finally:
            watcher.cancel()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # release the backend now, not at GC
            self._upstream.close()
            if self._on_end is not None:
                await self._on_end(not self._complete)

    async def _cancel_on_disconnect(self, receive: Receive, task: asyncio.Task[object]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._client_gone = True
        task.cancel()

    async def stream_response(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._last_write = loop.time()
        if self._sse:
            self._arm_keep_alive(send)
        try:
            async for chunk in self.body_iterator:
                self._sending = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._sending = False
                self._last_write = loop.time()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if self._keep_alive_timer is not None:
                self._keep_alive_timer.cancel()
            if self._keep_alive_write is not None:
                self._keep_alive_write.cancel()

    def _arm_keep_alive(self, send: Send) -> None:
        """One timer per silence interval (not per chunk): on expiry, write a comment if still silent."""
        loop = asyncio.get_running_loop()
        due = self._last_write + self._keepalive_seconds
        if loop.time() < due or self._sending or not self._at_event_boundary:
            self._keep_alive_timer = loop.call_at(max(due, loop.time() + 0.01), self._arm_keep_alive, send)
            return
        self._last_write = loop.time()
        self._keep_alive_write = loop.create_task(self._write_keep_alive(send))
        self._keep_alive_timer = loop.call_at(self._last_write + self._keepalive_seconds, self._arm_keep_alive, send)

    async def _write_keep_alive(self, send: Send) -> None:
        self._sending = True
        try:
            await send({"type": "http.response.body", "body": _KEEPALIVE, "more_body": True})
        finally:
            self._sending = False

    async def _relay(self) -> AsyncIterator[bytes]:
        """The backend's bytes as they arrive (whole SSE events when tapped); StreamTruncated if they stop early."""
        upstream, tap, watch = self._upstream, self._tap, self._watch
        try:
            async for chunk in upstream.content.iter_any():
                if tap is not None:
                    chunk = tap.feed(chunk)
                    if not chunk:
                        continue
                elif watch is not None:
                    self._at_event_boundary = chunk.endswith(b"\n\n")
                    watch.feed(chunk)
                yield chunk
            if tap is not None and (rest := tap.flush()):
                yield rest
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._broke_off(TIMEOUT if isinstance(exc, asyncio.TimeoutError) else CONNECTION_FAILURE, f"broke off ({type(exc).__name__})")
            raise StreamTruncated() from exc
        finally:
            upstream.release()
        if self._sse and not (tap.completed if tap is not None else watch is not None and watch.ended):
            self._broke_off(CONNECTION_FAILURE, "ended without its end marker")
            raise StreamTruncated()
        if tap is not None and tap.done_held:
            yield tap.usage_event(await self._estimate()) if self._estimate is not None else DONE_EVENT
        self._complete = True

    def _broke_off(self, reason: str, how: str) -> None:
        logger.warning("Backend stream %s; the client's response is aborted.", how)
        if self._on_break is not None:
            self._on_break(reason)
