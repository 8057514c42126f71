"""Token metrics to Application Insights' ingestion endpoint, as pre-aggregated custom metrics (APIM's names)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import orjson

from gateway.stores.metric_rows import SeriesKey

logger = logging.getLogger(__name__)

#: APIM's metric names for the fields that are token counts.
METRIC_NAMES = {
    "prompt": "Prompt Tokens", "completion": "Completion Tokens", "total": "Total Tokens",
    "cached": "Prompt Cached Tokens", "reasoning": "Reasoning Tokens",
}  # fmt: skip


class AppInsightsExporter:
    """Sends the same metrics to Application Insights' ingestion endpoint as pre-aggregated custom metrics."""

    def __init__(self, connection_string: str) -> None:
        parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
        self._ikey = parts.get("InstrumentationKey", "")
        endpoint = parts.get("IngestionEndpoint", "https://dc.services.visualstudio.com").rstrip("/")
        self._url = endpoint + "/v2/track"
        self._client: Any = None
        self._sent: dict[tuple[SeriesKey, str], int] = {}

    async def export(self, series: list[tuple[SeriesKey, dict[str, int]]]) -> None:
        """Send what each series gained since the last export (totals are cumulative per minute)."""
        import httpx

        envelopes = []
        for key, values in series:
            for name, metric in METRIC_NAMES.items():
                delta = values[name] - self._sent.get((key, name), 0)
                if delta <= 0:
                    continue
                self._sent[(key, name)] = values[name]
                envelopes.append(self._envelope(key, metric, delta))
        self._forget_before(min(key.minute for key, _ in series) if series else "")
        if not envelopes:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        try:
            response = await self._client.post(self._url, content=orjson.dumps(envelopes), headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            logger.warning("Could not send %d metrics to Application Insights: %s.", len(envelopes), type(exc).__name__)
            return
        if response.status_code >= 300:
            logger.warning("Application Insights refused %d metrics: HTTP %s.", len(envelopes), response.status_code)

    def _forget_before(self, minute: str) -> None:
        """Minutes older than any series still being flushed will not grow again: drop what was sent for them."""
        for sent in [sent for sent in self._sent if sent[0].minute < minute]:
            del self._sent[sent]

    def _envelope(self, key: SeriesKey, metric: str, value: int) -> dict[str, Any]:
        minute = datetime.strptime(key.minute, "%Y%m%d%H%M").replace(tzinfo=timezone.utc)
        return {
            "name": "Microsoft.ApplicationInsights.Metric",
            "time": minute.isoformat().replace("+00:00", "Z"),
            "iKey": self._ikey,
            "data": {
                "baseType": "MetricData",
                "baseData": {
                    "ver": 2,
                    "metrics": [{"ns": key.namespace, "name": metric, "kind": 1, "value": value, "count": 1}],
                    "properties": dict(key.dimensions),
                },
            },
        }

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
