"""Token metrics (APIM's names) and `emit-metric`'s custom metrics to Application Insights' ingestion endpoint, as
pre-aggregated custom metrics."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.stores.custom_metrics import CustomKey
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
        #: What was sent of each custom series: (sum, count).
        self._sent_custom: dict[CustomKey, tuple[float, int]] = {}

    async def export(self, series: list[tuple[SeriesKey, dict[str, int]]]) -> None:
        """Send what each series gained since the last export (totals are cumulative per minute)."""
        envelopes = []
        for key, values in series:
            for name, metric in METRIC_NAMES.items():
                delta = values[name] - self._sent.get((key, name), 0)
                if delta <= 0:
                    continue
                self._sent[(key, name)] = values[name]
                envelopes.append(_envelope(key.minute, key.namespace, metric, delta, 1, key.dimensions, self._ikey))
        self._forget_before(min(key.minute for key, _ in series) if series else "")
        await self._post(envelopes)

    async def export_custom(self, series: list[tuple[CustomKey, float, int]]) -> None:
        """Send what each custom series gained since the last export: its sum and count."""
        envelopes = []
        for key, total, count in series:
            sent_total, sent_count = self._sent_custom.get(key, (0.0, 0))
            if count > sent_count:
                self._sent_custom[key] = (total, count)
                envelopes.append(_envelope(key.minute, key.namespace, key.name, total - sent_total, count - sent_count, key.dimensions, self._ikey))
        oldest = min((key.minute for key, _, _ in series), default="")
        for key in [key for key in self._sent_custom if key.minute < oldest]:
            del self._sent_custom[key]
        await self._post(envelopes)

    async def _post(self, envelopes: list[dict[str, Any]]) -> None:
        import httpx

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

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _envelope(
    minute: str, namespace: str, metric: str, value: float, count: int, dimensions: tuple[tuple[str, str], ...], ikey: str
) -> dict[str, Any]:
    """One pre-aggregated metric (kind 1: an aggregation of `count` values summing to `value`) of one minute."""
    time = datetime.strptime(minute, "%Y%m%d%H%M").replace(tzinfo=UTC)
    return {
        "name": "Microsoft.ApplicationInsights.Metric",
        "time": time.isoformat().replace("+00:00", "Z"),
        "iKey": ikey,
        "data": {
            "baseType": "MetricData",
            "baseData": {
                "ver": 2,
                "metrics": [{"ns": namespace, "name": metric, "kind": 1, "value": value, "count": count}],
                "properties": dict(dimensions),
            },
        },
    }
