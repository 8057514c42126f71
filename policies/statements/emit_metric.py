"""`<emit-metric>`: a custom metric, recorded beside the token metrics.

    <emit-metric name="Requests by tier" value="1" namespace="contoso">
        <dimension name="Subscription ID" />
        <dimension name="Tier" value='@(context.Request.Headers.GetValueOrDefault("x-tier", "free"))' />
    </emit-metric>

`name` and `namespace` (default "API Management") are constants, as in APIM; `value` is a number or an
expression (default 1), `dimension`s as in `azure-openai-emit-token-metric`: a name, and a value or one of
APIM's default dimension names (API ID, Operation ID, Product ID, User ID, Subscription ID, Location, Gateway
ID). At most 10 dimensions (APIM's documented limit); none is accepted too (APIM's docs
call one required, but public samples deployed without any). The value is recorded when
the statement runs — any section — summed per minute and series (sum, count, min, max) in Table Storage, and
sent to Application Insights as a custom metric when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set
(gateway/stores/custom_metrics.py). A value that is not a finite number fails the statement like any
expression error.
"""

from __future__ import annotations

import math

from policies.context import Context
from policies.expressions import ExpressionRuntimeError, Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.statements.emit_token_metric import DEFAULT_DIMENSIONS, MAX_DIMENSIONS, DimensionSettings
from policies.xml import PolicyElement

#: APIM's defaults for emit-metric (emit-token-metric adds Backend ID).
_DEFAULTS = tuple(name for name in DEFAULT_DIMENSIONS if name != "Backend ID")


class EmitMetricSettings(Settings):
    name: str = attr()
    namespace: str = attr(default="API Management")
    value: Value = attr(kind=float, default=1.0)


@register
class EmitMetric(Statement):
    element = "emit-metric"

    def __init__(self, settings: EmitMetricSettings, dimensions: list[tuple[str, Value | None]]) -> None:
        self.name = settings.name
        self.namespace = settings.namespace
        self.value = settings.value
        self.dimensions = dimensions

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> EmitMetric:
        settings = loader.settings(element, EmitMetricSettings)
        if not settings.name.strip():
            raise loader.fail(element, "Attribute 'name' must name the metric.")
        dimensions: list[tuple[str, Value | None]] = []
        for child in loader.children(element, ("dimension",)):
            loader.children(child, ())
            dimension = loader.settings(child, DimensionSettings)
            if dimension.value is None and dimension.name not in _DEFAULTS:
                raise loader.fail(child, f"Dimension {dimension.name!r} needs a value; only {', '.join(_DEFAULTS)} may omit it.")
            if any(existing == dimension.name for existing, _ in dimensions):
                raise loader.fail(child, f"Dimension {dimension.name!r} appears twice.")
            dimensions.append((dimension.name, dimension.value))
        if len(dimensions) > MAX_DIMENSIONS:
            raise loader.fail(element, f"{len(dimensions)} dimensions; APIM allows at most {MAX_DIMENSIONS}.")
        return cls(settings, dimensions)

    async def run(self, context: Context) -> None:
        raw = self.value.evaluate(context)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or isinstance(raw, bool):
            raise ExpressionRuntimeError(f"emit-metric {self.name!r}: value {str(raw)[:40]!r} is not a number.")
        dimensions = [
            (name, DEFAULT_DIMENSIONS[name](context) if value_of is None else _text(value_of.evaluate(context))) for name, value_of in self.dimensions
        ]
        context.services.metrics.record_custom(self.namespace, self.name, value, dimensions)


def _text(value: object) -> str:
    return "" if value is None else str(value)
