"""The request and response as expressions see them: headers and query parameters (APIM's `string[]`
dictionaries), the matched route parameters, the URL and the body."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

import orjson

#: A parsed JSON value (`JObject`, `JArray`, `JToken` in APIM's Newtonsoft terms).
JToken = Any


class KeyValuePair:
    """What `foreach` gives over a dictionary, headers or query parameters."""

    Key: Any
    Value: Any

    def __init__(self, key: Any, value: Any) -> None:
        self.Key, self.Value = key, value

    def _json(self) -> dict[str, Any]:
        return {"Key": self.Key, "Value": self.Value}


class _MultiMap:
    """Ordered, multi-valued name/value pairs; subclasses decide whether names ignore case."""

    _ignore_case = False

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)

    def GetValueOrDefault(self, name: str, default: str | None = None) -> str | None:
        """All values of `name` joined with commas, as APIM does, or `default`."""
        values = self.get_all(name)
        return ",".join(values) if values else default

    def ContainsKey(self, name: str) -> bool:
        return bool(self.get_all(name))

    def __getitem__(self, name: str) -> list[str]:
        """`Headers["x"]`: every value of `x`, as APIM's `string[]`; a missing name is an error."""
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return values

    def TryGetValue(self, name: str) -> tuple[bool, list[str] | None]:
        values = self.get_all(name)
        return bool(values), values or None

    @property
    def Count(self) -> int:
        return len(self._enumerate())

    def _enumerate(self) -> list[KeyValuePair]:
        """Each name once (in first-seen order) with all its values, as `foreach` sees APIM's dictionary."""
        grouped: dict[str, KeyValuePair] = {}
        for name, value in self._items:
            key = self._key(name)
            if key in grouped:
                grouped[key].Value.append(value)
            else:
                grouped[key] = KeyValuePair(name, [value])
        return list(grouped.values())

    def _key(self, name: str) -> str:
        """The form names are compared in."""
        return name.lower() if self._ignore_case else name

    def get_all(self, name: str) -> list[str]:
        if self._ignore_case:
            lower = name.lower()
            return [v for k, v in self._items if k.lower() == lower]
        return [v for k, v in self._items if k == name]

    def set(self, name: str, values: Iterable[str]) -> None:
        self.remove(name)
        self._items.extend((name, v) for v in values)

    def append(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        if self._ignore_case:
            lower = name.lower()
            self._items = [(k, v) for k, v in self._items if k.lower() != lower]
        else:
            self._items = [(k, v) for k, v in self._items if k != name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)


class Headers(_MultiMap):
    """HTTP headers (request or response): names ignore case."""

    _ignore_case = True


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

    def GetValueOrDefault(self, name: str, default: str | None = None) -> str | None:
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
        items = self.Query.items()
        return "?" + urlencode(items) if items else ""

    def ToString(self) -> str:
        default_port = {"http": 80, "https": 443}.get(self.Scheme)
        port = "" if self.Port == default_port else f":{self.Port}"
        return f"{self.Scheme}://{self.Host}{port}{self.Path}{self.QueryString}"


class Body:
    """A message body. The bytes are always kept (as if preserveContent were true)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def As(self, *, T: str = "string", preserveContent: bool = False) -> JToken:  # noqa: N803 - APIM's names
        """The body as text or parsed JSON. Each call parses afresh, as APIM does, so a block that changes the
        JObject it got never changes what the next expression reads."""
        if T == "string":
            return self._content.decode("utf-8", "replace")
        try:
            parsed = orjson.loads(self._content) if self._content else None
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"The body is not valid JSON ({exc}).") from None
        expected = _JSON_TYPES.get(T)
        if expected is not None and parsed is not None and not isinstance(parsed, expected):
            raise ValueError(f"The body is not a {T}.")
        return parsed

    @property
    def content(self) -> bytes:
        return self._content

    def replace(self, content: bytes) -> None:
        self._content = content


_JSON_TYPES: dict[str, type] = {"JObject": dict, "JArray": list}


# The messages' members carry APIM's names, which are also their classes' names: aliases keep annotations clear.
_Headers = Headers
_Url = Url
_Body = Body


class Request:
    Method: str
    IpAddress: str
    Headers: _Headers
    Url: _Url
    OriginalUrl: _Url
    MatchedParameters: ReadOnlyMap
    Body: _Body

    def __init__(self, method: str, ip_address: str, headers: _Headers, url: _Url, original_url: _Url, matched: ReadOnlyMap, body: _Body) -> None:
        self.Method, self.IpAddress, self.Headers = method, ip_address, headers
        self.Url, self.OriginalUrl, self.MatchedParameters, self.Body = url, original_url, matched, body


class Response:
    StatusCode: int
    StatusReason: str
    Headers: _Headers
    Body: _Body

    def __init__(self, status_code: int, status_reason: str, headers: _Headers, body: _Body) -> None:
        self.StatusCode, self.StatusReason, self.Headers, self.Body = status_code, status_reason, headers, body
