"""Settings and backend configuration: good values load, mistakes fail at load time naming the setting."""

from __future__ import annotations

import json

import pytest

from gateway.backends.config import ApiKeyAuth, ManagedIdentityAuth, parse_backends
from gateway.backends.registry import BackendRegistry
from gateway.config.settings import Settings

BASE = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 20}


def test_secrets_never_show_in_repr() -> None:
    settings = Settings.from_env({**BASE, "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/", "AZURE_OPENAI_API_KEY": "sk-secret-value"})
    assert "sk-secret-value" not in repr(settings)
    assert "p" * 20 not in repr(settings)
    assert "UseDevelopmentStorage" not in repr(settings)


def test_single_endpoint_shorthand_serves_every_deployment_with_key() -> None:
    (backend,) = parse_backends({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/openai/", "AZURE_OPENAI_API_KEY": "k"})
    assert backend.url == "https://x.openai.azure.com"
    assert backend.serves("anything")
    assert isinstance(backend.auth, ApiKeyAuth) and backend.auth.key.reveal() == "k"


def test_single_endpoint_without_key_uses_managed_identity() -> None:
    (backend,) = parse_backends({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_CLIENT_ID": "cid"})
    assert backend.auth == ManagedIdentityAuth("cid")


def test_backend_list_routes_exact_deployments_before_wildcard() -> None:
    env = {
        "EAST_KEY": "k1",
        "GATEWAY_BACKENDS": json.dumps(
            [
                {"id": "east", "url": "https://east.example", "deployments": ["gpt-4o"], "api_key_setting": "EAST_KEY"},
                {"id": "west", "url": "https://west.example", "deployments": ["*"], "managed_identity": True},
            ]
        ),
    }
    registry = BackendRegistry(parse_backends(env))
    assert registry.for_deployment("gpt-4o").id == "east"  # type: ignore[union-attr]
    assert registry.for_deployment("other").id == "west"  # type: ignore[union-attr]
    assert registry.known_deployments() == ["gpt-4o"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_KEY_PEPPER": "p" * 20}, "GATEWAY_STORAGE_CONNECTION"),
        ({"GATEWAY_STORAGE_CONNECTION": "x", "GATEWAY_KEY_PEPPER": "short"}, "GATEWAY_KEY_PEPPER"),
        ({**BASE, "GATEWAY_TABLE_PREFIX": "bad-prefix"}, "GATEWAY_TABLE_PREFIX"),
        ({**BASE, "GATEWAY_SUBSCRIPTION_CACHE_SECONDS": "soon"}, "not a number"),
        ({**BASE, "GATEWAY_PRODUCTS": "{"}, "GATEWAY_PRODUCTS"),
        ({**BASE, "GATEWAY_PRODUCTS": '{"gold": ["nope"]}'}, "unknown APIs"),
        ({**BASE, "GATEWAY_BACKENDS": "[{"}, "not valid JSON"),
        ({**BASE, "GATEWAY_BACKENDS": '[{"url": "https://x"}]'}, "'id'"),
        ({**BASE, "GATEWAY_BACKENDS": '[{"id": "a", "url": "ftp://x"}]'}, "not an http(s) URL"),
        ({**BASE, "GATEWAY_BACKENDS": '[{"id": "a", "url": "https://x", "api_key_setting": "MISSING"}]'}, "'MISSING' is missing"),
        ({**BASE, "GATEWAY_BACKENDS": '[{"id": "a", "url": "https://x"}, {"id": "a", "url": "https://y"}]'}, "repeats"),
        ({**BASE, "GATEWAY_BACKENDS": '[{"id": "a", "url": "https://x", "deployments": [""]}]'}, "deployments"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_problem(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)
