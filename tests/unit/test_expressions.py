"""Policy expressions: the C# forms APIM policies use evaluate against a real context; mistakes fail at load."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from policies.context import (
    Body,
    Context,
    Deployment,
    Headers,
    LastError,
    Named,
    Operation,
    QueryParameters,
    ReadOnlyMap,
    Request,
    Response,
    Subscription,
    Url,
)
from policies.expressions import (
    Expression,
    ExpressionError,
    ExpressionRuntimeError,
    Value,
    compile_expression,
    compile_value,
)

PATH = "/openai/deployments/gpt-4o/chat/completions"


def make_context(*, subscription: bool = True, body: bytes | None = None) -> Context:
    query = QueryParameters([("api-version", "2024-10-21")])
    url = Url("https", "gateway.example.net", 443, PATH, query)
    headers = Headers([("x-user-id", "user-42"), ("Authorization", "Bearer eyJ0eXAi"), ("Accept", "a"), ("accept", "b")])
    payload = orjson.dumps({"model": "gpt-4o", "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]})
    request = Request(
        "POST",
        "203.0.113.7",
        headers,
        url,
        url,
        ReadOnlyMap({"deployment-id": "gpt-4o"}),
        Body(payload if body is None else body),
    )
    context = Context(
        request,
        api=Named("azure-openai", "Azure OpenAI"),
        operation=Operation("ChatCompletions_Create", "POST", "/deployments/{deployment-id}/chat/completions"),
        deployment=Deployment("westeurope", "contoso-apim", "gw-1"),
        request_id="req-1",
        subscription=Subscription("sub-123", "Team A", "key-abc", "2024-01-01") if subscription else None,
        product=Named("gold", "Gold"),
    )
    context.Variables.set("x", "hello")
    context.Variables.set("managed-id-access-token", "tok-1")
    context.Variables.set("n", 7)
    context.Variables.set("flag", True)
    context.Variables.set("items", ["a", "b"])
    context.Variables.set("doc", {"k": 1, "nested": {"v": "w"}})
    return context


@pytest.fixture
def context() -> Context:
    return make_context()


def evaluate(source: str, context: Context) -> Any:
    return compile_expression(source).evaluate(context)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("context.Subscription.Id", "sub-123"),
        ("context.Subscription.Name", "Team A"),
        ("context.Subscription.Key", "key-abc"),
        ("context.Request.IpAddress", "203.0.113.7"),
        ("context.Request.Method", "POST"),
        ('context.Request.Headers.GetValueOrDefault("x-user-id", "N/A")', "user-42"),
        ('context.Request.Headers.GetValueOrDefault("x-missing", "N/A")', "N/A"),
        ('context.Request.Headers.GetValueOrDefault("ACCEPT")', "a,b"),
        ('context.Request.Url.Query.GetValueOrDefault("api-version")', "2024-10-21"),
        ("context.Request.Url.Path", PATH),
        ('context.Request.MatchedParameters["deployment-id"]', "gpt-4o"),
        (
            'context.Request.MatchedParameters.ContainsKey("deployment-id") ? context.Request.MatchedParameters["deployment-id"] : string.Empty',
            "gpt-4o",
        ),
        ('context.Request.MatchedParameters.ContainsKey("nope") ? context.Request.MatchedParameters["nope"] : string.Empty', ""),
        ('context.Request.Body.As<JObject>(preserveContent: true)["model"]', "gpt-4o"),
        ('(string)context.Request.Body?.As<JObject>(preserveContent:true)?["model"]', "gpt-4o"),
        ('context.Request.Body.As<JObject>(true)["max_tokens"]', 256),
        ('context.Request.Body.As<JObject>()["messages"][0]["role"]', "user"),
        ("context.Product.Id", "gold"),
        ("context.Product?.Id", "gold"),
        ('(string)context.Product?.Id == "gold"', True),
        ("context.Api.Id", "azure-openai"),
        ("context.Api.Name", "Azure OpenAI"),
        ("context.Operation.Id", "ChatCompletions_Create"),
        ("context.User?.Id", None),
        ("context.Deployment.Region", "westeurope"),
        ("context.Deployment.Gateway.Id", "gw-1"),
        ('context.Variables["x"]', "hello"),
        ('(string)context.Variables["managed-id-access-token"]', "tok-1"),
        ('"Bearer " + (string)context.Variables["managed-id-access-token"]', "Bearer tok-1"),
        ('context.Variables.GetValueOrDefault<string>("name", "default")', "default"),
        ('context.Variables.GetValueOrDefault<int>("n", 0) > 5', True),
        ('context.Variables.GetValueOrDefault<int>("missing", 0) > 5', False),
        ('context.Variables.ContainsKey("x")', True),
        ('context.Request.Headers.GetValueOrDefault("Authorization", "").StartsWith("Bearer ")', True),
        ('!context.Variables.ContainsKey("x") && true', False),
        ('!context.Variables.ContainsKey("y") && true', True),
        ('$"{context.Subscription.Id}-{context.Operation.Id}"', "sub-123-ChatCompletions_Create"),
        ('context.Request.Headers.GetValueOrDefault("x", null) ?? "fallback"', "fallback"),
        ('context.Request.Headers.GetValueOrDefault("x-user-id", null) ?? "fallback"', "user-42"),
        ("context.Request.Url.ToString()", f"https://gateway.example.net{PATH}?api-version=2024-10-21"),
        ("context.RequestId", "req-1"),
    ],
)
def test_evaluate_returns_value_for_apim_form(context: Context, source: str, expected: Any) -> None:
    assert evaluate(source, context) == expected


def test_evaluate_reads_response_and_last_error_when_set(context: Context) -> None:
    context.Response = Response(503, "Service Unavailable", Headers(), Body(b""))
    context.LastError = LastError("rate-limit", "RateLimitExceeded", "Rate limit is exceeded.", "inbound")
    assert evaluate("context.Response.StatusCode == 429 || context.Response.StatusCode == 503", context) is True
    assert evaluate("context.LastError.Reason", context) == "RateLimitExceeded"
    assert evaluate("context.LastError.Message", context) == "Rate limit is exceeded."
    context.Response.StatusCode = 200
    assert evaluate("context.Response.StatusCode == 429 || context.Response.StatusCode == 503", context) is False


def test_evaluate_timestamp_and_utc_now_are_timezone_aware(context: Context) -> None:
    before = dt.datetime.now(dt.UTC)
    now = evaluate("DateTime.UtcNow", context)
    assert now.tzinfo is not None and before <= now <= dt.datetime.now(dt.UTC)
    assert evaluate("context.Timestamp", context).utcoffset() == dt.timedelta(0)
    assert evaluate("DateTime.UtcNow.ToString()", context).endswith("Z")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r'"a\"b\\c\n\t\r\0\u00e9"', 'a"b\\c\n\t\r\0é'),
        ('@"C:\\temp ""quoted"""', 'C:\\temp "quoted"'),
        ("'x'", "x"),
        (r"'\n'", "\n"),
        ('$"{{literal}} {1 + 2} {"nested"}"', "{literal} 3 nested"),
        ('$"{context.Variables["flag"]}/{context.Variables.GetValueOrDefault("missing") ?? "none"}"', "True/none"),
        ('$@"{1}\\""x"""', '1\\"x"'),
        ("42", 42),
        ("42L", 42),
        ("1.5", 1.5),
        ("1.5d", 1.5),
        ("2.5m", 2.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_literal_evaluates_with_csharp_syntax(context: Context, source: str, expected: Any) -> None:
    assert evaluate(source, context) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7.0 / 2", 3.5),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("10 - 2 - 3", 5),
        ('-context.Variables["n"]', -7),
        ("1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 4 == false", True),
        ("true || false && false", True),
        ("1 == 1.0", True),
        ('"a" != "b"', True),
        ("true == 1", False),
        ('null ?? null ?? "last"', "last"),
        ("false ? 1 : true ? 2 : 3", 2),
        ('"n=" + 1 + 2', "n=12"),
        ('1 + 2 + "=n"', "3=n"),
        ('"x" + null + true + 1.5 + false', "xTrue1.5False"),
        ('"v" + 2.0', "v2"),
        ('context.Variables["n"] + 1', 8),
        ('context.Variables["x"] + 1', "hello1"),
        ('context.Variables["doc"] + ""', '{\n  "k": 1,\n  "nested": {\n    "v": "w"\n  }\n}'),
        ('context.Variables.GetValueOrDefault("missing") + 1', None),
        ('context.Variables.GetValueOrDefault("missing") < 1', False),
    ],
)
def test_operator_follows_csharp_semantics(context: Context, source: str, expected: Any) -> None:
    result = evaluate(source, context)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("(string)null", None),
        ("(string)42", "42"),
        ("(string)1.5", "1.5"),
        ("(string)true", "True"),
        ('(string)context.Variables["doc"]', '{"k":1,"nested":{"v":"w"}}'),
        ('(int)"12"', 12),
        ("(int)3.9", 3),
        ("(long)-3.9", -3),
        ('(double)"2.5"', 2.5),
        ("(double)2", 2.0),
        ('(bool)"True"', True),
        ('(bool)context.Variables["flag"]', True),
        ('((JObject)context.Variables["doc"])["k"]', 1),
        ('((JArray)context.Variables["items"])[1]', "b"),
        ('(JToken)context.Variables["n"]', 7),
        ("(JObject)null", None),
        ('(int)(context.Variables["n"]) * 2', 14),
    ],
)
def test_cast_converts_value(context: Context, source: str, expected: Any) -> None:
    result = evaluate(source, context)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('context.Variables["x"].Length', 5),
        ('context.Variables["x"].ToUpper()', "HELLO"),
        ('"MiXeD".ToLowerInvariant()', "mixed"),
        ('"MiXeD".ToUpperInvariant()', "MIXED"),
        ('"MiXeD".ToLower()', "mixed"),
        ('"  pad  ".Trim()', "pad"),
        ('"  pad  ".TrimStart()', "pad  "),
        ("context.Request.Url.Path.TrimEnd('/', 's')", PATH.rstrip("/s")),
        ('context.Variables["x"].Contains("ell")', True),
        ('"hello".EndsWith("lo")', True),
        ('"hello".Substring(1)', "ello"),
        ('"hello".Substring(1, 3)', "ell"),
        ('"a-b-c".Replace("-", "+")', "a+b+c"),
        ("\"a,b;c\".Split(',', ';')", ["a", "b", "c"]),
        ('"a b".Split()', ["a", "b"]),
        ('context.Request.Headers.GetValueOrDefault("Authorization", "").Split(\' \')[1]', "eyJ0eXAi"),
        ('"hello".IndexOf("l")', 2),
        ('"hello".IndexOf("z")', -1),
        ('"hello".Equals("hello")', True),
        ("42.ToString()", "42"),
        ('context.Variables["flag"].ToString()', "True"),
        ('context.Variables["items"].Count', 2),
        ('context.Variables["items"].Length', 2),
        ('context.Variables["items"].Contains("b")', True),
        ('context.Variables["doc"].ContainsKey("nested")', True),
        ('context.Variables["doc"].Count', 2),
        ('context.Variables["doc"]["nested"].ToString()', '{\n  "v": "w"\n}'),
        ('context.Variables["doc"]["absent"]', None),
        ("context.Response.StatusCode.ToString()", "200"),
    ],
)
def test_builtin_member_works_on_runtime_type(context: Context, source: str, expected: Any) -> None:
    context.Response = Response(200, "OK", Headers(), Body(b""))
    assert evaluate(source, context) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("string.IsNullOrEmpty(null)", True),
        ('string.IsNullOrEmpty("")', True),
        ('String.IsNullOrEmpty("a")', False),
        ('string.IsNullOrWhiteSpace("  ")', True),
        ('String.IsNullOrWhiteSpace(context.Request.Headers.GetValueOrDefault("x-user-id"))', False),
        ("String.Empty", ""),
        ("Math.Min(3, 2)", 2),
        ("Math.Max(1, 2.5)", 2.5),
        ("Math.Abs(-4)", 4),
        ("Guid.NewGuid().ToString().Length", 36),
    ],
)
def test_static_helper_evaluates(context: Context, source: str, expected: Any) -> None:
    assert evaluate(source, context) == expected


