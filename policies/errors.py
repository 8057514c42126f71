"""What goes wrong with policies, at load time and at run time.

PolicyLoadError      a document cannot be loaded; names the element and the line. Nothing of it applies.
PolicyError          a statement refused or failed the request at run time; `on-error` runs with
                     `context.LastError` set, then `response` answers unless on-error answered itself.
ServiceError         what a statement calls failed (storage, the identity endpoint, the tokenizer); the
                     gateway's own error tree derives from it. The pipeline turns it into a PolicyError
                     naming the statement, so `on-error` runs for it too.
ReturnResponse       not an error: `return-response` ends the pipeline with its response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson


class PolicyLoadError(ValueError):
    """A policy document that cannot be loaded, with where the problem is."""

    def __init__(self, message: str, element: str | None = None, line: int | None = None) -> None:
        where = ""
        if element is not None:
            where = f"<{element}>" + (f" at line {line}" if line is not None else "") + ": "
        super().__init__(where + message)
        self.element = element
        self.line = line


@dataclass
class PolicyResponse:
    """A response a policy produces itself (return-response, or a refusal such as 429)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""

    @classmethod
    def error(cls, status: int, message: str, headers: Mapping[str, str] | None = None, code: str | None = None) -> PolicyResponse:
        """An error in the OpenAI shape: `{"error": {"code": "<status>", "message": ...}}`."""
        body = error_body(code or str(status), message)
        return cls(status, body, [("content-type", "application/json"), *(headers or {}).items()])


def error_body(code: str, message: str) -> bytes:
    """The OpenAI error shape every gateway-made error uses: `{"error": {"code": ..., "message": ...}}`."""
    return orjson.dumps({"error": {"code": code, "message": message}})


class ServiceError(Exception):
    """A failure of something a statement depends on, with the HTTP answer it deserves."""

    status = 500
    code = "InternalServerError"
    message = "The gateway had an error while processing your request."

    def __init__(self, message: str | None = None, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.headers = dict(headers or {})

    def response(self) -> PolicyResponse:
        return PolicyResponse.error(self.status, self.message, self.headers, code=self.code)


class PolicyError(Exception):
    """A statement refused or failed the request; `on-error` sees it as `context.LastError`."""

    def __init__(self, source: str, reason: str, message: str, response: PolicyResponse) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason
        self.message = message
        self.response = response


class ReturnResponse(Exception):
    """Raised by `return-response` to end the pipeline and answer with `response`."""

    def __init__(self, response: PolicyResponse) -> None:
        super().__init__(response.status)
        self.response = response
