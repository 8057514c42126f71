"""`python -m gateway try`: one chat completion through a running gateway, shown the way APIM's test console does.

It prints the answer (as it streams, with `--stream`), the usage, the headers that explain limits and caching
(`x-ratelimit-*`, `x-remaining-*`, `retry-after`, `x-semantic-cache*`, …) and the `Server-Timing` breakdown,
so an operator can check a deployment from a terminal. It talks plain HTTP with httpx (a cold path: no SDK
retries hiding a 429) and turns every failure into what to do next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
import orjson

from gateway.handling.usage import stream_usage_supported

if TYPE_CHECKING:
    import httpx

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
KEY_SETTING = "GATEWAY_TRY_KEY"
#: Response headers worth showing: limits, quotas, retries, caching, request ids.
_SHOWN = ("remaining", "ratelimit", "retry-after", "x-semantic-cache", "x-cache", "token", "quota", "consumed", "region", "request-id")


@dataclass(frozen=True)
class Attempt:
    gateway: str
    key: str
    deployment: str
    prompt: str
    api_version: str
    stream: bool = False
    max_tokens: int | None = None
    timeout: float = 300.0

    @property
    def url(self) -> str:
        return f"{self.gateway.rstrip('/')}/openai/deployments/{self.deployment}/chat/completions"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": self.prompt}]}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.stream:
            body["stream"] = True
            if stream_usage_supported(self.api_version):
                body["stream_options"] = {"include_usage": True}
        return body


@dataclass
class Outcome:
    status: int
    headers: Mapping[str, str]
    seconds: float
    first_token_seconds: float | None = None
    answer: str = ""
    usage: dict[str, Any] | None = None
    error: dict[str, Any] = field(default_factory=dict)


def send(attempt: Attempt, on_text: Callable[[str], None]) -> Outcome:
    """Send the request; `on_text` gets the answer as it arrives. Raises click.ClickException when unreachable."""
    import httpx  # the CLI's other commands start faster without it

    headers = {"api-key": attempt.key}
    timeout = httpx.Timeout(attempt.timeout, connect=5.0)
    started = time.perf_counter()
    try:
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream(
                "POST", attempt.url, params={"api-version": attempt.api_version}, headers=headers, content=orjson.dumps(attempt.body())
            ) as response,
        ):
            outcome = Outcome(response.status_code, response.headers, 0.0)
            if response.status_code == 200 and attempt.stream:
                _read_stream(response, outcome, started, on_text)
            else:
                _read_body(response, outcome, on_text)
    except httpx.ConnectError:
        raise click.ClickException(
            f"Cannot connect to {attempt.gateway}: is the gateway running there? Locally, start it with `python -m gateway run` "
            "(or scripts/run); otherwise pass its URL with --gateway."
        ) from None
    except httpx.TimeoutException:
        raise click.ClickException(
            f"No answer from {attempt.gateway} within {attempt.timeout:g} s. Check `python -m gateway backends status` "
            "for a slow or tripped backend, or raise --timeout."
        ) from None
    outcome.seconds = time.perf_counter() - started
    return outcome


def _read_body(response: httpx.Response, outcome: Outcome, on_text: Callable[[str], None]) -> None:
    raw = response.read()
    try:
        payload = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        payload = {"error": {"message": raw.decode("utf-8", "replace")[:500]}}
    if response.status_code != 200:
        error = payload.get("error") if isinstance(payload, dict) else None
        outcome.error = error if isinstance(error, dict) else {"message": str(payload)[:500]}
        return
    choices = payload.get("choices") or [{}]
    outcome.answer = str((choices[0].get("message") or {}).get("content") or "")
    outcome.usage = payload.get("usage")
    on_text(outcome.answer)


def _read_stream(response: httpx.Response, outcome: Outcome, started: float, on_text: Callable[[str], None]) -> None:
    for event in _events(response.iter_lines()):
        for choice in event.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                if outcome.first_token_seconds is None:
                    outcome.first_token_seconds = time.perf_counter() - started
                outcome.answer += text
                on_text(text)
        if event.get("usage"):
            outcome.usage = event["usage"]


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            yield orjson.loads(line[5:].strip())


def shown_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    return sorted((name, value) for name, value in headers.items() if any(part in name for part in _SHOWN) and name != "server-timing")


def server_timing(header: str) -> list[tuple[str, float]]:
    """`auth;dur=0.1, upstream;dur=3.2` -> [("auth", 0.1), ("upstream", 3.2)] (entries without dur are skipped)."""
    entries = []
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    entries.append((name, float(value)))
                except ValueError:
                    pass
    return entries


def report(outcome: Outcome) -> list[str]:
    """Everything but the answer, as lines: status, usage, the interesting headers, the Server-Timing breakdown."""
    first = f" (first token after {outcome.first_token_seconds * 1000:.1f} ms)" if outcome.first_token_seconds is not None else ""
    lines = [f"HTTP {outcome.status} in {outcome.seconds * 1000:.1f} ms{first}"]
    if outcome.usage:
        usage = outcome.usage
        details = usage.get("prompt_tokens_details") or {}
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        extra = ", ".join(f"{name} {value}" for name, value in (("cached", details.get("cached_tokens")), ("reasoning", reasoning)) if value)
        lines.append(
            f"Usage: prompt {usage.get('prompt_tokens', 0)}, completion {usage.get('completion_tokens', 0)}, "
            f"total {usage.get('total_tokens', 0)}" + (f" ({extra})" if extra else "")
        )
    elif outcome.status == 200:
        lines.append("Usage: not reported (an api-version before 2024-09-01 does not report usage on streams).")
    shown = shown_headers(outcome.headers)
    if shown:
        lines.append("Headers:")
        lines.extend(f"  {name}: {value}" for name, value in shown)
    timing = server_timing(outcome.headers.get("server-timing", ""))
    if timing:
        total = max((d for name, d in timing if name == "total"), default=sum(d for _, d in timing)) or 1.0
        width = max(len(name) for name, _ in timing)
        lines.append("Server-Timing:" + (" (until the response headers)" if outcome.first_token_seconds is not None else ""))
        lines.extend(f"  {name.ljust(width)} {duration:9.2f} ms  {'█' * round(20 * duration / total)}" for name, duration in timing)
    return lines


def advice(attempt: Attempt, outcome: Outcome) -> str:
    """What the operator should do about a refused or failed request."""
    status, code = outcome.status, str(outcome.error.get("code", ""))
    message = str(outcome.error.get("message", "")).strip()
    retry = outcome.headers.get("retry-after")
    wait = f" Retry after {retry} s." if retry else ""
    if status == 401:
        return (
            f"{message}\nCheck the key (--key or {KEY_SETTING}) and its subscription: `python -m gateway subscriptions list` "
            "shows each one's state and scope; `subscriptions resume ID` reactivates a suspended one, `subscriptions rotate ID` "
            "issues a new key. A subscription scoped to api:openai-v1, or to a product without the `openai` API, cannot call "
            "deployment routes."
        )
    if status == 403:
        return f"{message}\nA policy refused the request (a token quota or an IP filter).{wait} `python -m gateway policies effective --operation ChatCompletions_Create` shows what applies."
    if status == 404 and code == "DeploymentNotFound":
        return f"No backend serves deployment {attempt.deployment!r}. Check the name, or the `deployments` lists in GATEWAY_BACKENDS."
    if status == 404:
        return f"{message or 'Not found'}: check --gateway ({attempt.gateway}) and --api-version ({attempt.api_version})."
    if status == 429:
        source = "the backend" if outcome.headers.get("x-ratelimit-remaining-tokens") is not None else "a gateway policy or the backend"
        return f"{message}\nRate limited by {source}.{wait} `python -m gateway usage --since 1h` shows who is spending tokens."
    if status in (502, 503, 504):
        return f"{message}{wait}\nThe backend is unreachable, slow or tripped: `python -m gateway backends status` shows each backend's state."
    return message or f"HTTP {status}"
