"""`<log-to-eventhub logger-id="audit">@(…)</log-to-eventhub>`: send a message to a configured logger.

    <log-to-eventhub logger-id="usage" partition-key="@(context.Subscription.Id)">@{
        return new JObject(new JProperty("subscription", context.Subscription.Id),
                           new JProperty("status", context.Response.StatusCode)).ToString();
    }</log-to-eventhub>

The loggers are the gateway's `GATEWAY_LOGGERS` setting (APIM's Logger entities; gateway/config/loggers.py):
Azure Event Hubs as in APIM, or an Azure Storage queue or append blobs (which run locally on Azurite). A
`logger-id` that is not configured is a load error when the gateway's settings are known. `partition-id`
(a constant) or `partition-key` (an expression) pick the Event Hubs partition, as in APIM; queue and blob
loggers ignore them. The message is the element's text, a literal or an expression; null logs an empty line.

The request never waits for the logger: the message is queued and sent in the background within a fraction
of a second; when the gateway's queue is full the message is dropped and logged (APIM gives no delivery
guarantee either). Messages over 200 KB are truncated, as in APIM (48 KB for queue loggers).
"""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement


class LogToEventHubSettings(Settings):
    logger_id: str = attr()
    partition_id: str | None = attr()
    partition_key: Value | None = attr()


@register
class LogToEventHub(Statement):
    element = "log-to-eventhub"

    def __init__(self, settings: LogToEventHubSettings, message: Value) -> None:
        self.logger_id = settings.logger_id
        self.partition_id = settings.partition_id
        self.partition_key = settings.partition_key
        self.message = message

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> LogToEventHub:
        loader.children(element, ())
        settings = loader.settings(element, LogToEventHubSettings)
        if settings.partition_id is not None and settings.partition_key is not None:
            raise loader.fail(element, "Use 'partition-id' or 'partition-key', not both.")
        if settings.partition_id is not None and not settings.partition_id.isdigit():
            raise loader.fail(element, f"partition-id {settings.partition_id!r} is not a partition index (0, 1, …).")
        if loader.logger_ids is not None and settings.logger_id not in loader.logger_ids:
            known = ", ".join(sorted(loader.logger_ids)) or "none configured"
            raise loader.fail(element, f"Unknown logger-id {settings.logger_id!r} (GATEWAY_LOGGERS); configured: {known}.")
        return cls(settings, loader.text(element))

    async def run(self, context: Context) -> None:
        message = self.message.evaluate(context)
        key = None if self.partition_key is None or (value := self.partition_key.evaluate(context)) is None else str(value)
        context.services.event_log.log(self.logger_id, "" if message is None else str(message), key, self.partition_id)
