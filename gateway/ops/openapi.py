"""`GET /openapi/{api-version}.json`: the Azure OpenAI OpenAPI document, as this gateway serves it.

What APIM's import does, done at request time so clients and tools (SDK generators, Power Platform, another
APIM) can import the gateway itself:

* `servers` is the gateway's own public URL plus `/openai`: the `GATEWAY_PUBLIC_URL` setting when set, else
  what the request says (`X-Forwarded-Proto`/`-Host` from trusted proxies only, `GATEWAY_TRUSTED_PROXY_HOPS`,
  then the Host it arrived on);
* the security schemes are the subscription key (`api-key` and `Ocp-Apim-Subscription-Key` headers, the
  `subscription-key` query parameter) instead of Entra ID and the resource key;
* only operations `gateway/routes.py` routes are kept, so the document never promises a path the gateway
  answers with 404;
* upstream errata are fixed: a `required` name that the schema never defines (the 2024 documents require
  `function_call_id` on function messages) is dropped, so strict validators accept the document.

The route is public, like the documents Microsoft publishes: it carries no secret and no deployment names.
The api-versions offered are the documents under `specs/` (one per version; see specs/README.md).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import error_response
from gateway.handling import forwarded
from gateway.handling import operations as routes

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

SPEC_DIR = Path(__file__).resolve().parents[2] / "specs"
_SPEC_FILE = re.compile(r"^azure-openai-inference-(\d{4}-\d{2}-\d{2}(?:-preview)?)\.json$")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "api-key", "description": "A gateway subscription key."},
    "subscriptionKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Ocp-Apim-Subscription-Key",
        "description": "A gateway subscription key, APIM's header.",
    },
    "subscriptionKeyQuery": {"type": "apiKey", "in": "query", "name": "subscription-key", "description": "A gateway subscription key, in the query."},
}


@functools.cache
def available_versions() -> tuple[str, ...]:
    found = (_SPEC_FILE.match(path.name) for path in SPEC_DIR.glob("azure-openai-inference-*.json"))
    return tuple(sorted(match.group(1) for match in found if match))


def document(api_version: str, public_url: str) -> dict[str, Any]:
    """The document for `api_version` with servers pointing at `public_url` (no trailing slash)."""
    prepared = _prepared(api_version)
    return {**prepared, "servers": [{"url": public_url + "/openai", "description": "This gateway (Azure OpenAI API)"}]}


@functools.cache
def _prepared(api_version: str) -> dict[str, Any]:
    spec: dict[str, Any] = orjson.loads((SPEC_DIR / f"azure-openai-inference-{api_version}.json").read_bytes())
    spec["paths"] = _routable_paths(spec["paths"])
    spec["security"] = [{name: []} for name in SECURITY_SCHEMES]
    spec["components"] = {**spec.get("components", {}), "securitySchemes": copy.deepcopy(SECURITY_SCHEMES)}
    for item in spec["paths"].values():
        for method in _METHODS:
            item.get(method, {}).pop("security", None)  # the gateway's schemes apply to every operation
    info = spec["info"]
    info["description"] = f"{info.get('description', '')}\n\nServed by the GenAI gateway: authenticate with a gateway subscription key.".strip()
    _drop_undefined_required(spec, spec)
    return spec


def _routable_paths(paths: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for path, item in paths.items():
        concrete = re.sub(r"\{[^}]+\}", "x", path).lstrip("/")
        methods = {m: op for m, op in item.items() if m not in _METHODS or routes.match(m.upper(), concrete) is not None}
        if any(m in methods for m in _METHODS):
            kept[path] = methods
    return kept


def _drop_undefined_required(node: Any, root: dict[str, Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _drop_undefined_required(item, root)
        return
    if not isinstance(node, dict):
        return
    required = node.get("required")
    if isinstance(required, list) and ("properties" in node or "allOf" in node):
        defined = _defined_properties(node, root)
        kept = [name for name in required if name in defined]
        if kept:
            node["required"] = kept
        else:
            del node["required"]  # OpenAPI 3.0 wants at least one name in the list
    for value in node.values():
        _drop_undefined_required(value, root)


def _defined_properties(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= _defined_properties(_resolve(part, root), root)
    return names


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if not isinstance(reference, str) or not reference.startswith("#/"):
        return schema
    target: Any = root
    for part in reference[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return _resolve(target, root)


def public_base_url(request: Request, configured: str | None, hops: int) -> str:
    """Where clients reach this gateway: the setting, else what the trusted proxies forwarded, else the request's.

    A forwarded host from anyone else would let one request write its own server URL into a document a CDN caches.
    """
    if configured:
        return configured
    scheme, host = forwarded.request_origin(request, hops)
    return f"{scheme}://{host}"


async def document_response(gateway: Gateway, request: Request) -> Response:
    name = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    version = name.removesuffix(".json")
    if version not in available_versions() or not name.endswith(".json"):
        offered = ", ".join(f"/openapi/{v}.json" for v in available_versions())
        return error_response(404, "404", f"No OpenAPI document at {request.url.path}; this gateway serves {offered}.")
    body = orjson.dumps(document(version, public_base_url(request, gateway.settings.public_url, gateway.settings.trusted_proxy_hops)))
    return Response(body, media_type="application/json", headers={"vary": "Host, X-Forwarded-Host, X-Forwarded-Proto"})
