"""Faults to inject, chosen per request by header or armed with POST /sim/faults, and the errors they answer.

A fault fails a request before it is answered (an error status, a hang, or both); a stream fault breaks a
stream after some tokens (streams.py carries it out). Both are validated, so a typo fails loudly instead of
injecting nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from http.client import responses as http_reasons

from starlette.datastructures import Headers

from gateway.dev.simulator.errors import ACCESS_DENIED, ApiError, bad_request
from gateway.dev.simulator.parsing import float_header

_RATE_LIMITED = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded "
    "token rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go "
    "here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
)
_FAULT_BODIES = {
    401: ("401", ACCESS_DENIED),
    404: ("404", "Resource not found"),
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
}


@dataclass(frozen=True)
class Fault:
    """A failure to inject: optionally hang, then optionally answer with an error status."""

    status: int | None
    retry_after: float | None = None
    hang_s: float = 0.0


@dataclass(frozen=True)
class StreamFault:
    """A stream that goes wrong after `after` tokens: `drop`, `end` or `stall` (see the package docstring)."""

    kind: str
    after: int
    stall_s: float = 0.0


def _fault_status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise bad_request(f"Fault status must be an HTTP error code (400-599), got {value!r}.")
    return value


def header_fault(headers: Headers) -> Fault | None:
    kind = headers.get("x-sim-fault")
    if kind is None:
        return None
    if kind.strip().lower() == "hang":
        return Fault(None, hang_s=float_header(headers, "x-sim-hang-s", 30.0))
    try:
        status = int(kind)
    except ValueError:
        raise bad_request(f"Invalid x-sim-fault header: {kind!r}") from None
    retry = float_header(headers, "x-sim-retry-after", 0.0) if "x-sim-retry-after" in headers else None
    return Fault(_fault_status(status), retry)


def stream_fault(headers: Headers) -> StreamFault | None:
    raw = headers.get("x-sim-stream-fault")
    if raw is None:
        return None
    kind, _, after = raw.strip().lower().partition(":")
    if kind not in ("drop", "end", "stall") or not after.isdigit():
        raise bad_request(f"Invalid x-sim-stream-fault header: {raw!r} (expected drop:N, end:N or stall:N).")
    return StreamFault(kind, int(after), float_header(headers, "x-sim-hang-s", 30.0) if kind == "stall" else 0.0)


def fault_from_spec(spec: object) -> tuple[Fault, int]:
    """Validate a POST /sim/faults body so a typo fails loudly instead of injecting nothing."""
    if not isinstance(spec, dict):
        raise bad_request("Fault spec must be a JSON object.")
    status = None if spec.get("status") is None else _fault_status(spec["status"])
    retry, hang_s = (spec.get(k) for k in ("retry_after", "hang_s"))
    for value in (retry, hang_s):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise bad_request("retry_after and hang_s must be non-negative numbers.")
    if status is None and not hang_s:
        raise bad_request("A fault needs a 'status' or a positive 'hang_s'.")
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not (count == -1 or count >= 1):
        raise bad_request("count must be a positive integer, or -1 for until cleared.")
    return Fault(status, None if retry is None else float(retry), float(hang_s or 0.0)), count


def fault_error(status: int, retry_after: float | None) -> ApiError:
    """Shape the injected failure the way Azure would, with retry hints clients honour."""
    retry = 1.0 if retry_after is None and status == 429 else retry_after
    headers = None
    if retry is not None:
        headers = {"Retry-After": str(math.ceil(retry)), "retry-after-ms": str(round(retry * 1000))}
    if status == 429:
        return ApiError(429, "429", _RATE_LIMITED.format(seconds=math.ceil(retry or 0)), headers)
    code, message = _FAULT_BODIES.get(status, (str(status), http_reasons.get(status, "Simulated fault")))
    return ApiError(status, code, message, headers)
