"""The `context` object that policy expressions read and statements change, shaped like APIM's.

Members visible to expressions are the PascalCase attributes and methods declared here with type hints
(`context.Request.Headers.GetValueOrDefault(...)`); the expression compiler checks every member chain
against these declarations at load time, so an unsupported member is a load error, never a runtime surprise.
snake_case members are the gateway's own API for statements and are invisible to expressions.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Optional

import orjson

if TYPE_CHECKING:
    from policies.services import Services
    from policies.usage import Usage, UsageListener

#: A parsed JSON value (`JObject`, `JArray`, `JToken` in APIM's Newtonsoft terms).
JToken = Any


class _MultiMap:
    """Ordered, multi-valued name/value pairs; subclasses decide whether names ignore case."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)

    def _same(self, name: str) -> Callable[[str], bool]:
        return name.__eq__

    def GetValueOrDefault(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """All values of `name` joined with commas, as APIM does, or `default`."""
        values = self.get_all(name)
        return ",".join(values) if values else default

    def ContainsKey(self, name: str) -> bool:
        return bool(self.get_all(name))

    def __getitem__(self, name: str) -> str:
        value = self.GetValueOrDefault(name)
        if value is None:
            raise KeyError(name)
        return value

    def get_all(self, name: str) -> list[str]:
        same = self._same(name)
        return [v for k, v in self._items if same(k)]

    def set(self, name: str, values: Iterable[str]) -> None:
        self.remove(name)
        self._items.extend((name, v) for v in values)

    def append(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        same = self._same(name)
        self._items = [(k, v) for k, v in self._items if not same(k)]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)


class Headers(_MultiMap):
    """HTTP headers (request or response): names ignore case."""

    def _same(self, name: str) -> Callable[[str], bool]:
        lower = name.lower()
        return lambda other: other.lower() == lower


class QueryParameters(_MultiMap):
    """Query string parameters: names are case-sensitive."""


class ReadOnlyMap:
    """A string-to-string map such as `MatchedParameters`."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def ContainsKey(self, name: str) -> bool:
        return name in self._values

    def GetValueOrDefault(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self._values.get(name, default)


class Url:
    Scheme: str
    Host: str
    Port: int
    Path: str
    Query: QueryParameters

    def __init__(self, scheme: str, host: str, port: int, path: str, query: QueryParameters) -> None:
        self.Scheme, self.Host, self.Port, self.Path, self.Query = scheme, host, port, path, query

    @property
    def QueryString(self) -> str:
        from urllib.parse import urlencode

        items = self.Query.items()
        return "?" + urlencode(items) if items else ""

    def ToString(self) -> str:
        default_port = {"http": 80, "https": 443}.get(self.Scheme)
        port = "" if self.Port == default_port else f":{self.Port}"
        return f"{self.Scheme}://{self.Host}{port}{self.Path}{self.QueryString}"


class Body:
    """A message body; `As<JObject>(preserveContent: true)` parses it once and keeps the bytes."""

    def __init__(self, content: bytes) -> None:
        self._content = content
        self._parsed: Any = _UNPARSED

    def As(self, *, T: str = "string", preserveContent: bool = False) -> JToken:  # noqa: N803 - APIM's names
        """The body as text or parsed JSON. The bytes are always kept (as if preserveContent were true)."""
        if T == "string":
            return self._content.decode("utf-8", "replace")
        if self._parsed is _UNPARSED:
            try:
                self._parsed = orjson.loads(self._content) if self._content else None
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"The body is not valid JSON ({exc}).") from None
        expected = _JSON_TYPES.get(T)
        if expected is not None and self._parsed is not None and not isinstance(self._parsed, expected):
            raise ValueError(f"The body is not a {T}.")
        return self._parsed

    @property
    def content(self) -> bytes:
        return self._content

    def replace(self, content: bytes) -> None:
        self._content = content
        self._parsed = _UNPARSED


_UNPARSED = object()
_JSON_TYPES: dict[str, type] = {"JObject": dict, "JArray": list}


class Request:
    Method: str
    IpAddress: str
    Headers: Headers
    Url: Url
    OriginalUrl: Url
    MatchedParameters: ReadOnlyMap
    Body: Body

    def __init__(
        self, method: str, ip_address: str, headers: Headers, url: Url, original_url: Url, matched: ReadOnlyMap, body: Body
    ) -> None:
        self.Method, self.IpAddress, self.Headers = method, ip_address, headers
        self.Url, self.OriginalUrl, self.MatchedParameters, self.Body = url, original_url, matched, body


class Response:
    StatusCode: int
    StatusReason: str
    Headers: Headers
    Body: Body

    def __init__(self, status_code: int, status_reason: str, headers: Headers, body: Body) -> None:
        self.StatusCode, self.StatusReason, self.Headers, self.Body = status_code, status_reason, headers, body


class Subscription:
    Id: str
    Name: str
    #: The key this request presented (the gateway stores only hashes, so Primary/SecondaryKey do not exist).
    Key: str
    CreatedDate: str

    def __init__(self, id: str, name: str, key: str, created: str) -> None:  # noqa: A002
        self.Id, self.Name, self.Key, self.CreatedDate = id, name, key, created


class Named:
    """`context.Product`, `context.Api`, `context.User`: an id and a display name."""

    Id: str
    Name: str

    def __init__(self, id: str, name: str) -> None:  # noqa: A002
        self.Id, self.Name = id, name


class Operation:
    Id: str
    Name: str
    Method: str
    UrlTemplate: str

    def __init__(self, id: str, method: str, url_template: str) -> None:  # noqa: A002
        self.Id, self.Name, self.Method, self.UrlTemplate = id, id, method, url_template


class GatewayInfo:
    Id: str
    IsManaged: bool

    def __init__(self, id: str) -> None:  # noqa: A002
        self.Id, self.IsManaged = id, False


class Deployment:
    Region: str
    ServiceName: str
    Gateway: GatewayInfo

    def __init__(self, region: str, service_name: str, gateway_id: str) -> None:
        self.Region, self.ServiceName, self.Gateway = region, service_name, GatewayInfo(gateway_id)


class LastError:
    Source: str
    Reason: str
    Message: str
    Scope: str
    Section: str
    Path: str
    PolicyId: str

    def __init__(self, source: str, reason: str, message: str, section: str, scope: str = "", policy_id: str = "") -> None:
        self.Source, self.Reason, self.Message = source, reason, message
        self.Scope, self.Section, self.Path, self.PolicyId = scope, section, "", policy_id


class Variables:
    """`context.Variables`: values set by `set-variable` and by statements' `*-variable-name` attributes."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> JToken:
        return self._values[name]

    def ContainsKey(self, name: str) -> bool:
        return name in self._values

    def GetValueOrDefault(self, name: str, default: JToken = None, *, T: str = "object") -> JToken:  # noqa: N803
        """The value converted to `T` as APIM does (`GetValueOrDefault<int>` on "7" gives 7); a value that
        does not convert is an error, like APIM's cast exception."""
        if name not in self._values:
            return default
        value = self._values[name]
        convert = _CONVERSIONS.get(T)
        return value if convert is None or value is None else convert(value)

    def set(self, name: str, value: Any) -> None:
        self._values[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._values.items())


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{type(value).__name__} is not a bool")


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{type(value).__name__} is not an integer")
    return int(value)


_CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "int": _to_int, "long": _to_int, "double": float, "float": float, "bool": _to_bool,
    "string": lambda value: value if isinstance(value, str) else str(value),
}  # fmt: skip


