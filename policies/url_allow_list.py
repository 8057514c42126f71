"""Which URLs policies may send requests to: `set-backend-service base-url` and `send-request` share one list.

A URL from request data (`base-url="@(context.Request.Headers…)"`) hands the caller the whole destination, and
every header a policy set goes with it, a managed-identity token included. So the gateway only sends to URLs
the operator allowed: the configured backends' URLs always, plus the entries of `GATEWAY_ALLOWED_URLS`:

* a host, `api.example.com` (any scheme, any port) or `api.example.com:8443` (that port only), or every
  subdomain of one, `*.example.com` (not `example.com` itself);
* a URL prefix, `https://hooks.example.com/services/` (that scheme, host and port, and paths under it: a
  prefix without a trailing `/` ends at a path segment, so `https://h/v1` allows `/v1` and `/v1/x`, not `/v10`);
* `*`: anything (APIM's behaviour; only for gateways whose every policy author and caller is trusted).

A URL is refused before any comparison when it is not http(s), carries user info (`https://a@b/`), a `.` or
`..` path segment (plain or percent-encoded), a backslash, whitespace or a control character: the forms where
what a string comparison sees and where a client library connects can differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from policies.errors import PolicyError, PolicyResponse

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
#: An IPv6 literal as `urlsplit` gives it (without brackets); allowed in URLs and in URL prefixes only.
_IPV6 = re.compile(r"[0-9a-f]*:[0-9a-f:.]*")
_UNSAFE = re.compile(r"[\\\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class _Prefix:
    scheme: str
    host: str
    port: int
    path: str

    def covers(self, scheme: str, host: str, port: int, path: str) -> bool:
        if (scheme, host, port) != (self.scheme, self.host, self.port):
            return False
        if not self.path or self.path.endswith("/"):
            return (path or "/").startswith(self.path or "/")
        return path == self.path or path.startswith(self.path + "/")


@dataclass(frozen=True)
class _Host:
    name: str
    #: None: any port.
    port: int | None

    def covers(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name


@dataclass(frozen=True)
class UrlAllowList:
    hosts: tuple[_Host, ...] = ()
    prefixes: tuple[_Prefix, ...] = ()
    anything: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> UrlAllowList:
        """The list from its entries (see the module docstring); `ValueError` names an entry it cannot read."""
        hosts: list[_Host] = []
        prefixes: list[_Prefix] = []
        anything = False
        for raw in entries:
            entry = raw.strip()
            if entry == "*":
                anything = True
            elif "://" in entry:
                prefixes.append(_prefix(entry))
            elif entry:
                hosts.append(_host(entry))
        return cls(tuple(hosts), tuple(prefixes), anything)

    def refusal(self, url: str) -> str | None:
        """Why `url` may not be sent to, or None when it may."""
        parts, problem = _checked(url)
        if problem is not None or parts is None:
            return problem
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS[parts.scheme.lower()]
        if self.anything or any(entry.covers(host, port) for entry in self.hosts):
            return None
        if any(entry.covers(parts.scheme.lower(), host, port, parts.path) for entry in self.prefixes):
            return None
        return f"{parts.scheme.lower()}://{parts.netloc} is not a configured backend and not in GATEWAY_ALLOWED_URLS"


def _checked(url: str) -> tuple[SplitResult | None, str | None]:
    """The URL taken apart, or why it is refused whatever the list says."""
    if _UNSAFE.search(url):
        return None, "the URL contains whitespace, a backslash or a control character"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, "the URL cannot be parsed"
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None, "it is not an http(s) URL"
    if "@" in parts.netloc:
        return None, "the URL carries user info (user@host)"
    if not (_HOST.fullmatch(parts.hostname) or _IPV6.fullmatch(parts.hostname)) or "*" in parts.hostname or port == 0:
        return None, f"the host {parts.hostname!r} is not a plain host name or address"
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return None, "the URL path has a '.' or '..' segment"
    return parts, None


def _prefix(entry: str) -> _Prefix:
    parts, problem = _checked(entry)
    if parts is None or problem is not None or parts.query or parts.fragment or "*" in entry:
        raise ValueError(f"{entry!r} is not an http(s) URL prefix such as https://hooks.example.com/services/")
    scheme = parts.scheme.lower()
    return _Prefix(scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS[scheme], parts.path)


def _host(entry: str) -> _Host:
    name, _, port = entry.lower().rpartition(":") if entry.count(":") == 1 else (entry.lower(), "", "")
    if not _HOST.fullmatch(name) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{entry!r} is not a host (api.example.com, api.example.com:8443 or *.example.com) or a URL prefix")
    return _Host(name, int(port) if port else None)


def require_allowed(allow_list: UrlAllowList, url: str, source: str) -> None:
    """Refuse `url` with a `PolicyError` (on-error runs) unless the list allows it; the client learns no detail."""
    refusal = allow_list.refusal(url)
    if refusal is not None:
        message = f"<{source}> may not send to {url[:200]!r}: {refusal}."
        raise PolicyError(source, "UrlNotAllowed", message, PolicyResponse.error(403, "The gateway may not send requests to this URL."))
