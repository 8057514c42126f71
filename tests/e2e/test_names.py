"""Client-chosen names: deployment, response and model ids are bounded before routing, and the upstream URL is
rebuilt from the checked segments so no dot segment can turn one operation into another."""

from __future__ import annotations

import http.client
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from gateway.errors import BadRequest
from gateway.handling import names
from gateway.handling import operations as routes
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator


@pytest.mark.parametrize("name", ["gpt-4o", "gpt-4.1", "my_deployment", "d", "A" * 64, "0-mini"])
def test_deployment_names_in_azure_rule_route(name: str) -> None:
    match = routes.match("POST", f"deployments/{name}/chat/completions")
    assert match is not None and match.params == {"deployment-id": name}
    assert match.path == f"/openai/deployments/{name}/chat/completions"


@pytest.mark.parametrize("name", [".", "..", "...", ".hidden", "-x", "_x", "a b", "a%2Fb", "é", "A" * 65, "a:b", ""])
def test_deployment_names_out_of_rule_match_nothing(name: str) -> None:
    assert routes.match("POST", f"deployments/{name}/chat/completions") is None


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("v1/responses/resp_0123abc", "getResponse"),
        ("v1/models/gpt-4o-mini-2024-07-18.ft-abc", "retrieveModel"),
        ("v1/models/m:1@x", "retrieveModel"),
    ],
)
def test_v1_ids_in_rule_route_and_rebuild_the_same_path(path: str, operation: str) -> None:
    match = routes.match("GET", path)
    assert match is not None and match.operation.id == operation and match.path == "/openai/" + path


@pytest.mark.parametrize(
    "path", ["v1/responses/..", "v1/responses/.", "v1/responses/a.b", "v1/responses/" + "r" * 129, "v1/models/..", "v1/models/.x"]
)
def test_v1_ids_out_of_rule_match_nothing(path: str) -> None:
    assert routes.match("GET", path) is None and routes.match("DELETE", path) is None


def test_body_model_follows_the_deployment_rule() -> None:
    assert names.body_model("gpt-4o") == "gpt-4o"
    for bad in ("x" * 70_000, "..", "a/b", 7, None, ""):
        with pytest.raises(BadRequest):
            names.body_model(bad)


def raw_request(gateway: GatewayProcess, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """Send `target` byte for byte (httpx would remove dot segments before sending)."""
    parts = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request(method, target, body=body or None, headers={"content-type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class RecordingBackend(BaseHTTPRequestHandler):
    """A backend that serves every deployment and path and remembers each request line it got."""

    seen: list[str] = []

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        RecordingBackend.seen.append(f"{self.command} {self.path}")
        body = b'{"id": "x", "object": "response"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def wildcard_gateway(start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    """A gateway whose only backend serves any deployment name (`"deployments": ["*"]`), as one without a list does."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    backends = [{"id": "any", "url": f"http://127.0.0.1:{server.server_address[1]}", "api_key_setting": "SIMULATOR_KEY"}]
    yield start_gateway({**gateway_env, "GATEWAY_BACKENDS": json.dumps(backends)})
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", f"/openai/deployments/%2E%2E/chat/completions?api-version={API_VERSION}"),
        ("POST", f"/openai/deployments/../chat/completions?api-version={API_VERSION}"),
        ("POST", f"/openai/deployments/./chat/completions?api-version={API_VERSION}"),
        ("POST", f"/openai/deployments/chat/%2E%2E/completions?api-version={API_VERSION}"),
        ("GET", "/openai/v1/responses/%2E%2E"),
        ("DELETE", "/openai/v1/responses/.."),
        ("GET", "/openai/v1/models/%2E%2E"),
    ],
)
def test_dot_segments_are_refused_and_never_reach_the_backend(wildcard_gateway: GatewayProcess, keys: Keys, method: str, target: str) -> None:
    RecordingBackend.seen.clear()
    body = b'{"messages": [{"role": "user", "content": "hi"}]}' if method == "POST" else b""
    status, answer = raw_request(wildcard_gateway, method, target, {"api-key": keys.primary}, body)
    assert (status, json.loads(answer)["error"]["message"]) == (404, "Resource not found")
    assert RecordingBackend.seen == []


def test_the_wildcard_backend_does_get_requests_for_names_in_rule(wildcard_gateway: GatewayProcess, keys: Keys) -> None:
    RecordingBackend.seen.clear()
    status, _ = raw_request(wildcard_gateway, "GET", "/openai/v1/models/my-model_2.1", {"api-key": keys.primary})
    assert status == 200 and RecordingBackend.seen == ["GET /openai/v1/models/my-model_2.1"]


def test_upstream_path_is_rebuilt_from_the_checked_deployment(gateway: GatewayProcess, keys: Keys, simulator: Simulator) -> None:
    marker = secrets.token_hex(8)
    target = f"/openai/deployments/gpt%2D4o/chat/completions?api-version={API_VERSION}"
    status, _ = raw_request(
        gateway, "POST", target, {"api-key": keys.primary, "x-test-marker": marker}, b'{"messages": [{"role": "user", "content": "hi"}]}'
    )
    assert status == 200
    (seen,) = [r for r in simulator.requests() if r["headers"].get("x-test-marker") == marker]
    assert seen["path"] == "/openai/deployments/gpt-4o/chat/completions"


def test_an_oversized_v1_model_is_a_400_and_is_not_forwarded(gateway: GatewayProcess, keys: Keys, simulator: Simulator) -> None:
    marker = secrets.token_hex(8)
    body = ('{"model": "' + "m" * 70_000 + '", "messages": [{"role": "user", "content": "hi"}]}').encode()
    status, answer = raw_request(
        gateway, "POST", "/openai/v1/chat/completions", {"authorization": f"Bearer {keys.primary}", "x-test-marker": marker}, body
    )
    assert status == 400 and b"Invalid value for 'model'" in answer
    assert not [r for r in simulator.requests() if r["headers"].get("x-test-marker") == marker]
