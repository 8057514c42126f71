"""Keep secrets out of the platform's logs: request lines with keys in their query, and the Azure SDK's chatter.

Under Azure Functions the HTTP streaming extension runs its own uvicorn server with uvicorn's default access
log, which writes every request line, query string included, to stdout; the host forwards that to its logs
(Application Insights by default). A `?subscription-key=` request put the whole key there. Setting the
`uvicorn.access` logger's `disabled` flag does not hold (uvicorn's dictConfig turns it back on when the server
starts), but a logger's filters survive dictConfig, so a filter on `uvicorn.access` rewrites each record's URL:
the value of every query parameter whose name says it carries a secret becomes `REDACTED` (names compared
decoded and case-insensitively). The Azure SDK logs every storage request at INFO (about 84 records a minute
per idle instance); its loggers are set to WARNING.

`install()` runs on `function_app.py`'s import path and in the local host.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

#: Query parameters that carry secrets: subscription and admin keys, and what SAS URLs and OAuth put there.
SECRET_PARAMETERS = frozenset({"subscription-key", "api-key", "key", "x-admin-key", "sig", "code", "token", "access_token"})
REDACTED = "REDACTED"


def redact(text: str) -> str:
    """`text` with the values of secret query parameters replaced, if it holds a query string."""
    path, mark, query = text.partition("?")
    if not mark:
        return text
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        pairs.append(f"{name}={REDACTED}" if equals and unquote_plus(name).strip().lower() in SECRET_PARAMETERS else pair)
    return path + "?" + "&".join(pairs)


class RedactSecrets(logging.Filter):
    """Rewrites the string arguments (and message) of each record so no secret query value is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def install() -> None:
    """Filter uvicorn's access log and quiet the Azure SDK (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactSecrets) for existing in access.filters):
        access.addFilter(RedactSecrets())
    logging.getLogger("azure").setLevel(logging.WARNING)
