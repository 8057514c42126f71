"""Relayed responses carry one `date` (the gateway's) and no `server` header, neither the backend's nor the host's."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator


@pytest.mark.parametrize("stream", [False, True])
def test_one_date_and_no_server_header(gateway: GatewayProcess, keys: Keys, simulator: Simulator, stream: bool) -> None:
    backend = httpx.get(f"{simulator.url}/sim/stats")
    assert backend.headers.get("server") and backend.headers.get("date")  # the backend does send both
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    with httpx.stream(
        "POST",
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary},
        json=body,
    ) as answer:
        answer.read()
    assert answer.status_code == 200
    assert len(answer.headers.get_list("date")) == 1
    assert "server" not in answer.headers
