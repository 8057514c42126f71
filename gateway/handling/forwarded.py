"""What the trusted proxies in front of the gateway say about a request: the client's address, scheme and host.

`X-Forwarded-For` is a list that every proxy appends its peer to, so only its right end is written by proxies
the operator runs; whatever the client wrote sits to the left. With `hops` trusted proxies in front
(`GATEWAY_TRUSTED_PROXY_HOPS`), the client is the entry `hops` places from the right; the same position is read
from `X-Forwarded-Proto` and `X-Forwarded-Host`. With no trusted hop, or a header shorter than the chain (a
request that went around a proxy), the TCP peer and the request's own scheme and host are used instead.

Addresses are normalised before any policy sees them, so one caller is one counter key and one `ip-filter`
match: IPv4-mapped IPv6 (`::ffff:10.1.2.3`) becomes IPv4, ports, brackets and IPv6 zone ids are removed, IPv6
is written in its compressed form. An entry that is no IP address at all counts as absent.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from starlette.datastructures import Headers
from starlette.requests import Request

_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def normalise_address(text: str) -> str | None:
    """`text` as a canonical IP address (`[::ffff:10.0.0.1]:443` -> `10.0.0.1`), or None when it is none.

    Clients come back, and parsing an address is the costly part: recent answers are kept (entries too long to
    be an address with a port are not).
    """
    return _normalised(text) if len(text) <= _MAX_ADDRESS_CHARS else _normalised.__wrapped__(text)


#: `[` + the longest IPv6 text form (45, IPv4-mapped) + `%` zone + `]:65535`, with room to spare.
_MAX_ADDRESS_CHARS = 80


@functools.lru_cache(maxsize=4096)
def _normalised(text: str) -> str | None:
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]  # fe80::1%eth0
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def trusted_entry(headers: Headers, name: str, hops: int) -> str | None:
    """The entry of the comma-separated header `name` written by the outermost trusted proxy, if there is one."""
    if hops <= 0:
        return None
    entries = [entry.strip() for value in headers.getlist(name) for entry in value.split(",")]
    return entries[-hops] if len(entries) >= hops else None


def client_address(headers: Headers, peer: str | None, hops: int) -> str:
    """The caller's normalised IP address: from `X-Forwarded-For` through `hops` trusted proxies, else the peer."""
    forwarded = trusted_entry(headers, "x-forwarded-for", hops)
    address = normalise_address(forwarded) if forwarded is not None else None
    return address or normalise_address(peer or "") or ""


def request_origin(request: Request, hops: int) -> tuple[str, str]:
    """The scheme and host the client used: the trusted `X-Forwarded-Proto`/`-Host` entries, else the request's own."""
    headers = request.headers
    proto = (trusted_entry(headers, "x-forwarded-proto", hops) or "").lower()
    forwarded_host = trusted_entry(headers, "x-forwarded-host", hops) or ""
    valid_host = len(forwarded_host) <= 260 and _HOST.fullmatch(forwarded_host) is not None
    scheme = proto if proto in ("http", "https") else request.url.scheme
    return scheme, forwarded_host if valid_host else (headers.get("host") or request.url.netloc)
