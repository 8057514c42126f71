"""How one simulated backend behaves, apart from the app so every module of the simulator can read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimulatorSettings:
    """How one simulated backend behaves; frozen so an app's behaviour cannot drift under a test."""

    api_key: str | None = None  # when set: `api-key` must match, or a bearer token from /msi/token
    token_ms: float = 0.0  # pause before each streamed token; header x-sim-token-ms overrides it
    deployments: tuple[str, ...] = ()  # empty serves any deployment name
    region: str = "simulated"  # echoed in x-ms-region
    embedding_dims: int = 1536
    identity_header: str | None = None  # when set, /msi/token requires a matching X-IDENTITY-HEADER
    token_lifetime_s: int = 3600
    strict: bool = False  # 400 for unknown request fields; header x-sim-strict overrides it
