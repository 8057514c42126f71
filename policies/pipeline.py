"""Running an effective policy document for one request: inbound → backend → outbound, and on-error.

"If an error occurs … any remaining steps in the inbound, backend, or outbound sections are skipped.
Execution jumps to the statements in the on-error section" (APIM). The error response a refusal prepared
(429, 403, 401 …) answers unless on-error returns its own; on-error's `set-header` edits it.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from policies.context import Body, Context, Headers, LastError, Response
from policies.errors import PolicyError, PolicyResponse, ReturnResponse, ServiceError
from policies.expressions import ExpressionRuntimeError
from policies.statement import Statement, run_all

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipeline:
    inbound: tuple[Statement, ...]
    backend: tuple[Statement, ...]
    outbound: tuple[Statement, ...]
    on_error: tuple[Statement, ...]

    def to_xml(self) -> str:
        """The effective document, as XML (statements as they were written, in merged order)."""
        lines = ["<policies>"]
        for name, statements in (("inbound", self.inbound), ("backend", self.backend), ("outbound", self.outbound), ("on-error", self.on_error)):
            lines.append(f"  <{name}>")
            for statement in statements:
                if statement.node is not None:
                    lines.append("    " + ET.tostring(statement.node, encoding="unicode").strip())
            lines.append(f"  </{name}>")
        lines.append("</policies>")
        return "\n".join(lines)

    async def execute(self, context: Context) -> PolicyResponse | None:
        """Run the sections. Returns the response policies made, or None to relay the backend's response."""
        section = "inbound"
        try:
            await run_all(self.inbound, context)
            section = "backend"
            await run_all(self.backend, context)
            if context.Response is None:
                raise PolicyError(
                    "backend",
                    "NoForwardRequest",
                    "The backend section did not forward the request.",
                    PolicyResponse.error(500, "The gateway's policy did not forward the request (no <forward-request />)."),
                )
            for deferred in context.after_backend:
                await deferred()
            section = "outbound"
            await run_all(self.outbound, context)
            return None
        except ReturnResponse as answer:
            return answer.response
        except PolicyError as error:
            context.LastError = LastError(error.source, error.reason, error.message, section)
            return await self._on_error(context, error.response)
        except ExpressionRuntimeError as error:
            context.LastError = LastError("expression", "ExpressionValueEvaluationFailure", str(error), section)
            message = "Expression evaluation failed."
            return await self._on_error(context, PolicyResponse.error(500, message, code="ExpressionValueEvaluationFailure"))
        except ServiceError as error:  # from work deferred until after the backend (settling counters, …)
            context.LastError = LastError("gateway", error.code, error.message, section)
            return await self._on_error(context, error.response())

    async def _on_error(self, context: Context, response: PolicyResponse) -> PolicyResponse:
        # The error response becomes context.Response, so on-error can read and edit it (set-header, set-status).
        context.Response = Response(response.status, response.reason, Headers(response.headers), Body(response.body))
        try:
            await run_all(self.on_error, context)
        except ReturnResponse as answer:
            return answer.response
        except (PolicyError, ExpressionRuntimeError, ServiceError):
            logger.warning("A statement in <on-error> failed; answering with the original error.", exc_info=True)
            return response
        final = context.Response
        return PolicyResponse(final.StatusCode, final.Body.content, final.Headers.items(), final.StatusReason)
