"""`<llm-content-safety>`: check the prompt with Azure AI Content Safety before it reaches the model.

    <llm-content-safety backend-id="content-safety" shield-prompt="true">
        <categories output-type="EightSeverityLevels">
            <category name="Hate" threshold="4" />
            <category name="Violence" threshold="4" />
        </categories>
        <blocklists><id>banned-terms</id></blocklists>
    </llm-content-safety>

`backend-id` names a configured backend whose URL is the Content Safety resource
(`https://<name>.cognitiveservices.azure.com`; give it `"deployments": []` so it serves no model), with an API
key (sent as `Ocp-Apim-Subscription-Key`) or a managed identity. The text checked is every text of the request
(chat messages, completion prompts, Responses API input and instructions; any other body as a whole).

* `<categories>`: `text:analyze` (API 2023-10-01) rates the text per category; a category whose severity is
  at or above its `threshold` (0-7) blocks the request. `output-type` is FourSeverityLevels (0, 2, 4, 6; the
  default) or EightSeverityLevels (0-7).
* `<blocklists>`: the same call also matches the resource's blocklists; any match blocks.
* `shield-prompt="true"`: `text:shieldPrompt` (API 2024-09-01) looks for attacks: in what the user wrote, and
  in tool and function results (sent as documents, for indirect attacks). A detected attack blocks.

A blocked request is refused with 403 before it reaches the backend (`{"error": {"code": "403", "message":
"Request failed content safety check: …"}}`, `context.LastError.Reason` `ContentSafetyCheckFailed`;
APIM documents the 403, its body is not documented). Text over Content Safety's 10,000-character limit
per call is checked in pieces of 10,000 characters, up to 10 pieces; a longer prompt, an unreachable
service or an answer other than 200 is a 500, as in APIM ("If the request exceeds the character limit …,
or an internal error occurs, a 500 error is returned"). A request without text passes unchecked.
Only `inbound`, as in APIM's documented usage; answers are not checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from policies.context import Context, Response
from policies.errors import PolicyError, PolicyResponse, ServiceError
from policies.expressions import ExpressionRuntimeError, Value
from policies.statement import Loader, Settings, Statement, as_bool, attr, register
from policies.statements._prompt_text import prompt_text
from policies.xml import PolicyElement

CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
OUTPUT_TYPES = ("FourSeverityLevels", "EightSeverityLevels")
ANALYZE_PATH = "/contentsafety/text:analyze?api-version=2023-10-01"
SHIELD_PATH = "/contentsafety/text:shieldPrompt?api-version=2024-09-01"
#: Content Safety's limit per call, and how many calls one check may make per kind.
MAX_CHARS = 10_000
MAX_PIECES = 10
#: Seconds one check may wait for the service.
TIMEOUT_SECONDS = 10.0
_REASON = "ContentSafetyCheckFailed"


class ContentSafetySettings(Settings):
    backend_id: Value = attr()
    shield_prompt: Value = attr(kind=bool, default=False)


class CategoriesSettings(Settings):
    output_type: Value = attr(choices=OUTPUT_TYPES, default="FourSeverityLevels")


class CategorySettings(Settings):
    name: Value = attr(choices=CATEGORIES)
    threshold: Value = attr(kind=int, minimum=0, maximum=7)


@dataclass(frozen=True)
class _Categories:
    output_type: Value
    thresholds: tuple[tuple[Value, Value], ...]


@register
class LlmContentSafety(Statement):
    element = "llm-content-safety"
    sections = frozenset({"inbound"})

    def __init__(self, settings: ContentSafetySettings, categories: _Categories | None, blocklists: tuple[Value, ...]) -> None:
        self.backend_id = settings.backend_id
        self.shield_prompt = settings.shield_prompt
        self.categories = categories
        self.blocklists = blocklists

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> LlmContentSafety:
        settings = loader.settings(element, ContentSafetySettings)
        loader.check_backend_id(element, settings.backend_id)
        categories: _Categories | None = None
        blocklists: list[Value] = []
        for child in loader.children(element, ("categories", "blocklists")):
            if child.tag == "categories":
                if categories is not None:
                    raise loader.fail(child, "<categories> may appear once.")
                thresholds = []
                for category in loader.children(child, ("category",)):
                    loader.children(category, ())
                    parsed = loader.settings(category, CategorySettings)
                    thresholds.append((parsed.name, parsed.threshold))
                categories = _Categories(loader.settings(child, CategoriesSettings).output_type, tuple(thresholds))
            else:
                loader.no_attributes(child)
                for item in loader.children(child, ("id",)):
                    loader.no_attributes(item)
                    loader.children(item, ())
                    blocklists.append(loader.text(item))
        return cls(settings, categories, tuple(blocklists))

    async def run(self, context: Context) -> None:
        text = prompt_text(context.Request.Body.content)
        if not text.prompt and not text.documents:
            return
        backend_id = str(self.backend_id.evaluate(context))
        checks = []
        if self.categories is not None or self.blocklists:
            checks += [self._analyze(context, backend_id, piece) for piece in _pieces(text.all())]
        if as_bool(self.shield_prompt.evaluate(context), self.shield_prompt.source):
            checks += [self._shield(context, backend_id, piece, []) for piece in _pieces("\n".join(text.prompt))]
            checks += [self._shield(context, backend_id, "", [piece]) for piece in _pieces("\n".join(text.documents))]
        verdicts = await asyncio.gather(*checks)
        blocked = next((verdict for verdict in verdicts if verdict is not None), None)
        if blocked is not None:
            message = f"Request failed content safety check: {blocked}."
            raise PolicyError(self.element, _REASON, message, PolicyResponse.error(403, message))

    async def _analyze(self, context: Context, backend_id: str, text: str) -> str | None:
        request: dict[str, Any] = {"text": text}
        thresholds: dict[str, int] = {}
        if self.categories is not None:
            for name_value, threshold_value in self.categories.thresholds:
                name, threshold = str(name_value.evaluate(context)), _int(threshold_value.evaluate(context))
                if name not in CATEGORIES or not 0 <= threshold <= 7:
                    raise ExpressionRuntimeError(f"llm-content-safety: category {name[:40]!r} with threshold {threshold} is not valid.")
                thresholds[name] = threshold
            output_type = str(self.categories.output_type.evaluate(context))
            if output_type not in OUTPUT_TYPES:
                raise ExpressionRuntimeError(f"llm-content-safety: output-type {output_type[:40]!r} is not one of {', '.join(OUTPUT_TYPES)}.")
            request.update(categories=list(thresholds) or list(CATEGORIES), outputType=output_type)
        if self.blocklists:
            request.update(blocklistNames=[str(item.evaluate(context)) for item in self.blocklists], haltOnBlocklistHit=False)
        answer = await self._call(context, backend_id, ANALYZE_PATH, request)
        matches = answer.get("blocklistsMatch") or []
        if matches:
            return f"blocklist {str(matches[0].get('blocklistName', ''))[:100]!r} matched"
        for rating in answer.get("categoriesAnalysis") or []:
            category, severity = rating.get("category"), _int(rating.get("severity"))
            if category in thresholds and severity >= thresholds[category]:
                return f"{category} severity {severity} (threshold {thresholds[category]})"
        return None

    async def _shield(self, context: Context, backend_id: str, prompt: str, documents: list[str]) -> str | None:
        answer = await self._call(context, backend_id, SHIELD_PATH, {"userPrompt": prompt, "documents": documents})
        if (answer.get("userPromptAnalysis") or {}).get("attackDetected") is True:
            return "attack detected in the prompt"
        if any(isinstance(item, dict) and item.get("attackDetected") is True for item in answer.get("documentsAnalysis") or []):
            return "attack detected in a document"
        return None

    async def _call(self, context: Context, backend_id: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await context.services.call_backend(backend_id, path, orjson.dumps(payload), TIMEOUT_SECONDS)
        except ServiceError as exc:
            raise self._failure(f"Content Safety could not be reached: {exc.message}") from exc
        answer = _json(response)
        if response.StatusCode != 200 or answer is None:
            raise self._failure(f"Content Safety answered {response.StatusCode}: {response.Body.As()[:300]!r}")
        return answer

    def _failure(self, message: str) -> PolicyError:
        return PolicyError(self.element, "ContentSafetyUnavailable", message, PolicyResponse.error(500, "The content safety check failed."))


def _pieces(text: str) -> list[str]:
    """The text cut into pieces Content Safety accepts; a 500 when there are more than one check may send."""
    pieces = [text[start : start + MAX_CHARS] for start in range(0, len(text), MAX_CHARS)]
    if len(pieces) > MAX_PIECES:
        message = f"The prompt is longer than the content safety check accepts ({MAX_PIECES * MAX_CHARS} characters)."
        raise PolicyError("llm-content-safety", "ContentSafetyLimitExceeded", message, PolicyResponse.error(500, message))
    return pieces


def _json(response: Response) -> dict[str, Any] | None:
    try:
        answer = orjson.loads(response.Body.content)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]  # any value: int() raising is the -1 case
    except (TypeError, ValueError):
        return -1
