"""`policies check` refuses what `apply` refuses, with the settings that are present, and lists what it could not check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli.main import main as cli
from gateway.dev import devstack

#: Every setting `check` reads, unset: each test sets only what it needs.
BARE: dict[str, str | None] = dict.fromkeys(
    ("GATEWAY_STORAGE_CONNECTION", "AzureWebJobsStorage", "GATEWAY_KEY_PEPPER", "GATEWAY_BACKENDS", "AZURE_OPENAI_ENDPOINT",
     "GATEWAY_PRODUCTS", "GATEWAY_NAMED_VALUES")
)  # fmt: skip
BACKENDS = json.dumps([{"id": "primary", "url": "https://example.openai.azure.com"}])
ROUTED = '<policies><inbound><set-backend-service backend-id="{}" /></inbound></policies>'


def check(tmp_path: Path, xml: str, scope: str = "api:openai", **settings: str) -> tuple[int, str]:
    path = tmp_path / "policy.xml"
    path.write_text(xml)
    result = CliRunner().invoke(cli, ["policies", "check", str(path), "--scope", scope], env={**BARE, **settings})
    return result.exit_code, result.output


def test_without_backends_backend_ids_are_reported_unchecked(tmp_path: Path) -> None:
    code, output = check(tmp_path, ROUTED.format("anything"))
    assert code == 0 and "OK:" in output
    assert "Not checked, for want of settings" in output
    assert "backend ids (backend-id, embeddings-backend-id): GATEWAY_BACKENDS and AZURE_OPENAI_ENDPOINT are unset" in output


def test_with_backends_an_unknown_backend_id_is_refused_as_apply_refuses_it(tmp_path: Path) -> None:
    code, output = check(tmp_path, ROUTED.format("secondary"), GATEWAY_BACKENDS=BACKENDS)
    assert code == 1 and "Unknown backend-id 'secondary'" in output and "Nothing was applied" in output
    code, output = check(tmp_path, ROUTED.format("primary"), GATEWAY_BACKENDS=BACKENDS)
    assert code == 0 and "Not checked" not in output


def test_named_values_are_honoured_without_a_storage_connection(tmp_path: Path) -> None:
    xml = '<policies><inbound><set-header name="x-team" exists-action="override"><value>{{team}}</value></set-header></inbound></policies>'
    code, output = check(tmp_path, xml, GATEWAY_NAMED_VALUES='{"team": "blue"}', GATEWAY_BACKENDS=BACKENDS)
    assert (code, "Not checked" in output) == (0, False)
    code, output = check(tmp_path, xml, GATEWAY_NAMED_VALUES='{"other": "blue"}')
    assert code == 1 and "Named value 'team' is not defined" in output


def test_a_broken_setting_fails_check_as_it_fails_apply(tmp_path: Path) -> None:
    code, output = check(tmp_path, "<policies />", GATEWAY_NAMED_VALUES="{not json")
    assert code == 1 and "GATEWAY_NAMED_VALUES" in output


@pytest.mark.parametrize(
    ("scope", "suggestion"),
    [("api:opnai", "Did you mean api:openai?"), ("operation:ChatCompletion_Create", "Did you mean operation:ChatCompletions_Create?")],
)
def test_misspelled_scopes_are_refused_with_a_suggestion(tmp_path: Path, scope: str, suggestion: str) -> None:
    code, output = check(tmp_path, "<policies />", scope)
    assert code == 1 and suggestion in output and "no request can match it" in output


def test_product_scopes_are_checked_against_gateway_products_when_set(tmp_path: Path) -> None:
    code, output = check(tmp_path, "<policies />", "product:gld", GATEWAY_PRODUCTS='{"gold": ["openai"]}')
    assert code == 1 and "Did you mean product:gold?" in output
    code, output = check(tmp_path, "<policies />", "product:gld")
    assert code == 0 and "the product in scope product:gld: GATEWAY_PRODUCTS is unset" in output


def test_fragments_without_a_store_are_reported_and_the_rest_still_checked(tmp_path: Path) -> None:
    xml = '<policies><inbound><include-fragment fragment-id="auth" />{}</inbound></policies>'
    code, output = check(tmp_path, xml.format(""), GATEWAY_BACKENDS=BACKENDS)
    assert code == 0 and "fragments auth (taken as empty): GATEWAY_STORAGE_CONNECTION is unset" in output
    code, output = check(tmp_path, xml.format('<rate-limit calls="x" renewal-period="60" />'), GATEWAY_BACKENDS=BACKENDS)
    assert code == 1 and "rate-limit" in output


def test_fragments_of_a_store_that_does_not_answer_are_reported(tmp_path: Path) -> None:
    closed = devstack.AzuritePorts(devstack.free_port(), devstack.free_port(), devstack.free_port()).connection_string()
    xml = '<policies><inbound><include-fragment fragment-id="auth" /></inbound></policies>'
    code, output = check(tmp_path, xml, GATEWAY_STORAGE_CONNECTION=closed, GATEWAY_BACKENDS=BACKENDS)
    assert code == 0 and "fragments auth (taken as empty): the policy store did not answer" in output


def test_apply_refuses_a_misspelled_scope_before_touching_storage(tmp_path: Path) -> None:
    path = tmp_path / "policy.xml"
    path.write_text("<policies />")
    closed = devstack.AzuritePorts(devstack.free_port(), devstack.free_port(), devstack.free_port()).connection_string()
    env = {**BARE, "GATEWAY_STORAGE_CONNECTION": closed, "GATEWAY_KEY_PEPPER": "p" * 16}
    result = CliRunner().invoke(cli, ["policies", "apply", str(path), "--scope", "api:opnai"], env=env)
    assert result.exit_code == 1 and "Did you mean api:openai?" in result.output and "Nothing was applied" in result.output