def test_guid_new_guid_is_fresh_per_evaluation(context: Context) -> None:
    expression = compile_expression("Guid.NewGuid()")
    assert expression.evaluate(context) != expression.evaluate(context)


@pytest.mark.parametrize(
    "source",
    [
        "context.User?.Email.Length",
        "context.User?.Id.ToUpper().Length",
        'context.Variables.GetValueOrDefault("absent")?["k"]',
        'context.Variables["doc"]["absent"]?["deeper"]',
    ],
)
def test_null_conditional_short_circuits_whole_chain(context: Context, source: str) -> None:
    assert evaluate(source, context) is None


def test_parenthesised_null_conditional_does_not_extend_the_chain(context: Context) -> None:
    with pytest.raises(ExpressionRuntimeError, match=r"'\(context.User\?.Email\)' is null"):
        evaluate("(context.User?.Email).Length", context)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (
            "context.Request.Foo",
            "Unsupported member 'Foo' on IRequest in expression 'context.Request.Foo': "
            "use one of Body, Headers, IpAddress, MatchedParameters, Method, OriginalUrl, Url.",
        ),
        ('context.Request.Headers.get_all("x")', "Unsupported member 'get_all' on IHeaders"),
        ("context.started", "Unsupported member 'started'"),
        ("context.__class__", "Unsupported member '__class__'"),
        ("context.Request.Body._content", "Unsupported member '_content'"),
        ('context.Variables["x"].__class__', "Unsupported member '__class__' on JToken"),
        ('os.system("x")', "Unknown name 'os'"),
        ("Foo.Bar", "Unknown name 'Foo'"),
        ("context.Variables.Where(x => x)", "Unsupported member 'Where' on IVariables"),
        ('"a".Contains(x => x)', "A lambda ('=>') is not accepted here"),
        ("new Foo()", "Unknown type 'Foo'"),
        ("new Jwt()", "'Jwt' cannot be created with 'new'"),
        ("typeof(string)", "Type inspection ('typeof') is not available"),
        ("a = 1", "Unknown name 'a'"),
        ('context.Variables["n"]++', "'++' needs a numeric local variable"),
        ('context.Request.Headers.GetValueOrDefault("a") = "b"', "Unexpected '='"),
        ("(context.Subscription.Id", "Unbalanced parentheses: '(' at character 1 is not closed"),
        ("context.Subscription.Id)", "Unbalanced parentheses: unexpected ')'"),
        ('context.Request.Headers.GetValueOrDefault("a"', "Unbalanced parentheses"),
        ('"abc', "Unterminated string"),
        ("'ab'", "Invalid character literal"),
        (r'"\q"', "Unsupported escape sequence '\\q'"),
        ('context.Request.Headers.GetValueOrDefault("a", "b", "c")', "Too many arguments (3) for 'GetValueOrDefault'"),
        ("context.Request.MatchedParameters.ContainsKey()", "Missing argument 'name' for 'ContainsKey'"),
        ("context.Request.Body.As<JObject>(preserve: true)", "Unknown named argument 'preserve' for 'As'"),
        ('context.Variables.GetValueOrDefault("a", T: "int")', "Unknown named argument 'T'"),
        ('context.Request.Headers.GetValueOrDefault<string>("a")', "'GetValueOrDefault' on IHeaders is not generic"),
        ("context.Request.Body.As<XElement>()", "Unsupported type argument 'XElement'"),
        ('context.Request.Headers.GetValueOrDefault("a", 1)', "Argument 'default' of 'GetValueOrDefault' must be string, not int"),
        ("context.Variables[0]", "The key of 'context.Variables' must be string, not int"),
        ("context.Request[0]", "'context.Request' has no indexer"),
        ("context.Subscription.Id()", "'Id' on ISubscription is a property, not a method"),
        ("context.Variables.ContainsKey", "'ContainsKey' on IVariables is a method: call it as ContainsKey(name)"),
        ("context.Request.Method.Count", "'Count' is a method: call it as Count(…)"),
        ("context.Request.Method.Lenght", "Unsupported member 'Lenght' on string"),
        ('context.Variables["x"].Lenght', "Unsupported member 'Lenght' on JToken"),
        ('context.Variables["x"].Length()', "'Length' is a property, not a method"),
        ('context.Variables["x"].ToLower', "'ToLower' is a method"),
        ('"a".Substring(1, 2, 3)', "Wrong number of arguments (3) for 'Substring'"),
        ('string.Frmat("x")', "Unsupported member 'Frmat' on string"),
        ("Math.Min(1)", "Wrong number of arguments (1) for 'Math.Min'"),
        ("(Foo)context", "Unsupported cast to 'Foo'"),
        ("(int)context.Request", "Cannot cast IRequest 'context.Request' to int"),
        ("context.Request.Method && true", "An operand of '&&' must be a bool, but 'context.Request.Method' is string"),
        ('!"text"', "The operand of '!' must be a bool"),
        ('"a" ? 1 : 2', "The condition of '?:' must be a bool"),
        ("context.Request.Method * 2", "Operator '*' cannot take string and int"),
        ("context.Request - 1", "Operator '-' cannot take IRequest and int"),
        ('"a" < "b"', "Operator '<' cannot compare string and string"),
        ('$"{context.Subscription.Id:N2"', "Unterminated '{' in interpolated string"),
        ('$"{}"', "Empty '{}'"),
        ('$"a}"', "Unescaped '}'"),
        ("1 +", "Unexpected end"),
        ("1 2", "Unexpected '2' at character 3"),
        ("1 # 2", "Unexpected character '#'"),
        ("0x1G", "Invalid number '0x1G'"),
        ("99999999999999999999", "is too large"),
        ("1e999", "outside the range of double"),
        ("var x = 1", "Unknown name 'var'"),
        ("", "Nothing to evaluate"),
        ("null.Length", "Cannot use 'Length' on null"),
    ],
)
def test_compile_rejects_unsupported_expression(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    message = str(caught.value)
    assert fragment in message
    assert f"expression '{source}'" in message


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("context.Subscription.Id", "Cannot read 'Id': 'context.Subscription' is null"),
        ('context.Variables["missing"]', "Key 'missing' not found in 'context.Variables'"),
        ('context.Request.Headers["x-missing"]', "Key 'x-missing' not found in 'context.Request.Headers'"),
        ('(int)"abc"', "The input string was not in a correct format"),
        ('(int)"99999999999"', "Value was either too large or too small for int"),
        ('(bool)context.Variables["n"]', "Cannot cast long to bool"),
        ('(JObject)context.Variables["items"]', "Cannot cast JArray to JObject"),
        ("1 / 0", "Attempted to divide by zero"),
        ("1 % 0", "Attempted to divide by zero"),
        ('context.Variables["n"].Length', "'Length' is not available on long 'context.Variables[\"n\"]'"),
        ('context.Variables["x"].Substring(9)', "'Substring' on 'context.Variables[\"x\"]' failed"),
        ('context.Variables["x"].StartsWith(null)', "'StartsWith' on 'context.Variables[\"x\"]' failed: 'value' must be a string"),
        ('context.Variables["items"][5]', "Index 5 is out of range"),
        ('context.Variables["items"]["a"]', "Cannot index JArray"),
        ('context.Variables["x"] && true', "An operand of '&&' must be a bool, but 'context.Variables[\"x\"]' is string"),
        ('context.Variables["x"] * 2', "Operator '*' cannot take string and long"),
        ('context.Variables["x"] < 2', "Cannot compare string and long"),
        ('string.IsNullOrEmpty(context.Variables["n"])', "string.IsNullOrEmpty failed: 'value' must be a string"),
        ("context.User.Id", "'context.User' is null"),
        ('context.Variables.GetValueOrDefault("absent").ToString()', "is null"),
    ],
)
def test_evaluate_raises_runtime_error_naming_failure(source: str, fragment: str) -> None:
    expression = compile_expression(source)
    with pytest.raises(ExpressionRuntimeError) as caught:
        expression.evaluate(make_context(subscription=False))
    message = str(caught.value)
    assert fragment in message
    assert f"expression '{source}'" in message


