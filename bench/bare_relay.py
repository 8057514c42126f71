"""The floor under the gateway: a relay with the same server and client stack (uvicorn, aiohttp) and no logic.

    .venv/bin/python -m bench.bare_relay PORT UPSTREAM_URL

No keys, policies, accounting or header filtering: the request goes to `UPSTREAM_URL` as it came, and the
answer comes back chunk by chunk. `bench/overhead.py` runs it beside the gateway, so what the gateway adds over
this is its own work, and what this adds over the direct call is the extra hop on the machine.
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn

_SKIPPED = {b"host", b"content-length", b"transfer-encoding", b"connection"}


class BareRelay:
    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            if self._session is not None:
                await self._session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(name.decode(), value.decode()) for name, value in scope["headers"] if name not in _SKIPPED]
        url = self._upstream + scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        async with self._session.request(scope["method"], url, headers=headers, data=body or None) as upstream:
            answer = [(name.lower().encode(), value.encode()) for name, value in upstream.headers.items() if name.lower().encode() not in _SKIPPED]
            await send({"type": "http.response.start", "status": upstream.status, "headers": answer})
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


if __name__ == "__main__":
    port, upstream = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(BareRelay(upstream), host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="auto", http="httptools")
