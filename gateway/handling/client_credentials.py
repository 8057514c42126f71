"""The client's own credentials: which subscription key it sent (refusing ambiguity), and keeping them from the backend.

A key is read from `api-key`, `Ocp-Apim-Subscription-Key`, `Authorization: Bearer` (the `OpenAI` v1 client), or
the `subscription-key`/`api-key` query parameters, in that order; `Authorization` counts only when neither key
header is there, because it may carry a token for `validate-jwt` beside the key. Sent twice (a header repeated,
a query parameter repeated, or two key headers or parameters with different values), the key is ambiguous: one
layer could authenticate one copy while another forwards the other, so the request is refused with 401.

Before forwarding, every value the client sent in a credential header (`api-key`, `Ocp-Apim-Subscription-Key`,
`Authorization`, `Cookie`) is removed, whichever copy and however many; only values a policy set survive (a
policy that sets one to exactly what the client sent forwards nothing: the client's value never leaves).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.requests import Request

from gateway.backends.proxy import CLIENT_CREDENTIAL_HEADERS, forwardable
from gateway.errors import AmbiguousSubscriptionKey

_KEY_HEADERS = ("api-key", "ocp-apim-subscription-key")
#: Query parameters that carry a subscription key: consumed by the gateway, never visible to policies or the backend.
KEY_QUERY_PARAMETERS = ("subscription-key", "api-key")


class ClientCredentials:
    """The credential header values exactly as the client sent them, by lower-case name."""

    __slots__ = ("_sent",)

    def __init__(self, sent: Mapping[str, frozenset[str]]) -> None:
        self._sent = sent

    @classmethod
    def of(cls, headers: Iterable[tuple[str, str]]) -> ClientCredentials:
        sent: dict[str, set[str]] = {}
        for name, value in headers:
            lower = name.lower()
            if lower in CLIENT_CREDENTIAL_HEADERS:
                sent.setdefault(lower, set()).add(value)
        return cls({name: frozenset(values) for name, values in sent.items()})

    def outbound(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Request headers for the backend: hop-by-hop ones dropped, every client credential value dropped."""
        return [(name, value) for name, value in headers if forwardable(name) and value not in self._sent.get(name.lower(), ())]


def subscription_key(request: Request) -> str | None:
    """The one subscription key the request carries, None when it carries none; 401 when it carries several."""
    sent: dict[str, list[str]] = {}
    for raw_name, raw_value in request.headers.raw:  # one pass over the headers, not one per name
        name = raw_name.decode("latin-1").lower()
        if name in _KEY_HEADERS or name == "authorization":
            sent.setdefault(name, []).append(raw_value.decode("latin-1"))
    query = request.query_params
    query_keys = [value for name in KEY_QUERY_PARAMETERS for value in query.getlist(name)]
    if any(len(values) > 1 for values in sent.values()) or any(len(query.getlist(name)) > 1 for name in KEY_QUERY_PARAMETERS):
        raise AmbiguousSubscriptionKey()
    header_keys = [values[0] for name in _KEY_HEADERS if (values := sent.get(name))]
    for keys in (header_keys, query_keys):
        if len(set(keys)) > 1:
            raise AmbiguousSubscriptionKey()
    if header_keys:
        return header_keys[0] or None
    authorization = sent.get("authorization", [""])[0]
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return query_keys[0] if query_keys else None