@pytest.mark.parametrize("cast", ["int", "long", "double"])
def test_cast_of_huge_number_text_is_a_clean_runtime_error(cast: str) -> None:
    context = make_context()
    context.Variables.set("big", "1" + "0" * 5000)
    with pytest.raises(ExpressionRuntimeError, match="not in a correct format") as caught:
        evaluate(f'({cast})context.Variables["big"]', context)
    assert "set_int_max_str_digits" not in str(caught.value)


def test_null_conditional_returns_null_when_subscription_is_missing() -> None:
    assert evaluate("context.Subscription?.Id", make_context(subscription=False)) is None


def test_body_that_is_not_json_fails_like_apim() -> None:
    with pytest.raises(ExpressionRuntimeError, match="As"):
        evaluate('(string)context.Request.Body?.As<JObject>(preserveContent:true)?["model"]', make_context(body=b"not json"))


def test_variables_get_value_or_default_converts_to_type_argument() -> None:
    context = make_context()
    context.Variables.set("n", "7")
    assert evaluate('context.Variables.GetValueOrDefault<int>("n", 0) > 5', context) is True
    context.Variables.set("n", "seven")
    with pytest.raises(ExpressionRuntimeError):
        evaluate('context.Variables.GetValueOrDefault<int>("n", 0)', context)


