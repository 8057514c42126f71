"""Token usage of one request, as statements that account for it (token limits, token metrics) receive it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    total: int = 0
    cached: int = 0
    reasoning: int = 0
    #: False when counted by the gateway (a stream without a usage chunk, an aborted stream).
    exact: bool = True
    #: True when the answer came from the semantic cache: no backend tokens were spent.
    from_cache: bool = False


#: Called once per request, when its usage is known: right after a buffered response, at the end of a stream
#: (or when the client aborts it), or with zero usage when the backend was never reached.
UsageListener = Callable[[Usage], Awaitable[None]]
