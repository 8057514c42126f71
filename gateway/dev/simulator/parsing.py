"""Reading what a client sent: anything malformed answers 400 in Azure's words, as a real backend does."""

from __future__ import annotations

import math
from collections.abc import Mapping
from email import policy
from email.parser import BytesParser
from typing import Any

import orjson
from starlette.datastructures import Headers

from gateway.dev.simulator.errors import bad_request


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"Could not parse the JSON body of your request: {error}") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload


def multipart(body: bytes, content_type: str) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Parse form data with the stdlib, so the simulator needs no python-multipart."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise bad_request("Expected a multipart/form-data body.")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    upload = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "file":
            upload = (part.get_filename() or "file", data)
        elif isinstance(name, str):
            fields[name] = data.decode("utf-8", "replace")
    return fields, upload


def check_fields(payload: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = [name for name in payload if name not in known]
    if unknown:
        raise bad_request(f"Unrecognized request argument supplied: {', '.join(unknown)}")


def messages(value: object, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise bad_request(f"'{field}' is a required property and must be a non-empty array")
    return [m for m in value if isinstance(m, dict)]


def input_texts(value: object, field: str) -> list[str]:
    """Accept the OpenAI input shapes: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise bad_request(f"'{field}' must be a string, an array of strings or an array of token arrays")


def int_field(payload: Mapping[str, Any], name: str) -> int | None:
    """Read an optional positive integer; None when absent so callers can chain defaults with `or`."""
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise bad_request(f"Invalid value for '{name}': expected a positive integer.")
    return value


def float_header(headers: Headers, name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"Invalid {name} header: {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise bad_request(f"Invalid {name} header: {raw!r}")
    return value


def flag(headers: Headers, name: str, default: bool) -> bool:
    raw = headers.get(name)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes")