def test_elapsed_is_a_timespan() -> None:
    assert evaluate("context.Elapsed.TotalMilliseconds >= 0", make_context()) is True


def test_compile_expression_keeps_source() -> None:
    expression = compile_expression("context.Api.Id")
    assert isinstance(expression, Expression)
    assert expression.source == "context.Api.Id"


def test_expression_error_is_value_error() -> None:
    assert issubclass(ExpressionError, ValueError)
    assert not issubclass(ExpressionRuntimeError, ExpressionError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("  spaced  ", "  spaced  "),
        ("Bearer {{api-token}}", "Bearer tok-xyz"),
        ("{{tenant-id}}", "contoso-tenant"),
        ("mail@(example).com", "mail@(example).com"),
    ],
)
def test_compile_value_keeps_literal_as_constant(context: Context, text: str, expected: str) -> None:
    value = compile_value(text, {"tenant-id": "contoso-tenant", "api-token": "tok-xyz"})
    assert isinstance(value, Value)
    assert value.is_constant and value.constant == expected
    assert value.evaluate(context) == expected
    assert value.source == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@(context.Subscription.Id)", "sub-123"),
        ('  @( context.Product.Id + "-" + context.Api.Id )\n', "gold-azure-openai"),
        ('@("{{tenant-id}}" + "/" + context.Subscription.Id)', "contoso-tenant/sub-123"),
        ("@({{limit}} * 2)", 20),
        ('@(context.Request.Headers.GetValueOrDefault("x-user-id", "N/A"))', "user-42"),
    ],
)
def test_compile_value_compiles_expression_after_named_values(context: Context, text: str, expected: Any) -> None:
    value = compile_value(text, {"tenant-id": "contoso-tenant", "limit": "10"})
    assert not value.is_constant and value.constant is None
    assert value.evaluate(context) == expected
    assert value.source == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("@{ var x = 1; }", "Not all code paths return a value"),
        ("@{ return 1; ", "does not end with its '}'"),
        ("{{tenant}}", "Named value 'tenant' is not defined"),
        ("@(context.Api.Id) trailing", "does not end with its ')'"),
        ("@(context.Api.Foo)", "Unsupported member 'Foo' on IApi"),
        ("@()", "Nothing to evaluate"),
    ],
)
def test_compile_value_rejects_invalid_text(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_value(text, {"tenant-id": "t"})
    assert fragment in str(caught.value)


def test_compile_value_masks_named_values_in_error_messages(context: Context) -> None:
    secrets = {"api-key": "sk-very-secret"}
    with pytest.raises(ExpressionError) as load_error:
        compile_value('@("{{api-key}}" + context.Foo)', secrets)
    assert "sk-very-secret" not in str(load_error.value) and "{{api-key}}" in str(load_error.value)
    value = compile_value('@("{{api-key}}" + context.Variables["absent"])', secrets)
    with pytest.raises(ExpressionRuntimeError) as runtime_error:
        value.evaluate(context)
    assert "sk-very-secret" not in str(runtime_error.value) and "{{api-key}}" in str(runtime_error.value)


@pytest.mark.parametrize(("constant", "source"), [(5, "5"), (False, "False"), ("text", "text")])
def test_value_of_wraps_default_as_constant(context: Context, constant: Any, source: str) -> None:
    value = Value.of(constant)
    assert value.is_constant and value.constant == constant and value.evaluate(context) == constant
    assert value.source == source


def test_compiled_expression_is_reusable_across_contexts() -> None:
    expression = compile_expression('context.Subscription?.Id ?? "anonymous"')
    assert expression.evaluate(make_context()) == "sub-123"
    assert expression.evaluate(make_context(subscription=False)) == "anonymous"
