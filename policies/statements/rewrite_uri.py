"""`<rewrite-uri template="/deployments/{deployment-id}/chat/completions" copy-unmatched-params="true" />`:
change the path (and query) the backend is called with (inbound only, as in APIM).

The template is relative to the API, like APIM's (whose Azure OpenAI APIs end in `/openai`): the part of
the request path that the operation's URL template matched is replaced, so on `/openai/deployments/a/chat/
completions` the template `/deployments/b/chat/completions` makes `/openai/deployments/b/chat/completions`.
`{name}` takes the value of the operation's matched parameter `name` (`deployment-id`, …), escaped for a path
segment; a name the operation did not match is a run-time error. The template may carry a query string
(`?api-version=2024-10-21`); with `copy-unmatched-params` (the default) the request's own query parameters are
kept after it, except those the template sets. `context.Request.OriginalUrl` keeps the client's URL.

The result is bounded: at most 2,048 characters of path, no `..` segments, no scheme or host (the backend is
chosen by `set-backend-service`, never by a rewritten path).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

from policies.context import Context, QueryParameters, Url
from policies.expressions import ExpressionRuntimeError, Value
from policies.statement import Loader, Settings, Statement, as_bool, attr, register
from policies.xml import PolicyElement

MAX_PATH = 2048
_PARAMETER = re.compile(r"\{([A-Za-z0-9_.-]+)\}")
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")
#: Characters kept as they are in a path (RFC 3986 pchar and `/`); everything else is percent-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


class RewriteUriSettings(Settings):
    template: Value = attr()
    copy_unmatched_params: Value = attr(kind=bool, default=True)


@register
class RewriteUri(Statement):
    element = "rewrite-uri"
    sections = frozenset({"inbound"})

    def __init__(self, template: Value, copy_unmatched: Value) -> None:
        self.template = template
        self.copy_unmatched = copy_unmatched

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> RewriteUri:
        loader.children(element, ())
        settings = loader.settings(element, RewriteUriSettings)
        if settings.template.is_constant:
            try:
                _split(str(settings.template.constant))
            except ValueError as exc:
                raise loader.fail(element, f"template {settings.template.constant!r}: {exc}") from None
        return cls(settings.template, settings.copy_unmatched_params)

    async def run(self, context: Context) -> None:
        template = "" if (value := self.template.evaluate(context)) is None else str(value)
        try:
            path, query = _split(template)
        except ValueError as exc:
            raise ExpressionRuntimeError(f"rewrite-uri template {template[:100]!r}: {exc}") from None
        path = _PARAMETER.sub(lambda match: quote(_parameter(context, match.group(1)), safe=""), path)
        if _DOT_SEGMENT.search(path):
            raise ExpressionRuntimeError("rewrite-uri: a matched parameter made a '.' or '..' path segment.")
        items = [(name, _PARAMETER.sub(lambda match: _parameter(context, match.group(1)), v)) for name, v in query]
        if as_bool(self.copy_unmatched.evaluate(context), "copy-unmatched-params"):
            set_here = {name for name, _ in items}
            items.extend((name, v) for name, v in context.Request.Url.Query if name not in set_here)
        url = context.Request.Url
        full_path = _api_base(context) + quote(path, safe=_PATH_SAFE)
        if len(full_path) > MAX_PATH:
            raise ExpressionRuntimeError(f"rewrite-uri made a path of {len(full_path)} characters; at most {MAX_PATH} are allowed.")
        context.Request.Url = Url(url.Scheme, url.Host, url.Port, full_path, QueryParameters(items))


def _split(template: str) -> tuple[str, list[tuple[str, str]]]:
    """The template's path (with a leading `/`) and its query parameters; ValueError if it is not a relative path."""
    path, _, query = template.strip().partition("?")
    if "://" in path or path.startswith("//"):
        raise ValueError("write a path relative to the API, not a URL")
    path = "/" + path.lstrip("/")
    if _DOT_SEGMENT.search(path):
        raise ValueError("'.' and '..' segments are not allowed")
    if len(path) > MAX_PATH:
        raise ValueError(f"at most {MAX_PATH} characters")
    return path, parse_qsl(query, keep_blank_values=True)


def _parameter(context: Context, name: str) -> str:
    value = context.Request.MatchedParameters.GetValueOrDefault(name)
    if value is None:
        raise ExpressionRuntimeError(f"rewrite-uri template names {{{name}}}, which this operation does not match.")
    return value


def _api_base(context: Context) -> str:
    """The request path up to where the operation's URL template starts (`/openai` for both Azure OpenAI APIs)."""
    original: Url = context.Request.OriginalUrl
    segments = original.Path.rstrip("/").split("/")
    matched = len([part for part in context.Operation.UrlTemplate.split("/") if part])
    return "/".join(segments[: len(segments) - matched]) if matched < len(segments) else ""
