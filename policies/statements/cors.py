"""`<cors>`: let browser pages on other origins call the API, as APIM's cors policy does.

    <cors allow-credentials="false" terminate-unmatched-request="true">
        <allowed-origins><origin>https://chat.contoso.com</origin></allowed-origins>
        <allowed-methods preflight-result-max-age="300"><method>POST</method></allowed-methods>
        <allowed-headers><header>content-type</header><header>api-key</header></allowed-headers>
        <expose-headers><header>x-ratelimit-remaining-tokens</header></expose-headers>
    </cors>

It has two entry points:

* `run` (inbound) handles actual requests that carry `Origin`. When the origin and the method are allowed,
  the final response gets `Access-Control-Allow-Origin` (`*` when any origin is allowed, otherwise the
  origin with `Vary: Origin`), plus `Access-Control-Allow-Credentials` and `Access-Control-Expose-Headers`.
  When they are not, and terminate-unmatched-request is on (the default), the request is refused with 403
  and reason `CorsOriginNotAllowed` or `CorsMethodNotAllowed`. APIM answers an empty 200 instead; a 403
  tells the caller what happened. With the attribute off, the request goes ahead without CORS headers, so
  the browser hides the answer from the page.
* `preflight` answers `OPTIONS` preflights. The gateway calls it before checking subscriptions, because
  browsers send preflights without credentials.

Without `<allowed-methods>` only GET and POST are allowed. Without `<allowed-headers>`, a preflight that
asks for any header is refused. Origins are compared by scheme, host and port, filling in the default
port. Methods are compared in upper case, header names ignoring case, and `*` allows anything. Everything
is computed at load, so expressions are refused. `allow-credentials="true"` with origin `*` is a load
error, as in APIM.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

#: Each list element of `<cors>` and the name of its items.
_LISTS = {"allowed-origins": "origin", "allowed-methods": "method", "allowed-headers": "header", "expose-headers": "header"}
_DEFAULT_METHODS = ("GET", "POST")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class CorsSettings(Settings):
    allow_credentials: bool = attr(default=False)
    terminate_unmatched_request: bool = attr(default=True)


class AllowedMethodsSettings(Settings):
    preflight_result_max_age: int = attr(minimum=0, default=0)


@register
class Cors(Statement):
    element = "cors"
    sections = frozenset({"inbound"})

    def __init__(
        self,
        origins: frozenset[str] | None,
        methods: frozenset[str] | None,
        headers: frozenset[str] | None,
        expose: tuple[str, ...],
        credentials: bool,
        terminate: bool,
        max_age: int,
    ) -> None:
        #: Normalised origins, methods and lower-case header names; None allows any.
        self.origins = origins
        self.methods = methods
        self.headers = headers
        self.expose = expose
        self.credentials = credentials
        self.terminate = terminate
        self.max_age = max_age

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Cors:
        settings = loader.settings(element, CorsSettings)
        credentials = settings.allow_credentials
        lists: dict[str, list[tuple[PolicyElement, str]]] = {}
        max_age = 0
        for child in loader.children(element, tuple(_LISTS)):
            if child.tag in lists:
                raise loader.fail(child, f"<{child.tag}> may appear once.")
            if child.tag == "allowed-methods":
                max_age = loader.settings(child, AllowedMethodsSettings).preflight_result_max_age
            else:
                loader.no_attributes(child)
            lists[child.tag] = _items(child, loader, _LISTS[child.tag])
        if "allowed-origins" not in lists:
            raise loader.fail(element, "Add <allowed-origins> with at least one <origin>.")
        origins = _origins(lists["allowed-origins"], loader)
        if credentials and origins is None:
            raise loader.fail(element, 'allow-credentials="true" cannot be combined with origin "*"; list the allowed origins.')
        methods = [text.upper() for _, text in lists.get("allowed-methods", [])] or list(_DEFAULT_METHODS)
        headers = [text.lower() for _, text in lists.get("allowed-headers", [])]
        expose = tuple(text for _, text in lists.get("expose-headers", []))
        return cls(origins, _set(methods), _set(headers), expose, credentials, settings.terminate_unmatched_request, max_age)

    async def run(self, context: Context) -> None:
        origin = context.Request.Headers.GetValueOrDefault("Origin")
        if origin is None:
            return
        if not self._origin_allowed(origin):
            self._unmatched("CorsOriginNotAllowed", f"Origin {origin} is not allowed.")
        elif not _allows(self.methods, context.Request.Method.upper()):
            self._unmatched("CorsMethodNotAllowed", f"Method {context.Request.Method} is not allowed for cross-origin requests.")
        else:
            context.response_headers.extend(self._allow_origin(origin))
            if self.expose:
                context.response_headers.append(("Access-Control-Expose-Headers", ", ".join(self.expose)))

    def preflight(self, context: Context) -> PolicyResponse:
        """The answer to an OPTIONS preflight: 200 with the grants, or 403 if the origin, method or a header is not allowed."""
        request = context.Request.Headers
        origin = request.GetValueOrDefault("Origin")
        method = request.GetValueOrDefault("Access-Control-Request-Method")
        asked = [name.strip().lower() for name in (request.GetValueOrDefault("Access-Control-Request-Headers") or "").split(",")]
        asked = [name for name in asked if name]
        if origin is None or method is None:
            return _forbidden("Not a CORS preflight: Origin and Access-Control-Request-Method are required.")
        if not self._origin_allowed(origin):
            return _forbidden(f"Origin {origin} is not allowed.")
        if not _allows(self.methods, method.upper()):
            return _forbidden(f"Method {method} is not allowed for cross-origin requests.")
        refused = [name for name in asked if not _allows(self.headers, name)]
        if refused:
            return _forbidden(f"Headers not allowed for cross-origin requests: {', '.join(refused)}.")
        grants = [*self._allow_origin(origin), ("Access-Control-Allow-Methods", method.upper())]
        if asked:
            grants.append(("Access-Control-Allow-Headers", ", ".join(asked)))
        grants.append(("Access-Control-Max-Age", str(self.max_age)))
        return PolicyResponse(200, b"", grants, "OK")

    def _origin_allowed(self, origin: str) -> bool:
        return self.origins is None or _origin_key(origin) in self.origins

    def _allow_origin(self, origin: str) -> list[tuple[str, str]]:
        if self.origins is None:
            return [("Access-Control-Allow-Origin", "*")]
        grants = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.credentials:
            grants.append(("Access-Control-Allow-Credentials", "true"))
        return grants

    def _unmatched(self, reason: str, message: str) -> None:
        if self.terminate:
            raise PolicyError(self.element, reason, message, PolicyResponse.error(403, message))


def _items(element: PolicyElement, loader: Loader, item: str) -> list[tuple[PolicyElement, str]]:
    """The literal texts of a list element's items (at least one), each with its element for error lines."""
    items: list[tuple[PolicyElement, str]] = []
    for child in loader.children(element, (item,)):
        loader.no_attributes(child)
        text = loader.text(child)
        if not text.is_constant or not str(text.constant).strip():
            raise loader.fail(child, f"<{item}> needs literal text (or a named value); expressions are not supported.")
        items.append((child, str(text.constant).strip()))
    if not items:
        raise loader.fail(element, f"Add at least one <{item}>.")
    return items


def _origins(items: list[tuple[PolicyElement, str]], loader: Loader) -> frozenset[str] | None:
    if any(text == "*" for _, text in items):
        if len(items) > 1:
            raise loader.fail(items[0][0], "Use either a single <origin>*</origin> or a list of origins, not both.")
        return None
    origins: set[str] = set()
    for child, text in items:
        key = _origin_key(text)
        if key is None:
            raise loader.fail(child, f"{text!r} is not an origin; write scheme://host[:port].")
        origins.add(key)
    return frozenset(origins)


def _origin_key(text: str) -> str | None:
    """`scheme://host:port` with the default port filled in, so `https://a.com` and `https://a.com:443/` match."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return f"{parts.scheme.lower()}://{parts.hostname}" + (f":{port}" if port else "")


def _set(names: list[str]) -> frozenset[str] | None:
    return None if "*" in names else frozenset(names)


def _allows(allowed: frozenset[str] | None, name: str) -> bool:
    return allowed is None or name in allowed


def _forbidden(message: str) -> PolicyResponse:
    return PolicyResponse.error(403, message)
