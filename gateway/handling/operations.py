"""The Azure OpenAI operations the gateway proxies, and matching a request path to one of them.

Operation ids are those of the Azure OpenAI OpenAPI documents (`ChatCompletions_Create`, …) for the versioned
`/openai/deployments/{deployment-id}/…` routes, and the OpenAI ids (`createChatCompletion`, …) for `/openai/v1/…`.
They are what policy documents scope to, so they are part of the public surface.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import quote

from gateway.handling.names import valid_path_id
from policies.document import Scope

#: The API ids subscriptions and products are scoped to.
VERSIONED_API = "openai"
V1_API = "openai-v1"


@dataclass(frozen=True)
class Operation:
    id: str
    api: str
    method: str
    #: Path template below `/openai/`, as in the OpenAPI documents.
    template: str
    #: True when the deployment comes from the JSON body's `model` (v1 routes) instead of the path.
    model_in_body: bool = False
    #: True for operations that carry token usage (chat, completions, embeddings, responses).
    metered: bool = False

    @property
    def versioned(self) -> bool:
        return self.api == VERSIONED_API


@dataclass(frozen=True)
class RouteMatch:
    operation: Operation
    #: `deployment-id` for versioned routes, plus `response-id`/`model-id` where the template has them.
    params: dict[str, str]

    @property
    def path(self) -> str:
        """The request path rebuilt from the template and the checked ids: what the backend is sent.

        Never the client's own path, which a URL parser could normalise into another (`responses/%2E%2E`).
        """
        path = self.operation.template
        for name, value in self.params.items():
            path = path.replace("{" + name + "}", quote(value, safe=":@"))
        return "/openai/" + path


def _versioned(op_id: str, suffix: str, metered: bool = False) -> Operation:
    return Operation(op_id, VERSIONED_API, "POST", "deployments/{deployment-id}/" + suffix, metered=metered)


VERSIONED_OPERATIONS: dict[str, Operation] = {
    op.template.split("/", 2)[2]: op
    for op in (
        _versioned("ChatCompletions_Create", "chat/completions", metered=True),
        _versioned("Completions_Create", "completions", metered=True),
        _versioned("embeddings_create", "embeddings", metered=True),
        _versioned("Transcriptions_Create", "audio/transcriptions"),
        _versioned("Translations_Create", "audio/translations"),
        _versioned("Speech_Create", "audio/speech"),
        _versioned("ImageGenerations_Create", "images/generations"),
    )
}

V1_OPERATIONS: dict[tuple[str, str], Operation] = {
    (op.method, op.template): op
    for op in (
        Operation("createChatCompletion", V1_API, "POST", "v1/chat/completions", model_in_body=True, metered=True),
        Operation("createCompletion", V1_API, "POST", "v1/completions", model_in_body=True, metered=True),
        Operation("createEmbedding", V1_API, "POST", "v1/embeddings", model_in_body=True, metered=True),
        Operation("createResponse", V1_API, "POST", "v1/responses", model_in_body=True, metered=True),
        Operation("getResponse", V1_API, "GET", "v1/responses/{response-id}"),
        Operation("deleteResponse", V1_API, "DELETE", "v1/responses/{response-id}"),
        Operation("listModels", V1_API, "GET", "v1/models"),
        Operation("retrieveModel", V1_API, "GET", "v1/models/{model-id}"),
    )
}

ALL_OPERATIONS: tuple[Operation, ...] = (*VERSIONED_OPERATIONS.values(), *V1_OPERATIONS.values())


def match(method: str, path: str) -> RouteMatch | None:
    """Match `path` (below `/openai/`, no leading slash, decoded) and `method` to an operation, or None.

    Ids out of their naming rule (`gateway/handling/names.py`), dot segments among them, match nothing.
    """
    if path.startswith("deployments/"):
        parts = path.split("/", 2)
        if len(parts) == 3 and valid_path_id("deployment-id", parts[1]):
            op = VERSIONED_OPERATIONS.get(parts[2])
            if op is not None and op.method == method:
                return RouteMatch(op, {"deployment-id": parts[1]})
        return None
    op = V1_OPERATIONS.get((method, path))
    if op is not None:
        return RouteMatch(op, {})
    head, _, tail = path.rpartition("/")
    for name in ("response-id", "model-id"):  # v1/responses/{response-id}, v1/models/{model-id}
        op = V1_OPERATIONS.get((method, head + "/{" + name + "}"))
        if op is not None:
            return RouteMatch(op, {name: tail}) if valid_path_id(name, tail) else None
    return None


def check_policy_scope(scope: Scope, products: Collection[str] | None) -> None:
    """Refuse a policy scope no request can match: an unknown API, operation id or product (None: products unknown).

    The message suggests the closest known name, so `api:opnai` points to `api:openai`.
    """
    known = {
        "api": (VERSIONED_API, V1_API),
        "operation": tuple(op.id for op in ALL_OPERATIONS),
        "product": tuple(products) if products is not None else None,
    }.get(scope.kind)
    if known is None or scope.name in known:
        return
    close = difflib.get_close_matches(scope.name, known, n=1, cutoff=0.6)
    hint = f" Did you mean {scope.kind}:{close[0]}?" if close else ""
    source = " (from GATEWAY_PRODUCTS)" if scope.kind == "product" else ""
    listed = ", ".join(known) or "none"
    kind = "API" if scope.kind == "api" else scope.kind
    raise ValueError(f"Unknown {kind} {scope.name[:100]!r} in scope {str(scope)[:120]!r}: no request can match it.{hint} Known{source}: {listed}.")
