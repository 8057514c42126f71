"""`trace`: a record on the `policies.trace` logger, at the severity's level, with structured dimensions."""

from __future__ import annotations

import logging

import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, run_document

TRACE = (
    '<trace source="routing" severity="{severity}"><message>@("to " + context.Request.MatchedParameters["deployment-id"])</message>'
    '<metadata name="team" value="@(context.Subscription.Name)" /><metadata name="fixed" value="1" /></trace>'
)


@pytest.mark.parametrize(("severity", "level"), [("verbose", logging.DEBUG), ("information", logging.INFO), ("error", logging.ERROR)])
async def test_trace_logs_message_level_and_dimensions(severity: str, level: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="policies.trace")
    await run_document(doc(outbound=TRACE.format(severity=severity) + "<base />"))
    (record,) = [r for r in caplog.records if r.name == "policies.trace"]
    assert (record.getMessage(), record.levelno) == ("to gpt-4o", level)
    assert record.custom_dimensions == {"source": "routing", "severity": severity, "request_id": "req-1", "team": "team-a", "fixed": "1"}  # type: ignore[attr-defined]


async def test_levels_the_logger_drops_cost_no_evaluation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="policies.trace")
    failing = '<trace source="s"><message>@(context.Api.Id.Substring(99))</message></trace>'  # would fail if evaluated
    result, _, _ = await run_document(doc(inbound=failing))
    assert result is None and not [r for r in caplog.records if r.name == "policies.trace"]


async def test_long_values_are_cut_to_application_insights_limits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="policies.trace")
    xml = doc(inbound='<trace source="s"><message>@(context.Request.Headers.GetValueOrDefault("x-big", ""))</message></trace>')
    await run_document(xml, headers=[("x-big", "y" * 40000)])
    (record,) = [r for r in caplog.records if r.name == "policies.trace"]
    assert len(record.getMessage()) == 32768


@pytest.mark.parametrize(
    "element",
    [
        '<trace severity="error"><message>m</message></trace>',
        '<trace source="s" severity="debug"><message>m</message></trace>',
        '<trace source="@(context.Api.Id)"><message>m</message></trace>',
        '<trace source="s"><message>a</message><message>b</message></trace>',
    ],
)
def test_load_errors(element: str) -> None:
    with pytest.raises(PolicyLoadError):
        load_document(doc(inbound=element), Scope("api", "openai"), Loader())
