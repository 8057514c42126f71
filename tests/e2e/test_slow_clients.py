"""The local host closes connections that stay idle or drip-feed their headers or body (a real gateway, raw sockets)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.conftest import GatewayProcess, Keys

HEADERS_S, BODY_S, IDLE_S = 1.0, 2.0, 1
#: Scheduling slack on a busy 2-core machine.
SLACK_S = 1.5


@pytest.fixture(scope="module")
def strict_gateway(start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str]) -> GatewayProcess:
    return start_gateway(
        {
            **gateway_env,
            "GATEWAY_CLIENT_HEADER_TIMEOUT_SECONDS": str(HEADERS_S),
            "GATEWAY_CLIENT_BODY_TIMEOUT_SECONDS": str(BODY_S),
            "GATEWAY_CLIENT_IDLE_TIMEOUT_SECONDS": str(IDLE_S),
        }
    )


def connect(gateway: GatewayProcess) -> socket.socket:
    parts = urlsplit(gateway.url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
    sock.settimeout(0.05)
    return sock


def drip(sock: socket.socket, data: bytes, interval: float, limit: float) -> tuple[float, bytes]:
    """Send `data` a byte every `interval` s (then keep silent) until the server closes; (seconds, bytes it sent)."""
    started = time.monotonic()
    received = b""
    for byte in (data[i : i + 1] for i in range(len(data))):
        try:
            sock.sendall(byte)
        except OSError:
            break
        step_end = time.monotonic() + interval
        while time.monotonic() < step_end:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - started, received
            if not chunk:
                return time.monotonic() - started, received
            received += chunk
        if time.monotonic() - started > limit:
            break
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    return time.monotonic() - started, received


def test_a_connection_that_sends_nothing_is_closed(strict_gateway: GatewayProcess) -> None:
    with connect(strict_gateway) as sock:
        elapsed, received = drip(sock, b"", 0, limit=HEADERS_S + 10)
    assert elapsed < HEADERS_S + SLACK_S and received == b""


def test_drip_fed_headers_are_cut_off_although_bytes_keep_coming(strict_gateway: GatewayProcess) -> None:
    request = b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(strict_gateway) as sock:
        elapsed, received = drip(sock, request, 0.1, limit=HEADERS_S + 10)
    assert elapsed < HEADERS_S + SLACK_S and received == b""


def test_a_drip_fed_body_gets_408_and_the_connection_closes(strict_gateway: GatewayProcess, keys: Keys) -> None:
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + b"a" * 200 + b'"}]}'
    head = (
        f"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\napi-key: {keys.primary}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(strict_gateway) as sock:
        sock.sendall(head)
        elapsed, received = drip(sock, body, 0.1, limit=BODY_S + 10)
    assert elapsed < BODY_S + SLACK_S
    assert received.startswith(b"HTTP/1.1 408 ") and b'"RequestTimeout"' in received


def test_an_idle_keep_alive_connection_is_closed_after_its_response(strict_gateway: GatewayProcess) -> None:
    with connect(strict_gateway) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        elapsed, received = drip(sock, b"", 0, limit=IDLE_S + 10)
    assert received.startswith(b"HTTP/1.1 200 ") and b'"status":"ok"' in received
    assert elapsed < IDLE_S + SLACK_S


def test_requests_at_normal_speed_are_served_on_one_connection(strict_gateway: GatewayProcess) -> None:
    with connect(strict_gateway) as sock:
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.3)
            sock.settimeout(5)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 ") and b"server:" not in answer.lower()
