"""`GATEWAY_LOGGERS`: the loggers `log-to-eventhub` names by `logger-id`, as APIM's Logger entities.

A JSON object, logger id → logger::

    {"audit":  {"type": "eventhub", "connection_setting": "AUDIT_EVENTHUB_CONNECTION", "name": "apim-audit"},
     "usage":  {"type": "eventhub", "endpoint": "contoso.servicebus.windows.net", "name": "usage",
                "managed_identity": {"client_id": "<user-assigned identity client id>"}},
     "local":  {"type": "queue", "connection_setting": "AzureWebJobsStorage", "name": "gateway-logs"},
     "archive": {"type": "blob", "endpoint": "https://contoso.blob.core.windows.net", "name": "gateway-logs",
                 "managed_identity": true}}

`type` is `eventhub` (Azure Event Hubs; `name` is the event hub), `queue` (an Azure Storage queue) or `blob`
(append blobs in an Azure Storage container). A connection string is never written in the JSON itself:
`connection_setting` names the setting that holds it (a Key Vault reference in App Settings works), or
`endpoint` (the Event Hubs namespace, or the storage account's queue or blob URL) with `managed_identity`
(`true` for the system-assigned identity, or `{"client_id": …}`). Queue and blob loggers run locally on Azurite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.sensitive import Secret

SETTING = "GATEWAY_LOGGERS"
KINDS = ("eventhub", "queue", "blob")
_KEYS = frozenset({"type", "name", "connection_setting", "endpoint", "managed_identity", "description"})
#: Storage queue and container names; Event Hubs names.
_STORAGE_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_EVENTHUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}")


@dataclass(frozen=True)
class LoggerConfig:
    id: str
    kind: str
    #: The event hub, queue or container.
    name: str
    connection: Secret | None = None
    #: With a managed identity: the Event Hubs namespace, or the storage account's queue or blob service URL.
    endpoint: str | None = None
    client_id: str | None = None


def parse_loggers(env: Mapping[str, str]) -> dict[str, LoggerConfig]:
    raw = env.get(SETTING)
    if not raw:
        return {}
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Setting {SETTING!r} is not valid JSON ({exc.msg} at position {exc.pos}).") from None
    if not isinstance(data, dict) or not all(isinstance(item, dict) for item in data.values()):
        raise ValueError(f'Setting {SETTING!r} must map logger ids to loggers, e.g. {{"audit": {{"type": "eventhub", ...}}}}.')
    return {logger_id: _logger(logger_id, item, env) for logger_id, item in data.items()}


def _logger(logger_id: str, item: dict[str, Any], env: Mapping[str, str]) -> LoggerConfig:
    where = f"Setting {SETTING!r}, logger {logger_id!r}"
    if not logger_id or len(logger_id) > 256:
        raise ValueError(f"Setting {SETTING!r}: a logger id must have 1 to 256 characters.")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}.")
    kind = item.get("type")
    if kind not in KINDS:
        raise ValueError(f"{where}: 'type' must be one of {', '.join(KINDS)}, not {kind!r}.")
    name = item.get("name")
    pattern = _EVENTHUB_NAME if kind == "eventhub" else _STORAGE_NAME
    if not isinstance(name, str) or not pattern.fullmatch(name):
        what = "an event hub name" if kind == "eventhub" else f"a {kind} name (3-63 lowercase letters, digits and single hyphens)"
        raise ValueError(f"{where}: 'name' must be {what}, got {name!r}.")
    setting, endpoint, identity = item.get("connection_setting"), item.get("endpoint"), item.get("managed_identity")
    if (setting is None) == (endpoint is None):
        raise ValueError(
            f"{where}: give either 'connection_setting' (the setting holding a connection string) or 'endpoint' with 'managed_identity'."
        )
    if setting is not None:
        connection = env.get(setting) if isinstance(setting, str) else None
        if not connection or identity is not None:
            problem = "is missing or empty" if not connection else "cannot be combined with 'managed_identity'"
            raise ValueError(f"{where}: its connection setting {setting!r} {problem}.")
        return LoggerConfig(logger_id, kind, name, connection=Secret(connection))
    if not isinstance(endpoint, str) or not endpoint or not (identity is True or isinstance(identity, dict)):
        raise ValueError(f'{where}: \'endpoint\' needs "managed_identity": true or {{"client_id": "…"}}.')
    client_id = identity.get("client_id") if isinstance(identity, dict) else None
    if client_id is not None and not isinstance(client_id, str):
        raise ValueError(f"{where}: 'managed_identity.client_id' must be a string.")
    return LoggerConfig(logger_id, kind, name, endpoint=endpoint, client_id=client_id)
