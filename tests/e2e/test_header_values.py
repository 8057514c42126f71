"""Header values that policies compute from request data: checked before the backend is called (a policy error,
on-error runs), answered as a 500 in the OpenAI shape when set on a response, and the upstream closed either way."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator
from tests.stack_helpers import apply, token_env

FROM_BODY = '@((string)context.Request.Body.As<JObject>(preserveContent: true)["{}"])'
DOCUMENT = f"""<policies>
  <inbound><base />
    <set-header name="x-computed" exists-action="override"><value>{FROM_BODY.format("inbound")}</value></set-header>
    <set-query-parameter name="computed" exists-action="override"><value>{FROM_BODY.format("query")}</value></set-query-parameter>
    <choose><when condition='@(context.Request.Headers.GetValueOrDefault("x-case", "") == "return")'>
      <return-response>
        <set-status code="200" />
        <set-header name="x-returned" exists-action="override"><value>{FROM_BODY.format("returned")}</value></set-header>
        <set-body>returned</set-body>
      </return-response>
    </when></choose>
  </inbound>
  <backend><base /></backend>
  <outbound><base />
    <set-header name="x-out" exists-action="override"><value>{FROM_BODY.format("outbound")}</value></set-header>
  </outbound>
  <on-error><base />
    <set-header name="x-error-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>
    <set-header name="x-error-extra" exists-action="override"><value>{FROM_BODY.format("onerror")}</value></set-header>
  </on-error>
</policies>""".replace("&", "&amp;")

BAD_VALUES = {"line feed": "a\nb", "carriage return": "a\rInjected: yes", "NUL": "a\x00b", "outside latin-1": "price €5"}


@pytest.fixture(scope="module")
def header_gateway(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> GatewayProcess:
    env = token_env(gateway_env)
    apply(env, DOCUMENT, tmp_path_factory.mktemp("policy"))
    return start_gateway(env)


@pytest.fixture(scope="module")
def header_key(header_gateway: GatewayProcess, create_subscription: Callable[..., Keys]) -> str:
    return create_subscription("headers", env=header_gateway.env).primary


def chat(gateway: GatewayProcess, key: str, fields: dict[str, str], stream: bool = False, **headers: str) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "one two three four five six"}], "stream": stream, **fields}
    return httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": key, **headers},
        json=body,
        timeout=30,
    )


def error_of(answer: httpx.Response) -> dict[str, str]:
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    return answer.json()["error"]


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_computed_request_header_fails_before_the_backend_is_called(
    header_gateway: GatewayProcess, header_key: str, simulator: Simulator, bad: str
) -> None:
    before = simulator.stats()["requests"]
    answer = chat(header_gateway, header_key, {"inbound": bad})
    assert answer.status_code == 500
    assert error_of(answer)["code"] == "InvalidHeaderValue"
    assert "x-computed" in error_of(answer)["message"]
    assert answer.headers["x-error-reason"] == "InvalidHeaderValue"  # on-error ran
    assert simulator.stats()["requests"] == before  # the backend was never called, nor billed


@pytest.mark.parametrize("bad", ["a\nb", "a\x00b"], ids=["line feed", "NUL"])
def test_a_bad_computed_query_parameter_fails_before_the_backend_is_called(
    header_gateway: GatewayProcess, header_key: str, simulator: Simulator, bad: str
) -> None:
    before = simulator.stats()["requests"]
    answer = chat(header_gateway, header_key, {"query": bad})
    assert (answer.status_code, error_of(answer)["code"]) == (500, "InvalidQueryParameter")
    assert simulator.stats()["requests"] == before


def test_a_query_parameter_outside_latin_1_is_sent_percent_encoded(header_gateway: GatewayProcess, header_key: str, simulator: Simulator) -> None:
    simulator.clear_requests()
    assert chat(header_gateway, header_key, {"query": "café €"}).status_code == 200
    assert "computed=caf%C3%A9+%E2%82%AC" in simulator.requests()[-1]["query"]


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_computed_response_header_is_a_json_500_not_a_dropped_connection(header_gateway: GatewayProcess, header_key: str, bad: str) -> None:
    answer = chat(header_gateway, header_key, {"outbound": bad})
    assert answer.status_code == 500
    assert error_of(answer)["code"] == "InvalidHeaderValue"
    assert answer.headers["x-error-reason"] == "InvalidHeaderValue"
    returned = chat(header_gateway, header_key, {"returned": bad}, **{"x-case": "return"})
    assert (returned.status_code, error_of(returned)["code"]) == (500, "InvalidHeaderValue")


def test_a_bad_value_in_on_error_keeps_the_error_response(header_gateway: GatewayProcess, header_key: str) -> None:
    answer = chat(header_gateway, header_key, {"inbound": "a\nb", "onerror": "a\r\nb"})
    assert (answer.status_code, error_of(answer)["code"]) == (500, "InvalidHeaderValue")
    assert "x-error-extra" not in answer.headers


def test_a_live_stream_is_closed_when_outbound_fails(header_gateway: GatewayProcess, header_key: str, simulator: Simulator) -> None:
    before = simulator.stats()["streams_abandoned"]
    answer = chat(header_gateway, header_key, {"outbound": "a\nb"}, stream=True, **{"x-sim-token-ms": "400"})
    assert (answer.status_code, error_of(answer)["code"]) == (500, "InvalidHeaderValue")
    deadline = time.monotonic() + 2  # the stream would run for seconds more if the gateway kept it open
    while simulator.stats()["streams_abandoned"] == before:
        assert time.monotonic() < deadline, "the backend stream was left open"
        time.sleep(0.05)


def test_good_computed_values_still_pass(header_gateway: GatewayProcess, header_key: str, simulator: Simulator) -> None:
    simulator.clear_requests()
    answer = chat(header_gateway, header_key, {"inbound": "plain value", "outbound": "tab\tok"})
    assert answer.status_code == 200
    assert answer.headers["x-out"] == "tab\tok"
    assert simulator.requests()[-1]["headers"]["x-computed"] == "plain value"
