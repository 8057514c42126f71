"""Errors the gateway itself answers with, in the OpenAI error shape `{"error": {"code", "message"}}`.

The tree::

    GatewayError
    ├── ResourceNotFound          404  unknown route or operation, or a versioned route without api-version
    ├── DeploymentNotFound        404  no backend serves the deployment
    ├── ResponseNotFound          404  a Responses API id this subscription did not create (or no one did)
    ├── BadRequest                400  a body the gateway must read is not what the operation expects
    ├── PayloadTooLarge           413  request body above the configured limit
    ├── SubscriptionKeyError      401  missing, invalid, ambiguous (sent twice), inactive or out-of-scope key
    ├── BackendError              502/504  the backend could not be reached or did not answer in time
    │   ├── BackendCredentialError  502  no token for the backend (managed identity endpoint failed)
    │   └── ResponseTooLarge      502  a policy's own request (send-request) got an answer above its bound
    ├── OutboundRequestInvalid    500  a policy's own request has a header that cannot be sent
    ├── BackendNotFound           500  a policy named (by a computed id) a backend that is not configured
    ├── BackendUnavailable        503  circuit breaker open (CircuitBreakerOpen), or every pool member
    │                                  tripped or throttled (PoolIsInactive); with Retry-After
    ├── StorageError              Table Storage failed
    │   ├── StorageUnavailable    503  it cannot be reached, timed out or failed; with Retry-After
    │   └── EntityRejected        500  it refused one row as invalid (too large, bad key): permanent
    ├── PoliciesUnavailable       503  this instance has not loaded its policies yet (storage down at start)
    └── ClientClosedRequest       499  the client left before its request was read (nobody reads the answer)

    Conflict                      not an answer: an ETag-checked write lost a race (stores retry or give up)

`GatewayError` derives from `policies.errors.ServiceError`, so a statement whose service raises one fails as a
policy error: `<on-error>` runs with `context.LastError.Reason` = the code, and the status answers.

Messages follow Azure OpenAI and APIM where they have one, and never name a backend URL or a secret.
Errors the backend returns are not GatewayErrors: they pass through untouched. `answer_for` is what every host
route answers for an exception it did not expect, so no error ever reaches a client as plain text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from policies.errors import ServiceError, error_body

_logger = logging.getLogger(__name__)


class GatewayError(ServiceError):
    """A request the gateway refuses or cannot serve."""

    def to_response(self) -> Response:
        return error_response(self.status, self.code, self.message, self.headers)


class ResourceNotFound(GatewayError):
    """No Azure OpenAI operation at this path and method, or a versioned route without api-version."""

    status = 404
    code = "404"
    message = "Resource not found"


class DeploymentNotFound(GatewayError):
    """No configured backend serves the requested deployment."""

    status = 404
    code = "DeploymentNotFound"
    message = (
        "The API deployment for this resource does not exist. If you created the deployment within the last "
        "5 minutes, please wait a moment and try again."
    )


class ResponseNotFound(GatewayError):
    """A response id (in the path, or as `previous_response_id`) that the calling subscription did not create:
    answered as the backend answers an id that does not exist, so nobody learns that someone else's does."""

    status = 404
    code = "404"

    def __init__(self, response_id: str | None, *, previous: bool = False) -> None:
        what = "Previous response" if previous else "Response"
        super().__init__(f"{what} with id '{response_id}' not found." if response_id else f"{what} not found.")


class BadRequest(GatewayError):
    """The request body cannot be used for this operation."""

    status = 400
    code = "BadRequest"
    message = "The request body is not valid for this operation."


class PayloadTooLarge(GatewayError):
    """The request body is larger than the gateway accepts."""

    status = 413
    code = "PayloadTooLarge"
    message = "The request body is too large."


class SubscriptionKeyError(GatewayError):
    """Inbound authentication failed; the message is APIM's, so clients migrating from APIM see the same text."""

    status = 401
    code = "401"


class MissingSubscriptionKey(SubscriptionKeyError):
    """No subscription key in any accepted header or query parameter."""

    message = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."


class InvalidSubscriptionKey(SubscriptionKeyError):
    """The key matches no active subscription whose scope includes this API."""

    message = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."