class TimeSpan:
    """`context.Elapsed`: a duration, as .NET's TimeSpan exposes it to expressions."""

    TotalMilliseconds: float
    TotalSeconds: float

    def __init__(self, seconds: float) -> None:
        self.TotalSeconds = seconds
        self.TotalMilliseconds = seconds * 1000

    def ToString(self) -> str:
        return f"{self.TotalSeconds:.7f}"


class Context:
    """One request's policy context. The gateway builds it; statements read and change it."""

    Request: Request
    Response: Optional[Response]
    Subscription: Optional[Subscription]
    Product: Optional[Named]
    Api: Named
    Operation: Operation
    User: Optional[Named]
    Deployment: Deployment
    Variables: Variables
    LastError: Optional[LastError]
    RequestId: str

    def __init__(
        self,
        request: Request,
        api: Named,
        operation: Operation,
        deployment: Deployment,
        request_id: str,
        subscription: Subscription | None = None,
        product: Named | None = None,
        user: Named | None = None,
        services: Services | None = None,
    ) -> None:
        self.Request, self.Api, self.Operation, self.Deployment = request, api, operation, deployment
        self.Subscription, self.Product, self.User = subscription, product, user
        self.Response = None
        self.Variables = Variables()
        self.LastError = None
        self.RequestId = request_id
        self.started = time.monotonic()
        self.services: Services = services  # type: ignore[assignment]
        #: Work statements defer until the backend has answered (e.g. a conditional rate-limit count).
        self.after_backend: list[Callable[[], Awaitable[None]]] = []
        #: Statements that account for tokens; each is called once with the request's usage.
        self.usage_listeners: list[UsageListener] = []
        #: Called once with the complete answer (JSON bytes; a stream assembled into its non-streaming form) when
        #: the backend's answer reached the client in full; not for refusals, errors or aborted streams.
        self.body_listeners: list[Callable[[int, bytes], Awaitable[None]]] = []
        #: Set by a semantic-cache hit: what the cached answer had used, reported as tokens saved.
        self.cache_hit_usage: Usage | None = None
        #: Left by a semantic-cache lookup that missed: what the store statement needs to store the answer.
        self.cache_ticket: Any = None
        #: Headers statements add to whatever response the client finally gets (e.g. remaining-calls).
        self.response_headers: list[tuple[str, str]] = []
        #: The host's own per-request state (the gateway keeps credentials and the live response there).
        self.gateway_state: Any = None
        #: The id of the backend that answered (set when the request is forwarded), for metrics.
        self.backend_used: str = ""
        #: The backend chosen by `set-backend-service backend-id=…` (a backend or pool id) or `base-url=…`.
        self.backend_id: str | None = None
        self.base_url: str | None = None

    @property
    def Timestamp(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.timezone.utc)

    @property
    def Elapsed(self) -> TimeSpan:
        """Time since the request arrived."""
        return TimeSpan(time.monotonic() - self.started)
