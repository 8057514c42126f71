"""The context model as APIM shapes it: headers as string[], C#'s type spellings, context.Api, context.User
(null without an owner), and the validated token as APIM's Jwt."""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Any

import jwt
import pytest

from policies import context as ctx
from policies.expressions import ExpressionError, ExpressionRuntimeError, compile_block, compile_expression
from tests.policy_helpers import make_context, pipeline_of


def evaluate(source: str, context: ctx.Context | None = None) -> Any:
    return compile_expression(source).evaluate(context or make_context())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('context.Request.Headers["X-Multi"]', ["a", "b"]),
        ('context.Request.Headers["x-multi"][0]', "a"),
        ('context.Request.Headers["X-Multi"].Length', 2),
        ('context.Request.Headers["X-Multi"].Last()', "b"),
        ('context.Request.Headers.GetValueOrDefault("X-Multi")', "a,b"),
        ('context.Request.Headers.GetValueOrDefault("X-Missing", "none")', "none"),
        ('context.Request.Headers.ContainsKey("x-multi")', True),
        ("context.Request.Headers.Count", 3),
        ('context.Request.Headers.TryGetValue("X-Multi", out var values) ? values[1] : ""', "b"),
        ('context.Request.Url.Query["api-version"][0]', "2024-10-21"),
        ('context.Request.Url.Query.GetValueOrDefault("api-version", "")', "2024-10-21"),
    ],
)
def test_headers_and_query_are_string_arrays_with_joined_defaults(source: str, expected: Any) -> None:
    context = make_context(headers=[("X-Multi", "a"), ("x-multi", "b"), ("content-type", "application/json"), ("Accept", "*/*")])
    assert evaluate(source, context) == expected


def test_missing_header_index_is_a_runtime_error() -> None:
    with pytest.raises(ExpressionRuntimeError, match="Key 'X-None' not found"):
        evaluate('context.Request.Headers["X-None"][0]')


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('(Int32)context.Variables["n"] + 1', 8),
        ('(Int64)context.Variables["n"]', 7),
        ('(String)context.Variables["n"]', "7"),
        ('(Boolean)context.Variables["flag"]', True),
        ('(System.Int32)context.Variables["n"]', 7),
        ('(Double)context.Variables["n"]', 7.0),
        ('context.Variables.GetValueOrDefault<String>("s", "x")', "text"),
        ('context.Variables.GetValueOrDefault<Int32>("n")', 7),
        ('context.Variables.GetValueOrDefault<int>("absent")', 0),
        ('context.Variables.GetValueOrDefault<bool>("absent")', False),
        ('context.Variables.GetValueOrDefault<string>("absent")', None),
        ('context.Variables.GetValueOrDefault<JObject>("doc")["k"]', 1),
        ('context.Variables.TryGetValue("n", out var n) ? n : 0', "7"),
        ("context.Variables.Count", 4),
    ],
)
def test_type_spellings_and_variable_conversions(source: str, expected: Any) -> None:
    context = make_context()
    for name, value in {"n": "7", "flag": "true", "s": "text", "doc": {"k": 1}}.items():
        context.Variables.set(name, value)
    result = evaluate(source, context)
    assert result == expected and type(result) is type(expected)


def test_api_members_have_apim_defaults_and_accept_a_service_url() -> None:
    assert evaluate('context.Api.Path + "|" + context.Api.Revision + "|" + context.Api.IsCurrentRevision') == "openai|1|True"
    assert evaluate('context.Api.ServiceUrl?.Host ?? "none"') == "none"
    context = make_context()
    url = ctx.Url("https", "aoai.example", 443, "/openai", ctx.QueryParameters())
    context.Api = ctx.Api("openai", "Azure OpenAI", path="ai", revision="3", service_url=url)
    assert (
        evaluate('context.Api.ServiceUrl.ToString() + "/" + context.Api.Path + ";rev=" + context.Api.Revision', context)
        == "https://aoai.example/openai/ai;rev=3"
    )


def test_user_is_null_without_an_owner() -> None:
    context = make_context()
    assert context.User is None
    assert evaluate('context.User?.Id ?? "anonymous"', context) == "anonymous"
    assert evaluate("context.User == null", context) is True
    with pytest.raises(ExpressionRuntimeError, match="'context.User' is null"):
        evaluate("context.User.Email", context)


def test_user_members_when_the_gateway_knows_the_owner() -> None:
    context = make_context()
    context.User = ctx.User(
        "u-1", email="ada@example.com", first_name="Ada", last_name="Lovelace", note="vip",
        registration_date=dt.datetime(2024, 1, 2, tzinfo=dt.UTC), groups=[ctx.Group("admins", "Administrators"), ctx.Group("developers")],
    )  # fmt: skip
    assert (
        evaluate('context.User.FirstName + " " + context.User.LastName + " <" + context.User.Email + ">"', context)
        == "Ada Lovelace <ada@example.com>"
    )
    assert evaluate('context.User.Groups.Any(g => g.Id == "admins")', context) is True
    assert evaluate('string.Join(",", context.User.Groups.Select(g => g.Name))', context) == "Administrators,developers"
    assert evaluate("context.User.RegistrationDate.Value.Year + context.User.Note.Length", context) == 2027


SECRET = b"0123456789abcdef0123456789abcdef"


def token(claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)


