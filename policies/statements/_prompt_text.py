"""The text of a prompt, as content checks see it: what the user wrote, and what tools and documents put in.

Chat completions (`messages`, text content or text parts), completions (`prompt`), the Responses API (`input`,
`instructions`) and, for any other body, its raw text: a body the gateway cannot read as one of these is still
checked as a whole, so a malformed or unexpected shape cannot slip past a check the backend would accept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

#: Roles whose content comes from tools or retrieved documents (indirect prompt injection), not from the user.
_DOCUMENT_ROLES = frozenset({"tool", "function"})
_TEXT_PART_TYPES = frozenset({"text", "input_text"})


@dataclass
class PromptText:
    #: What the user (or the system prompt) wrote.
    prompt: list[str] = field(default_factory=list)
    #: Tool and function results: checked as documents by prompt shields.
    documents: list[str] = field(default_factory=list)

    def all(self) -> str:
        return "\n".join([*self.prompt, *self.documents])


def prompt_text(body: bytes) -> PromptText:
    text = PromptText()
    if not body:
        return text
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text.prompt.append(body.decode("utf-8", "replace"))
        return text
    if not isinstance(payload, dict) or not any(name in payload for name in ("messages", "prompt", "input", "instructions")):
        text.prompt.append(body.decode("utf-8", "replace"))
        return text
    _strings(payload.get("prompt"), text.prompt)
    _strings(payload.get("instructions"), text.prompt)
    for items in (payload.get("messages"), payload.get("input")):
        if isinstance(items, str):
            text.prompt.append(items)
        elif isinstance(items, list):
            for item in items:
                _item(item, text)
    return text


def _item(item: Any, text: PromptText) -> None:
    if isinstance(item, str):
        text.prompt.append(item)
        return
    if not isinstance(item, dict):
        return
    target = text.documents if item.get("role") in _DOCUMENT_ROLES or item.get("type") == "function_call_output" else text.prompt
    _strings(item.get("content"), target)
    _strings(item.get("output"), target)


def _strings(value: Any, into: list[str]) -> None:
    """Text from a string, a list of strings, or a list of content parts (`{"type": "text", "text": …}`)."""
    if isinstance(value, str):
        if value:
            into.append(value)
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, str) and part:
                into.append(part)
            elif isinstance(part, dict) and part.get("type") in _TEXT_PART_TYPES and isinstance(part.get("text"), str):
                into.append(part["text"])
