"""`cors`: grants for allowed origins, refusals of the rest, and preflight answers."""

from __future__ import annotations

import pytest

from policies.statements.cors import Cors
from tests.unit.statements.helpers import (
    context,
    line_of,
    load,
    load_error,
    refusal,
)

CORS = """<cors allow-credentials="true" terminate-unmatched-request="{terminate}">
    <allowed-origins><origin>https://chat.example.com:443/</origin><origin>http://localhost:8080</origin></allowed-origins>
    <allowed-methods preflight-result-max-age="300"><method>post</method><method>GET</method></allowed-methods>
    <allowed-headers><header>Content-Type</header><header>api-key</header></allowed-headers>
    <expose-headers><header>x-ratelimit-remaining-tokens</header></expose-headers>
</cors>"""


@pytest.mark.parametrize("origin", ["https://chat.example.com", "http://localhost:8080"])
async def test_cors_adds_grants_for_allowed_origin(origin: str) -> None:
    ctx = context([("Origin", origin)])
    await load(CORS.format(terminate="true")).run(ctx)
    assert ctx.response_headers == [
        ("Access-Control-Allow-Origin", origin),
        ("Vary", "Origin"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", "x-ratelimit-remaining-tokens"),
    ]


async def test_cors_wildcard_origin_grants_star_without_vary() -> None:
    statement = load("<cors><allowed-origins><origin>*</origin></allowed-origins></cors>")
    ctx = context([("Origin", "https://anywhere.example")])
    await statement.run(ctx)
    assert ctx.response_headers == [("Access-Control-Allow-Origin", "*")]


async def test_cors_ignores_requests_without_origin() -> None:
    ctx = context()
    await load(CORS.format(terminate="true")).run(ctx)
    assert ctx.response_headers == []


@pytest.mark.parametrize(
    ("origin", "method", "reason"),
    [
        ("https://evil.example", "POST", "CorsOriginNotAllowed"),
        ("http://chat.example.com", "POST", "CorsOriginNotAllowed"),
        ("null", "POST", "CorsOriginNotAllowed"),
        ("https://chat.example.com", "DELETE", "CorsMethodNotAllowed"),
    ],
)
async def test_cors_refuses_unmatched_request_when_terminating(origin: str, method: str, reason: str) -> None:
    ctx = context([("Origin", origin)], method=method)
    error = await refusal(load(CORS.format(terminate="true")), ctx)
    assert (error.response.status, error.reason, error.source) == (403, reason, "cors")
    assert ctx.response_headers == []


async def test_cors_lets_unmatched_request_through_without_grants_when_not_terminating() -> None:
    ctx = context([("Origin", "https://evil.example")])
    await load(CORS.format(terminate="false")).run(ctx)
    assert ctx.response_headers == []


async def test_cors_terminates_unmatched_requests_by_default() -> None:
    statement = load("<cors><allowed-origins><origin>https://a.example</origin></allowed-origins></cors>")
    assert (await refusal(statement, context([("Origin", "https://b.example")]))).reason == "CorsOriginNotAllowed"


def test_cors_preflight_grants_requested_method_and_headers() -> None:
    statement = load(CORS.format(terminate="true"))
    assert isinstance(statement, Cors)
    preflight = [
        ("Origin", "https://chat.example.com"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type, API-Key"),
    ]
    response = statement.preflight(context(preflight, method="OPTIONS"))
    assert (response.status, response.body) == (200, b"")
    assert dict(response.headers) == {
        "Access-Control-Allow-Origin": "https://chat.example.com",
        "Vary": "Origin",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "content-type, api-key",
        "Access-Control-Max-Age": "300",
    }


@pytest.mark.parametrize(
    "preflight",
    [
        [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
        [("Origin", "https://chat.example.com"), ("Access-Control-Request-Method", "PUT")],
        [("Origin", "https://chat.example.com"), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "x-secret")],
        [("Origin", "https://chat.example.com")],
        [("Access-Control-Request-Method", "POST")],
    ],
)
def test_cors_preflight_refuses_what_is_not_allowed(preflight: list[tuple[str, str]]) -> None:
    statement = load(CORS.format(terminate="true"))
    assert isinstance(statement, Cors)
    response = statement.preflight(context(preflight, method="OPTIONS"))
    assert response.status == 403
    assert not any(name.startswith("Access-Control-") for name, _ in response.headers)


def test_cors_preflight_defaults_to_get_and_post_and_wildcard_headers() -> None:
    statement = load("<cors><allowed-origins><origin>*</origin></allowed-origins><allowed-headers><header>*</header></allowed-headers></cors>")
    assert isinstance(statement, Cors)
    asked = [("Origin", "https://a.example"), ("Access-Control-Request-Headers", "x-anything")]
    allowed = statement.preflight(context([*asked, ("Access-Control-Request-Method", "GET")], method="OPTIONS"))
    refused = statement.preflight(context([*asked, ("Access-Control-Request-Method", "PATCH")], method="OPTIONS"))
    assert (allowed.status, refused.status) == (200, 403)
    assert ("Access-Control-Allow-Headers", "x-anything") in allowed.headers


@pytest.mark.parametrize(
    ("fragment", "element", "problem"),
    [
        ('<cors allow-credentials="true">\n<allowed-origins><origin>*</origin></allowed-origins></cors>', "cors", "cannot be combined"),
        ("<cors>\n<allowed-methods><method>GET</method></allowed-methods></cors>", "cors", "Add <allowed-origins>"),
        ("<cors><allowed-origins>\n<origin>chat.example.com</origin></allowed-origins></cors>", "origin", "not an origin"),
        ("<cors><allowed-origins>\n<origin>@(context.Api.Id)</origin></allowed-origins></cors>", "origin", "expressions"),
        ("<cors><allowed-origins>\n<origin>*</origin><origin>https://a.example</origin></allowed-origins></cors>", "origin", "single"),
        ("<cors><allowed-origins><origin>*</origin></allowed-origins>\n<allowed-headers /></cors>", "allowed-headers", "at least one"),
        ("<cors><allowed-origins><origin>*</origin></allowed-origins>\n<allow-headers /></cors>", "allow-headers", "Unexpected element"),
    ],
)
def test_cors_load_errors_name_element_and_line(fragment: str, element: str, problem: str) -> None:
    error = load_error(fragment)
    assert (error.element, error.line) == (element, line_of(fragment, element))
    assert problem in str(error)
