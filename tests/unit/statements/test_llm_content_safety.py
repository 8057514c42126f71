"""`llm-content-safety`: the prompt checked by a fake Content Safety (analyze and shield calls), what blocks it, and its
failures and load errors."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import BackendError
from policies.errors import PolicyLoadError
from policies.services import OutgoingRequest
from policies.statement import Loader
from tests.policy_helpers import FakeServices, doc, json_response, pipeline_of, run_document

LOADER = Loader(backend_ids=frozenset({"content-safety"}))
POLICY = """<llm-content-safety backend-id="content-safety" shield-prompt="true">
    <categories output-type="EightSeverityLevels">
        <category name="Hate" threshold="4" />
        <category name="Violence" threshold="@(2 + 2)" />
    </categories>
    <blocklists><id>blocklist1</id></blocklists>
</llm-content-safety>"""


def _fake(analyze: dict | None = None, shield: dict | None = None, status: int = 200) -> FakeServices:
    services = FakeServices()

    def answer(request: OutgoingRequest) -> object:
        if "shieldPrompt" in request.url:
            return json_response(status, shield or {"userPromptAnalysis": {"attackDetected": False}, "documentsAnalysis": []})
        return json_response(status, analyze or {"blocklistsMatch": [], "categoriesAnalysis": [{"category": "Hate", "severity": 0}]})

    services.answer = answer  # type: ignore[assignment]
    return services


async def test_clean_prompt_passes_after_analyze_and_shield_calls() -> None:
    services = _fake()
    result, _, _ = await run_document(doc(inbound=POLICY), services, loader=LOADER)
    assert result is None and len(services.forwarded) == 1
    analyze, shield = (orjson.loads(request.body) for request in services.sent)
    assert services.sent[0].url == "content-safety:/contentsafety/text:analyze?api-version=2023-10-01"
    assert analyze == {"text": "hi", "categories": ["Hate", "Violence"], "outputType": "EightSeverityLevels",
                       "blocklistNames": ["blocklist1"], "haltOnBlocklistHit": False}  # fmt: skip
    assert shield == {"userPrompt": "hi", "documents": []}


@pytest.mark.parametrize(
    ("analyze", "shield", "why"),
    [
        ({"categoriesAnalysis": [{"category": "Violence", "severity": 4}]}, None, "Violence severity 4 (threshold 4)"),
        ({"blocklistsMatch": [{"blocklistName": "blocklist1"}], "categoriesAnalysis": []}, None, "blocklist 'blocklist1' matched"),
        (None, {"userPromptAnalysis": {"attackDetected": True}}, "attack detected in the prompt"),
    ],
)
async def test_a_blocked_prompt_gets_403_and_never_reaches_the_backend(analyze: dict | None, shield: dict | None, why: str) -> None:
    services = _fake(analyze, shield)
    result, context, _ = await run_document(doc(inbound=POLICY), services, loader=LOADER)
    assert result is not None and result.status == 403
    assert orjson.loads(result.body) == {"error": {"code": "403", "message": f"Request failed content safety check: {why}."}}
    assert context.LastError.Reason == "ContentSafetyCheckFailed" and services.forwarded == []


async def test_severity_below_the_threshold_or_of_an_unlisted_category_passes() -> None:
    services = _fake({"categoriesAnalysis": [{"category": "Hate", "severity": 3}, {"category": "Sexual", "severity": 7}]})
    result, _, _ = await run_document(doc(inbound=POLICY), services, loader=LOADER)
    assert result is None


async def test_service_failures_are_500_as_in_apim() -> None:
    result, context, _ = await run_document(doc(inbound=POLICY), _fake(status=429), loader=LOADER)
    assert result is not None and result.status == 500 and context.LastError.Reason == "ContentSafetyUnavailable"
    down = FakeServices()
    down.answer = lambda request: BackendError()
    result, context, _ = await run_document(doc(inbound=POLICY), down, loader=LOADER)
    assert result is not None and result.status == 500 and "could not be reached" in context.LastError.Message


async def test_long_prompts_are_checked_in_pieces_up_to_a_bound() -> None:
    services = _fake()
    body = {"messages": [{"role": "user", "content": "w" * 25_000}]}
    result, _, _ = await run_document(doc(inbound=POLICY), services, body=body, loader=LOADER)
    assert result is None and len(services.sent) == 6  # 3 pieces analysed, 3 shielded
    result, context, _ = await run_document(
        doc(inbound=POLICY), _fake(), body={"messages": [{"role": "user", "content": "w" * 100_001}]}, loader=LOADER
    )
    assert result is not None and result.status == 500 and context.LastError.Reason == "ContentSafetyLimitExceeded"


async def test_only_shield_prompt_makes_one_call_per_kind_of_text() -> None:
    services = _fake()
    body = {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "doc"}]}
    await run_document(doc(inbound='<llm-content-safety backend-id="content-safety" shield-prompt="true" />'), services, body=body, loader=LOADER)
    assert [orjson.loads(r.body) for r in services.sent] == [{"userPrompt": "q", "documents": []}, {"userPrompt": "", "documents": ["doc"]}]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('<llm-content-safety backend-id="nowhere" />', "Unknown backend-id 'nowhere'"),
        (
            '<llm-content-safety backend-id="content-safety"><categories><category name="Spam" threshold="1" /></categories></llm-content-safety>',
            "use one of Hate",
        ),
        (
            '<llm-content-safety backend-id="content-safety"><categories><category name="Hate" threshold="8" /></categories></llm-content-safety>',
            "at most 7",
        ),
        ('<llm-content-safety backend-id="content-safety"><categories output-type="TwoLevels" /></llm-content-safety>', "FourSeverityLevels"),
        ('<llm-content-safety backend-id="content-safety"><rules /></llm-content-safety>', "Unexpected element"),
    ],
)
def test_load_errors(statement: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=statement), Loader(backend_ids=frozenset({"content-safety"})))


def test_outbound_is_refused() -> None:
    with pytest.raises(PolicyLoadError, match="Not allowed in <outbound>"):
        pipeline_of(doc(outbound='<llm-content-safety backend-id="content-safety" />'), Loader())
