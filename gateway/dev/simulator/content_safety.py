"""A simulated Azure AI Content Safety: `text:analyze` and `text:shieldPrompt`, deterministic, for the simulator.

Not a classifier: fixed words decide. Each occurrence of a category's word adds 2 to its severity (capped at
6 for FourSeverityLevels, 7 for EightSeverityLevels):

    Hate: hatred, bigotry · SelfHarm: selfharm · Sexual: explicit · Violence: violence, weapon

Blocklists: `blocklist1` holds "forbidden-term" and "contoso-secret"; another name answers 404 as Azure does.
A prompt attack is detected when a text says "ignore previous instructions" or "jailbreak".
"""

from __future__ import annotations

import re
from typing import Any

CATEGORY_WORDS = {
    "Hate": ("hatred", "bigotry"),
    "SelfHarm": ("selfharm",),
    "Sexual": ("explicit",),
    "Violence": ("violence", "weapon"),
}
BLOCKLISTS = {"blocklist1": ("forbidden-term", "contoso-secret")}
ATTACK_PHRASES = ("ignore previous instructions", "jailbreak")
MAX_TEXT = 10_000
_WORD = re.compile(r"[\w-]+")


class ContentSafetyError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def analyze(payload: dict[str, Any]) -> dict[str, Any]:
    text = payload.get("text")
    if not isinstance(text, str) or not text:
        raise ContentSafetyError(400, "InvalidRequestBody", "The 'text' field is required.")
    if len(text) > MAX_TEXT:
        raise ContentSafetyError(400, "InvalidRequestBody", f"The text is longer than {MAX_TEXT} characters.")
    output_type = payload.get("outputType", "FourSeverityLevels")
    if output_type not in ("FourSeverityLevels", "EightSeverityLevels"):
        raise ContentSafetyError(400, "InvalidRequestBody", f"Unknown outputType {output_type!r}.")
    categories = payload.get("categories") or list(CATEGORY_WORDS)
    words = [word.lower() for word in _WORD.findall(text)]
    cap = 6 if output_type == "FourSeverityLevels" else 7
    analysis = []
    for category in categories:
        if category not in CATEGORY_WORDS:
            raise ContentSafetyError(400, "InvalidRequestBody", f"Unknown category {category!r}.")
        severity = min(cap, 2 * sum(words.count(word) for word in CATEGORY_WORDS[category]))
        analysis.append({"category": category, "severity": severity})
    matches = []
    for name in payload.get("blocklistNames") or []:
        if name not in BLOCKLISTS:
            raise ContentSafetyError(404, "NotFound", f"Blocklist {name!r} is not found.")
        matches += [
            {"blocklistName": name, "blocklistItemId": f"{name}-{index}", "blocklistItemText": term}
            for index, term in enumerate(BLOCKLISTS[name])
            if term in text.lower()
        ]
    return {"blocklistsMatch": matches, "categoriesAnalysis": analysis}


def shield_prompt(payload: dict[str, Any]) -> dict[str, Any]:
    prompt = payload.get("userPrompt", "")
    documents = payload.get("documents") or []
    if not isinstance(prompt, str) or not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise ContentSafetyError(400, "InvalidRequestBody", "'userPrompt' must be a string and 'documents' a list of strings.")
    if len(prompt) > MAX_TEXT or sum(map(len, documents)) > MAX_TEXT:
        raise ContentSafetyError(400, "InvalidRequestBody", f"The prompt or the documents are longer than {MAX_TEXT} characters.")
    return {
        "userPromptAnalysis": {"attackDetected": _attack(prompt)},
        "documentsAnalysis": [{"attackDetected": _attack(document)} for document in documents],
    }


def _attack(text: str) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in ATTACK_PHRASES)