def test_as_jwt_reads_header_and_claims() -> None:
    now = int(time.time())
    raw = token(
        {
            "sub": "alice",
            "iss": "https://issuer/",
            "aud": ["a", "b"],
            "jti": "id-1",
            "exp": now + 60,
            "iat": now,
            "nbf": now,
            "roles": ["r1", "r2"],
            "admin": True,
        }
    )
    context = make_context(headers=[("Authorization", f"Bearer {raw}")])
    block = """
        var jwt = context.Request.Headers.GetValueOrDefault("Authorization", "").AsJwt();
        return string.Join("|", jwt.Subject, jwt.Issuer, jwt.Id, string.Join(",", jwt.Audiences), jwt.Algorithm, jwt.Type,
            jwt.Claims.GetValueOrDefault("roles", ""), jwt.Claims["roles"][1], jwt.Claims.GetValueOrDefault("admin", ""),
            jwt.ExpirationTime > jwt.IssuedAt, jwt.NotBefore.HasValue);
    """
    assert compile_block(block).evaluate(context) == "alice|https://issuer/|id-1|a,b|HS256|JWT|r1,r2|r2|true|True|True"


@pytest.mark.parametrize("text", ["", "not-a-token", "a.b.c", "Bearer", base64.b64encode(b"x").decode()])
def test_as_jwt_is_null_for_what_is_not_a_token(text: str) -> None:
    context = make_context()
    context.Variables.set("t", text)
    assert evaluate('((string)context.Variables["t"]).AsJwt() == null', context) is True
    assert evaluate('((string)context.Variables["t"]).TryParseJwt(out var jwt) ? "yes" : "no"', context) == "no"


def test_basic_credentials() -> None:
    context = make_context(headers=[("Authorization", "Basic " + base64.b64encode(b"ada:s3cret").decode())])
    assert evaluate('context.Request.Headers.GetValueOrDefault("Authorization", "").AsBasic().UserId', context) == "ada"
    assert evaluate('"Basic !!".AsBasic() == null', context) is True


async def test_jwt_cast_of_a_validated_token_in_a_pipeline() -> None:
    key = base64.b64encode(SECRET).decode()
    document = f"""<policies>
      <inbound><base />
        <validate-jwt header-name="Authorization" require-scheme="Bearer" output-token-variable-name="jwt">
          <issuer-signing-keys><key>{key}</key></issuer-signing-keys>
        </validate-jwt>
        <set-variable name="oid" value="@(((Jwt)context.Variables[&quot;jwt&quot;]).Claims.GetValueOrDefault(&quot;oid&quot;, new string[] {{ &quot;&quot; }})[0])" />
        <set-variable name="who" value="@{{ var j = (Jwt)context.Variables[&quot;jwt&quot;]; return j.Subject + &quot;/&quot; + j.Claims.GetValueOrDefault(&quot;name&quot;, &quot;?&quot;); }}" />
      </inbound>
      <backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error>
    </policies>"""
    claims = {"sub": "alice", "oid": "0000-1111", "name": "Alice", "exp": int(time.time()) + 60}
    context = make_context(headers=[("Authorization", f"Bearer {token(claims)}")])
    assert await pipeline_of(document).execute(context) is None
    assert (context.Variables["oid"], context.Variables["who"]) == ("0000-1111", "alice/Alice")


def test_jwt_cast_refuses_what_is_not_a_token() -> None:
    context = make_context()
    context.Variables.set("n", 5)
    with pytest.raises(ExpressionRuntimeError, match="not a JWT"):
        evaluate('((Jwt)context.Variables["n"]).Subject', context)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("context.User.Name", "Unsupported member 'Name' on IUser"),
        ("context.Api.Revison", "Unsupported member 'Revison' on IApi"),
        ('context.Request.Headers["a"].Foo', "Unsupported member 'Foo' on string[]"),
        ("(IResponse)context.Request", "Cannot cast IRequest 'context.Request' to IResponse"),
        ('context.Variables.GetValueOrDefault<Int33>("x")', "Unsupported type argument 'Int33'"),
    ],
)
def test_context_mistakes_fail_at_load(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError, match=fragment.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        compile_expression(source)


def test_response_is_castable_under_its_apim_name() -> None:
    context = make_context()
    context.Variables.set("reply", ctx.Response(201, "Created", ctx.Headers([("x-id", "7")]), ctx.Body(b'{"ok": true}')))
    block = """
        var reply = (IResponse)context.Variables["reply"];
        return reply.StatusCode + ":" + reply.Headers.GetValueOrDefault("x-id", "") + ":" + reply.Body.As<JObject>()["ok"];
    """
    assert compile_block(block).evaluate(context) == "201:7:True"


def test_elapsed_and_timestamp_are_timespan_and_datetime() -> None:
    assert evaluate("context.Elapsed.TotalMilliseconds >= 0 && context.Elapsed < TimeSpan.FromMinutes(1)") is True
    assert evaluate('context.Timestamp.ToString("yyyy").Length') == 4


def test_request_id_is_one_guid_per_request_made_when_first_asked_for() -> None:
    context = ctx.Context(make_context().Request, ctx.Named("api", "api"), make_context().Operation, make_context().Deployment)
    first = evaluate("context.RequestId", context)
    assert evaluate("Guid.TryParse(context.RequestId, out var id)", context) is True
    assert evaluate("context.RequestId", context) == first  # the same id however often it is read
    other = ctx.Context(context.Request, ctx.Named("api", "api"), context.Operation, context.Deployment)
    assert evaluate("context.RequestId", other) != first
    assert evaluate("context.RequestId") == "req-1"  # one the gateway gives is kept
