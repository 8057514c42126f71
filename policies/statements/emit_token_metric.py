"""`<azure-openai-emit-token-metric>` / `<llm-emit-token-metric>`: record each request's token usage.

    <azure-openai-emit-token-metric namespace="openai">
        <dimension name="Subscription ID" />
        <dimension name="Client IP" value="@(context.Request.IpAddress)" />
    </azure-openai-emit-token-metric>

Metrics: Prompt Tokens, Completion Tokens, Total Tokens (and cached and reasoning tokens when reported),
aggregated per minute by namespace and dimensions (see gateway/metrics.py). A dimension named like one of
APIM's defaults may omit its value: API ID, Operation ID, Product ID, User ID, Subscription ID, Location,
Gateway ID, Backend ID. Custom values are evaluated when the statement runs; defaults when usage is known
(so Backend ID names the backend that answered). At most 10 dimensions, Azure Monitor's limit.
"""

from __future__ import annotations

from collections.abc import Callable

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.usage import Usage
from policies.xml import PolicyElement

DEFAULT_DIMENSIONS: dict[str, Callable[[Context], str]] = {
    "API ID": lambda c: c.Api.Id,
    "Operation ID": lambda c: c.Operation.Id,
    "Product ID": lambda c: c.Product.Id if c.Product else "",
    "User ID": lambda c: c.User.Id if c.User else "",
    "Subscription ID": lambda c: c.Subscription.Id if c.Subscription else "",
    "Location": lambda c: c.Deployment.Region,
    "Gateway ID": lambda c: c.Deployment.Gateway.Id,
    "Backend ID": lambda c: c.backend_used,
}
MAX_DIMENSIONS = 10


class EmitTokenMetricSettings(Settings):
    namespace: str = attr(default="API Management")
    #: Listed by the 2024 docs (copied from emit-metric); accepted and unused.
    value: str | None = attr()


class DimensionSettings(Settings):
    name: str = attr()
    value: Value | None = attr()


@register
class EmitTokenMetric(Statement):
    element = "azure-openai-emit-token-metric"
    aliases = ("llm-emit-token-metric",)
    sections = frozenset({"inbound"})

    def __init__(self, namespace: str, dimensions: list[tuple[str, Value | None]]) -> None:
        self.namespace = namespace
        self.dimensions = dimensions

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> EmitTokenMetric:
        namespace = loader.settings(element, EmitTokenMetricSettings).namespace
        dimensions: list[tuple[str, Value | None]] = []
        for child in loader.children(element, ("dimension",)):
            dimension = loader.settings(child, DimensionSettings)
            name = dimension.name
            if dimension.value is None and name not in DEFAULT_DIMENSIONS:
                raise loader.fail(child, f"Dimension {name!r} needs a value; only {', '.join(DEFAULT_DIMENSIONS)} may omit it.")
            if any(existing == name for existing, _ in dimensions):
                raise loader.fail(child, f"Dimension {name!r} appears twice.")
            dimensions.append((name, dimension.value))
        if len(dimensions) > MAX_DIMENSIONS:
            raise loader.fail(element, f"{len(dimensions)} dimensions; Azure Monitor keeps at most {MAX_DIMENSIONS}.")
        return cls(namespace, dimensions)

    async def run(self, context: Context) -> None:
        custom = {name: _text(value.evaluate(context)) for name, value in self.dimensions if value is not None}
        metrics = context.services.metrics
        deployment = context.Request.MatchedParameters.GetValueOrDefault("deployment-id") or ""
        subscription = context.Subscription.Id if context.Subscription else ""

        async def record(usage: Usage) -> None:
            dimensions = [(name, custom[name] if name in custom else DEFAULT_DIMENSIONS[name](context)) for name, _ in self.dimensions]
            metrics.record(self.namespace, dimensions, usage, subscription, deployment)

        context.usage_listeners.append(record)


def _text(value: object) -> str:
    return "" if value is None else str(value)
