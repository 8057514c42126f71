"""Liveness and readiness: whether the process serves, and whether this instance can serve requests well.

A platform health check (one that replaces instances that fail it) must probe liveness (`/health`): a storage
outage is shared by every instance, and if it failed readiness, the platform would take them all out at once
while they could still answer from cached keys and local limits. Alerting and load balancers that can route
around one instance probe readiness (`/health/ready`).

Readiness reflects the last storage call of this instance: the policy poller calls storage every
`GATEWAY_POLICY_POLL_SECONDS`, so an outage or a recovery shows within about that, even on an idle instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from gateway import __version__

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway


def liveness() -> Response:
    """200 while the process serves; builds nothing and calls nothing."""
    return JSONResponse({"status": "ok", "version": __version__})


async def readiness(gateway: Gateway) -> Response:
    """200 when policies are loaded and storage answers; otherwise 503 with what is wrong.

    Starts the gateway's background work if nothing has yet (under Functions, only the first request would), so
    probes alone bring an instance to ready; starting never fails for storage.
    """
    await gateway.start()
    storage = gateway.store.health()
    loaded = gateway.policies.loaded
    ready = storage.available and loaded
    body: dict[str, Any] = {
        "status": "ready" if ready else "not-ready",
        "version": __version__,
        "storage": storage.as_json(),
        "policies": {"loaded": loaded},
    }
    return JSONResponse(body, status_code=200 if ready else 503, headers={"cache-control": "no-store"})
