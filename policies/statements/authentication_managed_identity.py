"""`<authentication-managed-identity resource="https://cognitiveservices.azure.com" />`: call the backend
with the Function App's managed identity (`Authorization: Bearer <token>`); the token is cached and
refreshed by the gateway, one credential per identity per process."""

from __future__ import annotations

import logging

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Attr, Loader, Statement, register
from policies.xml import PolicyElement

logger = logging.getLogger(__name__)


@register
class AuthenticationManagedIdentity(Statement):
    element = "authentication-managed-identity"
    sections = frozenset({"inbound"})
    attributes = (
        Attr("resource", required=True),
        Attr("client-id", expressions=False),
        Attr("output-token-variable-name", expressions=False),
        Attr("ignore-error", expressions=False, kind=bool, default=False),
    )

    def __init__(self, resource: Value, client_id: str | None, variable: str | None, ignore_error: bool) -> None:
        self.resource = resource
        self.client_id = client_id
        self.variable = variable
        self.ignore_error = ignore_error

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> AuthenticationManagedIdentity:
        loader.children(element, ())
        v = loader.attributes(element, cls.attributes)
        constant = lambda name: v[name].constant if v[name] is not None else None  # noqa: E731
        return cls(v["resource"], constant("client-id"), constant("output-token-variable-name"), constant("ignore-error"))  # type: ignore[arg-type]

    async def run(self, context: Context) -> None:
        resource = str(self.resource.evaluate(context))
        try:
            token = await context.services.managed_identity_token(resource, self.client_id)
        except Exception as exc:
            if self.ignore_error:
                logger.warning("Managed identity token for %s failed; ignore-error is set.", resource, exc_info=True)
                return
            raise PolicyError(
                self.element,
                "ManagedIdentityAuthenticationFailure",
                f"Could not get a managed identity token for {resource}: {type(exc).__name__}.",
                PolicyResponse.error(500, "The gateway could not authenticate to the backend."),
            ) from exc
        context.Request.Headers.set("Authorization", ["Bearer " + token])
        if self.variable:
            context.Variables.set(self.variable, token)
