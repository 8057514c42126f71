"""Route matching against the Azure OpenAI operations, and the bundled OpenAPI documents agreeing with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.handling import operations as routes

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize(
    ("method", "path", "operation", "params"),
    [
        ("POST", "deployments/gpt-4o/chat/completions", "ChatCompletions_Create", {"deployment-id": "gpt-4o"}),
        ("POST", "deployments/d/embeddings", "embeddings_create", {"deployment-id": "d"}),
        ("POST", "deployments/w/audio/transcriptions", "Transcriptions_Create", {"deployment-id": "w"}),
        ("POST", "deployments/t/audio/speech", "Speech_Create", {"deployment-id": "t"}),
        ("POST", "v1/chat/completions", "createChatCompletion", {}),
        ("POST", "v1/responses", "createResponse", {}),
        ("GET", "v1/responses/resp_1", "getResponse", {"response-id": "resp_1"}),
        ("GET", "v1/models", "listModels", {}),
        ("GET", "v1/models/gpt-4o", "retrieveModel", {"model-id": "gpt-4o"}),
    ],
)
def test_known_routes_match_their_operation(method: str, path: str, operation: str, params: dict[str, str]) -> None:
    match = routes.match(method, path)
    assert match is not None
    assert match.operation.id == operation
    assert match.params == params


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "deployments/gpt-4o/chat/completions"),  # wrong method
        ("POST", "deployments//chat/completions"),  # empty deployment
        ("POST", "deployments/gpt-4o/chat/completions/extra"),
        ("POST", "deployments/gpt-4o"),
        ("POST", "v1/unknown"),
        ("POST", "v1/models"),
        ("GET", "v1/models/a/b"),
        ("POST", ""),
    ],
)
def test_unknown_routes_do_not_match(method: str, path: str) -> None:
    assert routes.match(method, path) is None


@pytest.mark.parametrize("spec", sorted(SPECS.glob("azure-openai-inference-*.json")), ids=lambda p: p.stem)
def test_every_operation_of_the_bundled_specs_is_routable(spec: Path) -> None:
    document = json.loads(spec.read_text())
    for template, methods in document["paths"].items():
        for method, operation in methods.items():
            path = template.lstrip("/").replace("{deployment-id}", "dep")
            match = routes.match(method.upper(), path)
            assert match is not None, f"{method.upper()} {template}"
            assert match.operation.id == operation["operationId"]
