"""Requests policies send themselves (`send-request`, `send-one-way-request`, Content Safety checks).

They travel on the process-wide aiohttp session of `gateway/backends/proxy.py` (so connections are shared and
no redirect is ever followed), and are bounded: the whole exchange within the policy's timeout, the answer's
body to `max_response_bytes` (a larger one fails with `ResponseTooLarge`, so a hostile endpoint cannot make the
gateway buffer gigabytes), header names and values checked before anything is sent. One-way requests run in
the background, at most `max_in_flight` at a time per process; beyond that they are dropped and logged once
per burst (APIM gives no delivery guarantee for them either).
"""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp

from gateway.backends.proxy import UpstreamClient, upstream_headers
from gateway.errors import BackendError, BackendTimeout, GatewayError, OutboundRequestInvalid, ResponseTooLarge
from policies.context import Body, Headers, Response
from policies.services import OutgoingRequest

logger = logging.getLogger(__name__)

#: The most of an answer's body a policy's request reads (token endpoints and Content Safety answer in KBs).
MAX_RESPONSE_BYTES = 1024 * 1024
#: One-way requests in flight per process before further ones are dropped.
MAX_ONE_WAY_IN_FLIGHT = 64
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class OutboundClient:
    def __init__(self, upstream: UpstreamClient, max_response_bytes: int = MAX_RESPONSE_BYTES, max_in_flight: int = MAX_ONE_WAY_IN_FLIGHT) -> None:
        self._upstream = upstream
        self._max_response_bytes = max_response_bytes
        self._max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dropped = 0

    async def send(self, request: OutgoingRequest, timeout: float) -> Response:
        """Send and read the whole answer; `BackendError`, `BackendTimeout`, `ResponseTooLarge` or
        `OutboundRequestInvalid` when that cannot be done."""
        headers = checked_headers(request.headers)
        try:
            async with asyncio.timeout(timeout):
                upstream = await self._upstream.send(request.method, request.url, headers, request.body)
                try:
                    body = await self._read(upstream)
                finally:
                    upstream.release()
        except TimeoutError as exc:
            raise BackendTimeout("The policy's request did not get an answer in time.") from exc
        except aiohttp.ClientError as exc:
            raise BackendError("The policy's request could not be sent.") from exc
        return Response(upstream.status, upstream.reason or "", Headers(upstream_headers(upstream)), Body(body))

    def send_one_way(self, request: OutgoingRequest, timeout: float) -> None:
        """Start sending in the background; never raises (problems are logged)."""
        if len(self._in_flight) >= self._max_in_flight:
            if self._dropped == 0:
                logger.warning("Dropping one-way requests: %d are already in flight.", self._max_in_flight)
            self._dropped += 1
            return
        if self._dropped:
            logger.warning("Dropped %d one-way requests while too many were in flight.", self._dropped)
            self._dropped = 0
        task = asyncio.get_running_loop().create_task(self._one_way(request, timeout))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _one_way(self, request: OutgoingRequest, timeout: float) -> None:
        try:
            await self.send(request, timeout)
        except GatewayError as exc:
            logger.warning("A one-way request failed: %s", exc.message)

    async def _read(self, upstream: aiohttp.ClientResponse) -> bytes:
        declared = upstream.content_length
        if declared is not None and declared > self._max_response_bytes:
            raise ResponseTooLarge(f"The answer declares {declared} bytes; at most {self._max_response_bytes} are read.")
        chunks: list[bytes] = []
        size = 0
        async for chunk in upstream.content.iter_any():
            size += len(chunk)
            if size > self._max_response_bytes:
                raise ResponseTooLarge(f"The answer is larger than {self._max_response_bytes} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Give one-way requests in flight a moment to finish, then cancel the rest."""
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def checked_headers(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers as given, if HTTP can carry them: token names, latin-1 values without CR, LF or NUL."""
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value) or not value.isascii() and not _latin1(value):
            raise OutboundRequestInvalid(f"The header {name[:60]!r} cannot be sent: HTTP allows no such name or value.")
    return list(headers)


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
