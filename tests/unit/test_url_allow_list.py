"""The URL allow-list shared by `set-backend-service base-url` and `send-request`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli.main import main as cli
from gateway.config.settings import Settings
from policies.errors import PolicyLoadError
from policies.statement import Loader
from policies.url_allow_list import UrlAllowList
from tests.policy_helpers import doc, pipeline_of, run_document

ALLOWED = UrlAllowList.parse(
    ["api.example.com", "*.contoso.net", "hooks.example.org:8443", "https://svc.example.io/v1", "https://files.example.io/in/"]
)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/anything?x=1",
        "http://API.example.com:8080/",
        "https://a.contoso.net/x",
        "https://deep.a.contoso.net/x",
        "https://hooks.example.org:8443/x",
        "https://svc.example.io/v1",
        "https://svc.example.io/v1/x",
        "https://svc.example.io:443/v1/x",
        "https://files.example.io/in/a",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert ALLOWED.refusal(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://contoso.net/x", "not a configured backend"),  # *.contoso.net is subdomains only
        ("https://hooks.example.org/x", "not a configured backend"),  # wrong port
        ("https://svc.example.io/v10", "not a configured backend"),  # a prefix ends at a path segment
        ("http://svc.example.io/v1/x", "not a configured backend"),  # another scheme
        ("https://svc.example.io:444/v1", "not a configured backend"),
        ("https://files.example.io/in", "not a configured backend"),  # the prefix wants /in/
        ("https://api.example.com.evil.net/", "not a configured backend"),
        ("https://api.example.com@evil.net/", "user info"),
        ("https://svc.example.io/v1/../admin", "'.' or '..' segment"),
        ("https://svc.example.io/v1/%2e%2E/admin", "'.' or '..' segment"),
        ("https://api.example.com\\@evil.net/", "backslash"),
        ("https://api.example.com/a b", "whitespace"),
        ("ftp://api.example.com/", "not an http(s) URL"),
        ("/relative/path", "not an http(s) URL"),
        ("https://api.example.com:99999/", "cannot be parsed"),
        ("https://ex%61mple.com/", "not a plain host name"),
    ],
)
def test_refused_urls_say_why(url: str, why: str) -> None:
    refusal = ALLOWED.refusal(url)
    assert refusal is not None and why in refusal


def test_star_allows_any_well_formed_url_but_never_user_info() -> None:
    anything = UrlAllowList.parse(["*"])
    assert anything.refusal("https://whatever.example/") is None
    assert anything.refusal("https://user@whatever.example/") is not None


@pytest.mark.parametrize("entry", ["https://x.example.com/?q=1", "not a host!", "https://*.example.com/", "api.example.com:0", "ftp://x/"])
def test_unreadable_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        UrlAllowList.parse([entry])


def _env(**extra: str) -> dict[str, str]:
    backends = [{"id": "aoai", "url": "https://east.openai.azure.com", "deployments": ["*"], "api_key_setting": "K"}]
    return {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 20, "K": "k",
            "GATEWAY_BACKENDS": json.dumps(backends), **extra}  # fmt: skip


@pytest.mark.parametrize("raw", ['["hooks.example.com", "https://logs.example.com/in/"]', "hooks.example.com, https://logs.example.com/in/"])
def test_setting_takes_a_json_list_or_commas_and_always_adds_the_backends(raw: str) -> None:
    allowed = Settings.from_env(_env(GATEWAY_ALLOWED_URLS=raw)).url_allow_list()
    assert allowed.refusal("https://hooks.example.com/x") is None
    assert allowed.refusal("https://logs.example.com/in/x") is None
    assert allowed.refusal("https://east.openai.azure.com/openai/deployments/x") is None
    assert allowed.refusal("https://west.openai.azure.com/openai") is not None


def test_by_default_only_backends_are_allowed() -> None:
    allowed = Settings.from_env(_env()).url_allow_list()
    assert allowed.refusal("https://east.openai.azure.com/openai") is None
    assert allowed.refusal("https://attacker.example/") is not None


@pytest.mark.parametrize("raw", ['["https://x.example/?a=1"]', "[1]", "user@host"])
def test_setting_errors_name_the_setting(raw: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_ALLOWED_URLS"):
        Settings.from_env(_env(GATEWAY_ALLOWED_URLS=raw))


def test_constant_base_url_outside_the_list_fails_at_load() -> None:
    loader = Loader(allowed_urls=UrlAllowList.parse(["https://east.openai.azure.com"]))
    pipeline_of(doc(inbound='<set-backend-service base-url="https://east.openai.azure.com/openai" />'), loader)
    with pytest.raises(PolicyLoadError, match="not a configured backend"):
        pipeline_of(doc(inbound='<set-backend-service base-url="https://west.openai.azure.com/openai" />'), loader)


def test_malformed_constant_base_url_fails_at_load_even_without_a_list() -> None:
    with pytest.raises(PolicyLoadError, match="user info"):
        pipeline_of(doc(inbound='<set-backend-service base-url="https://a@b.openai.azure.com" />'), Loader())


async def test_header_driven_base_url_is_refused_at_run_time_and_on_error_runs() -> None:
    xml = doc(
        inbound='<set-backend-service base-url=\'@(context.Request.Headers.GetValueOrDefault("x-target", ""))\' /><base />',
        on_error='<set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>',
    )
    result, context, services = await run_document(xml, headers=[("x-target", "https://attacker.example/collect")])
    assert result is not None and result.status == 403
    assert ("x-reason", "UrlNotAllowed") in result.headers
    assert b"may not send requests to this URL" in result.body
    assert "attacker.example" in context.LastError.Message and "attacker.example" not in result.body.decode()
    assert services.forwarded == []
    allowed, _, services = await run_document(xml, headers=[("x-target", "https://east.openai.azure.com/openai")])
    assert allowed is None and services.forwarded[0]["base_url"] == "https://east.openai.azure.com"


def test_policies_check_uses_the_gateways_allow_list_and_loggers(tmp_path: Path) -> None:
    def check(inbound: str, **env: str) -> str:
        path = tmp_path / "doc.xml"
        path.write_text(doc(inbound=inbound))
        result = CliRunner().invoke(cli, ["policies", "check", str(path)], env=_env(**env))
        return result.output

    send = '<send-request response-variable-name="r"><set-url>https://hooks.example.com/in</set-url></send-request>'
    assert "not a configured backend and not in GATEWAY_ALLOWED_URLS" in check(send)
    assert "OK:" in check(send, GATEWAY_ALLOWED_URLS="hooks.example.com")
    log = '<log-to-eventhub logger-id="audit">m</log-to-eventhub>'
    assert "Unknown logger-id 'audit'" in check(log)
    loggers = json.dumps({"audit": {"type": "queue", "connection_setting": "GATEWAY_STORAGE_CONNECTION", "name": "audit"}})
    assert "OK:" in check(log, GATEWAY_LOGGERS=loggers)
