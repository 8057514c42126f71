"""Outbound managed identity end to end: azure-identity's real ManagedIdentityCredential in a gateway process,
against the simulator's App Service-style identity endpoint on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable

from openai import AzureOpenAI

from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator


def test_backend_called_with_managed_identity_token_fetched_once(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    simulator: Simulator,
    keys: Keys,
) -> None:
    env = {
        **gateway_env,
        "GATEWAY_BACKENDS": json.dumps(
            [{"id": "sim-mi", "url": simulator.url, "deployments": ["*"], "managed_identity": {"client_id": "11111111-2222-3333-4444-555555555555"}}]
        ),
        "IDENTITY_ENDPOINT": f"{simulator.url}/msi/token",
        "IDENTITY_HEADER": "local-identity-header",
    }
    gateway = start_gateway(env)
    issued_before = simulator.stats()["msi_tokens_issued"]
    simulator.clear_requests()
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=keys.primary, api_version=API_VERSION, max_retries=0)
    for i in range(3):
        answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"mi {i}"}])
        assert answer.choices[0].message.content == f"Simulated answer to: mi {i}"
    assert simulator.stats()["msi_tokens_issued"] - issued_before == 1
    seen = simulator.requests()
    assert len(seen) == 3
    for request in seen:
        assert request["headers"]["authorization"].startswith("Bearer sim-mi-")
        assert "api-key" not in request["headers"]
        assert keys.primary not in repr(request)
