"""`<authentication-managed-identity resource="https://cognitiveservices.azure.com" />`: call the backend
with the Function App's managed identity (`Authorization: Bearer <token>`); the token is cached and
refreshed by the gateway, one credential per identity per process."""

from __future__ import annotations

import logging

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

logger = logging.getLogger(__name__)


class ManagedIdentitySettings(Settings):
    resource: Value = attr()
    client_id: str | None = attr()
    output_token_variable_name: str | None = attr()
    ignore_error: bool = attr(default=False)


@register
class AuthenticationManagedIdentity(Statement):
    element = "authentication-managed-identity"
    sections = frozenset({"inbound"})

    def __init__(self, settings: ManagedIdentitySettings) -> None:
        self.resource = settings.resource
        self.client_id = settings.client_id
        self.variable = settings.output_token_variable_name
        self.ignore_error = settings.ignore_error

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> AuthenticationManagedIdentity:
        loader.children(element, ())
        return cls(loader.settings(element, ManagedIdentitySettings))

    async def run(self, context: Context) -> None:
        token = await self.token(context)
        if token is not None:
            context.Request.Headers.set("Authorization", ["Bearer " + token])

    async def token(self, context: Context) -> str | None:
        """The token (also set in `output-token-variable-name`); None when it failed and `ignore-error` is set.

        `send-request` puts it on its own request instead of the backend's."""
        resource = str(self.resource.evaluate(context))
        try:
            token = await context.services.managed_identity_token(resource, self.client_id)
        except Exception as exc:
            if self.ignore_error:
                logger.warning("Managed identity token for %s failed; ignore-error is set.", resource, exc_info=True)
                return None
            raise PolicyError(
                self.element,
                "ManagedIdentityAuthenticationFailure",
                f"Could not get a managed identity token for {resource}: {type(exc).__name__}.",
                PolicyResponse.error(500, "The gateway could not authenticate to the backend."),
            ) from exc
        if self.variable:
            context.Variables.set(self.variable, token)
        return token