class AmbiguousSubscriptionKey(SubscriptionKeyError):
    """The key was sent more than once (a repeated header or parameter, or two with different values)."""

    message = "Access denied due to an ambiguous subscription key. Send the subscription key once, in one header or query parameter."


class BackendError(GatewayError):
    """The backend could not be reached (502) or did not answer in time (504)."""

    status = 502
    code = "BackendConnectionFailure"
    message = "The backend service could not be reached."


class BackendTimeout(BackendError):
    """The backend accepted the connection but sent nothing within the read timeout."""

    status = 504
    code = "BackendTimeout"
    message = "The backend service did not respond in time."


class BackendCredentialError(BackendError):
    """No access token for the backend: a backend failure (health, retry and failover treat it as one)."""

    code = "BackendCredentialFailure"
    message = "The gateway could not get a credential for the backend service."


class ResponseTooLarge(BackendError):
    """The answer to a policy's own request (`send-request`, Content Safety) is larger than the gateway reads."""

    code = "ResponseTooLarge"
    message = "The answer to the policy's request is too large."


class OutboundRequestInvalid(GatewayError):
    """A policy built a request that cannot be sent (a header name or value HTTP does not allow)."""

    code = "InvalidOutboundRequest"
    message = "The policy built a request that cannot be sent."


class BackendNotFound(GatewayError):
    """A computed backend id names no configured backend (a constant one fails when the document is loaded)."""

    code = "BackendNotFound"
    message = "The policy names a backend that is not configured."


class BackendUnavailable(GatewayError):
    """The breaker of the backend named directly is open; `retry_after` is when it resets (APIM answers 503)."""

    status = 503
    code = "CircuitBreakerOpen"
    what = "The backend is"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"{self.what} temporarily unavailable. Try again in {seconds} seconds.", headers={"Retry-After": str(seconds)})


class PoolUnavailable(BackendUnavailable):
    """Every pool member serving the deployment is tripped or asked us to wait; names no member or URL."""

    code = "PoolIsInactive"
    what = "The backend pool is"


class StorageError(GatewayError):
    """Table Storage failed; the detail (which table, which status) is for logs, clients get the class's text."""

    def to_response(self) -> Response:
        return error_response(self.status, self.code, type(self).message, self.headers)


class StorageUnavailable(StorageError):
    """Table Storage cannot be reached, timed out or failed; the client may retry after `retry_after` seconds."""

    status = 503
    code = "StorageUnavailable"
    message = "The gateway's state store is temporarily unavailable. Try again in a few seconds."

    def __init__(self, message: str | None = None, *, retry_after: int = 2) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class EntityRejected(StorageError):
    """Storage refused one row as invalid; retrying the same row can never succeed. `index`: its place in a batch."""

    def __init__(self, message: str | None = None, *, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


class PoliciesUnavailable(GatewayError):
    """The instance could not load its policies yet (storage unreachable at start); it keeps trying."""

    status = 503
    code = "PoliciesUnavailable"
    message = "The gateway is starting and cannot load its policies yet. Try again in a few seconds."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


class ClientClosedRequest(GatewayError):
    """The client closed the connection while its request was being read (nginx's 499): not the gateway's error."""

    status = 499
    code = "ClientClosedRequest"
    message = "The client closed the connection before the request was read."


class Conflict(Exception):
    """An ETag-checked write lost a race, or an insert found the row already there."""


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The one OpenAI-shaped error response (`policies.errors.error_body`) with a status and headers."""
    return Response(error_body(code, message), status_code=status, headers=dict(headers or {}), media_type="application/json")


def answer_for(exc: Exception, where: str) -> Response:
    """The OpenAI-shaped answer to an exception a route did not handle: its own for a `GatewayError`, a quiet 499
    when the client left mid-request, else a logged 500. `where` (method and path) goes into the log only."""
    if isinstance(exc, ClientDisconnect):
        _logger.debug("The client left before its request was read (%s).", where)
        return ClientClosedRequest().to_response()
    if isinstance(exc, GatewayError):
        return exc.to_response()
    _logger.error("Unhandled error on %s", where, exc_info=exc)
    return GatewayError().to_response()
