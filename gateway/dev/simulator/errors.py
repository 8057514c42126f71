"""Azure OpenAI's error shape, so the gateway and its clients meet the same errors as from a real backend."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)


class ApiError(Exception):
    """An Azure-shaped error; raised deep in a handler so validation stays one line."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> Response:
        return json_response({"error": {"code": self.code, "message": self.message}}, self.status, self.headers)


def json_response(payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in Azure's error shape, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    message = "Resource not found" if exc.status_code == 404 else exc.detail
    return json_response({"error": {"code": str(exc.status_code), "message": message}}, exc.status_code, exc.headers)
