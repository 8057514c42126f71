"""`<trace source="billing" severity="information">`: write a custom trace, with `<message>` and `<metadata>`.

    <trace source="routing" severity="information">
        <message>@("Routed to " + context.Variables.GetValueOrDefault<string>("backend", "default"))</message>
        <metadata name="deployment" value="@(context.Request.MatchedParameters["deployment-id"])" />
    </trace>

The trace is a record of the standard `logging` module on the `policies.trace` logger, at DEBUG (verbose),
INFO (information) or ERROR (error); the host's logging configuration decides which levels are kept and
where they go (Application Insights, like APIM's trace telemetry). Its structured part is in the record's
`custom_dimensions` extra (the name Azure Monitor's log handlers read): `source`, `severity`, `request_id`
and each metadata name and value. Values are bounded by Application Insights' own limits: the message to
32,768 characters, metadata names to 150 and values to 8,192, at most 100 metadata; longer text is cut.
"""

from __future__ import annotations

import logging

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

logger = logging.getLogger("policies.trace")

LEVELS = {"verbose": logging.DEBUG, "information": logging.INFO, "error": logging.ERROR}
MAX_MESSAGE = 32_768
MAX_NAME = 150
MAX_VALUE = 8_192
MAX_METADATA = 100


class TraceSettings(Settings):
    source: str = attr()
    severity: str = attr(choices=tuple(LEVELS), default="verbose")


class MetadataSettings(Settings):
    name: Value = attr()
    value: Value = attr()


@register
class Trace(Statement):
    element = "trace"

    def __init__(self, source: str, severity: str, message: Value, metadata: list[MetadataSettings]) -> None:
        self.source = source
        self.severity = severity
        self.message = message
        self.metadata = metadata

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Trace:
        settings = loader.settings(element, TraceSettings)
        message: Value | None = None
        metadata: list[MetadataSettings] = []
        for child in loader.children(element, ("message", "metadata")):
            if child.tag == "message":
                if message is not None:
                    raise loader.fail(child, "<message> may appear once.")
                loader.no_attributes(child)
                loader.children(child, ())
                message = loader.text(child)
            else:
                loader.children(child, ())
                metadata.append(loader.settings(child, MetadataSettings))
        if message is None:
            message = loader.text(element)  # APIM's older form: the message as the element's text
        if len(metadata) > MAX_METADATA:
            raise loader.fail(element, f"{len(metadata)} <metadata>; at most {MAX_METADATA} are kept.")
        return cls(settings.source, settings.severity, message, metadata)

    async def run(self, context: Context) -> None:
        level = LEVELS[self.severity]
        if not logger.isEnabledFor(level):
            return
        dimensions = {"source": self.source, "severity": self.severity, "request_id": context.RequestId}
        for item in self.metadata:
            dimensions[_text(item.name.evaluate(context))[:MAX_NAME]] = _text(item.value.evaluate(context))[:MAX_VALUE]
        message = _text(self.message.evaluate(context))[:MAX_MESSAGE]
        logger.log(level, "%s", message, extra={"custom_dimensions": dimensions})


def _text(value: object) -> str:
    return "" if value is None else str(value)
