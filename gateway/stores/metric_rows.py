"""The layout of token-metric rows, shared by the recorder that writes them and the readers that sum them.

Table `<prefix>metrics`, one row per (minute, instance, namespace, dimensions, subscription, deployment):
PartitionKey is the UTC minute `YYYYMMDDHHMM` (a time range is a partition range); RowKey is
`<instance id>-<hash of the rest>`, so instances never write the same row. Table `<prefix>metricsrollup`
holds the same traffic by subscription and deployment only, per minute (`m…`), hour (`h…`) and day (`d…`).

Every value in a row is bounded before it is recorded (`bounded`): a client-chosen dimension value or
deployment name can never make a row that Table Storage refuses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

METRIC_FIELDS = (
    "prompt", "completion", "total", "cached", "reasoning", "requests", "estimated", "cacheHits", "savedTokens",
    "refused429", "refused403",
)  # fmt: skip
#: The table (after the prefix) holding the rollups: per minute, hour and day, by subscription and deployment.
ROLLUP_TABLE = "metricsrollup"
MINUTE_PARTITION = "%Y%m%d%H%M"
ROLLUP_MINUTE_PARTITION = "m%Y%m%d%H%M"
ROLLUP_HOUR_PARTITION = "h%Y%m%d%H"
ROLLUP_DAY_PARTITION = "d%Y%m%d"
#: A rollup row is never written once its period ended this long ago (see `MetricsRecorder._drop_late_rollups`).
ROLLUP_LATE_SECONDS = 1800
#: Longest dimension name and value, subscription and deployment kept; longer ones keep a prefix and a hash.
MAX_VALUE_CHARS = 256
#: Most dimensions a series keeps (APIM allows 5 custom dimensions plus its defaults).
MAX_DIMENSIONS = 16


def bounded(value: str) -> str:
    """`value`, or a prefix of it with a hash of the whole when it is too long: distinct values stay distinct."""
    if len(value) <= MAX_VALUE_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{value[: MAX_VALUE_CHARS - 18]}~{digest}"


@dataclass(frozen=True)
class SeriesKey:
    #: The PartitionKey: a minute `YYYYMMDDHHMM`, or a minute, hour or day of a rollup (`m…`, `h…`, `d…`).
    minute: str
    namespace: str
    dimensions: tuple[tuple[str, str], ...]
    subscription: str
    deployment: str

    @classmethod
    def of(cls, minute: str, namespace: str, dimensions: tuple[tuple[str, str], ...], subscription: str, deployment: str) -> SeriesKey:
        """A key whose every part fits a table row, however long what the client chose."""
        return cls(
            minute,
            bounded(namespace),
            tuple((bounded(name), bounded(value)) for name, value in dimensions[:MAX_DIMENSIONS]),
            bounded(subscription),
            bounded(deployment),
        )

    def row_key(self, instance: str) -> str:
        digest = hashlib.sha1(orjson.dumps([self.namespace, self.dimensions, self.subscription, self.deployment])).hexdigest()
        return f"{instance}-{digest[:20]}"

    def entity(self, instance: str, values: dict[str, int]) -> dict[str, Any]:
        return {
            "PartitionKey": self.minute,
            "RowKey": self.row_key(instance),
            "instance": instance,
            "namespace": self.namespace,
            "dimensions": orjson.dumps(dict(self.dimensions)).decode(),
            "subscription": self.subscription,
            "deployment": self.deployment,
            **values,
        }
