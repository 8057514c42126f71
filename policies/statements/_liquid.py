"""The Liquid engine behind `<set-body template="liquid">`: python-liquid, bounded, and shaped like APIM's.

APIM runs Liquid "in C# mode": filters are written in PascalCase (`AtLeast`, `UrlEncode`); both that and the
standard snake_case names work here. Templates see `body` (the message body parsed as JSON, when its
content type is JSON) and `context` (the documented subset: `Request`, `Response`, plus `Variables`, which
real documents read), as plain data, never as live objects.

Bounds: no `include`/`render` (no template loading, so no file system), at most 10,000 loop iterations,
64 KiB of locals, 1 MiB of output and 30 nested contexts; past a bound rendering fails with a run-time error.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from policies.context import Body, Context, Headers, Response, Url
from policies.expressions import ExpressionRuntimeError

if TYPE_CHECKING:
    from liquid import BoundTemplate, Environment

#: Variables deeper than this (nested dicts and lists) are cut off when handed to a template.
_MAX_DEPTH = 32


@functools.cache
def _environment() -> Environment:
    """Built on first use: importing python-liquid takes ~0.15 s, which cold starts without templates skip."""
    from liquid import Environment

    class BoundedEnvironment(Environment):
        context_depth_limit: ClassVar[int] = 30
        loop_iteration_limit: ClassVar[int | None] = 10_000
        local_namespace_limit: ClassVar[int | None] = 64 * 1024
        output_stream_limit: ClassVar[int | None] = 1024 * 1024

        def setup_tags_and_filters(self, *, extra: bool = False) -> None:
            super().setup_tags_and_filters(extra=extra)
            for tag in ("include", "render"):
                del self.tags[tag]
            for name, function in list(self.filters.items()):
                self.filters["".join(part.capitalize() for part in name.split("_"))] = function
            self.filters["json"] = self.filters["Json"] = _json

    return BoundedEnvironment()


def compile_template(source: str) -> BoundTemplate:
    """Parse a template once; raises ValueError describing a syntax error or an unknown filter."""
    from liquid.exceptions import LiquidError

    environment = _environment()
    try:
        template = environment.from_string(source)
    except LiquidError as exc:
        raise ValueError(f"Liquid template: {exc}") from None
    unknown = sorted(set(template.analyze().filters) - set(environment.filters))
    if unknown:
        raise ValueError(f"Liquid template: unknown filter {unknown[0]!r}.")
    return template


def render(template: BoundTemplate, message: Body, headers: Headers, context: Context) -> str:
    """Render with `body` bound to `message` (when it is JSON) and the plain-data `context`."""
    data: dict[str, Any] = {"context": _context(context)}
    if "json" in (headers.GetValueOrDefault("content-type") or "").lower():
        try:
            data["body"] = message.As(T="JToken")
        except ValueError:
            pass
    from liquid.exceptions import LiquidError

    try:
        return template.render(**data)
    except LiquidError as exc:
        raise ExpressionRuntimeError(f"Liquid template failed: {exc}") from None


def _context(context: Context) -> dict[str, Any]:
    request = context.Request
    view: dict[str, Any] = {
        "Request": {
            "Url": _url(request.Url),
            "OriginalUrl": _url(request.OriginalUrl),
            "Method": request.Method,
            "IpAddress": request.IpAddress,
            "MatchedParameters": dict(_matched(context)),
            "Headers": _headers(request.Headers),
            "HasBody": bool(request.Body.content),
        },
        "Variables": {name: _plain(value, 0) for name, value in context.Variables.items()},
    }
    if context.Response is not None:
        view["Response"] = _response(context.Response)
    return view


def _matched(context: Context) -> list[tuple[str, str]]:
    parameters = context.Request.MatchedParameters
    return [(name, value) for name in ("deployment-id", "response-id", "model-id") if (value := parameters.GetValueOrDefault(name))]


def _url(url: Url) -> dict[str, Any]:
    query = {name: ",".join(url.Query.get_all(name)) for name, _ in url.Query}
    return {"Scheme": url.Scheme, "Host": url.Host, "Port": url.Port, "Path": url.Path, "Query": query,
            "QueryString": url.QueryString, "ToString": url.ToString()}  # fmt: skip


def _headers(headers: Headers) -> dict[str, str]:
    return {name: ",".join(headers.get_all(name)) for name, _ in headers}


def _response(response: Response) -> dict[str, Any]:
    return {"StatusCode": response.StatusCode, "StatusReason": response.StatusReason, "Headers": _headers(response.Headers)}


def _plain(value: Any, depth: int) -> Any:
    """JSON-like data only: anything else (or anything nested too deep) is left out."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, depth + 1) for item in value]
    return None


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


_NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")


def substitute_named_values(text: str, named_values: Mapping[str, str]) -> str:
    """Put in `{{name}}` named values that are defined; leave other `{{ … }}` to Liquid (`{{body.x}}` is Liquid's)."""
    return _NAMED_VALUE.sub(lambda match: named_values.get(match.group(1), match.group(0)), text)
