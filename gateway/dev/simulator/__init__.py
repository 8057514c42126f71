"""A simulated Azure OpenAI backend: deterministic answers, Azure-shaped errors, fault injection.

It lets newcomers run the gateway with no Azure endpoint, gives end-to-end tests a backend
they can inspect and break on purpose, and is the cheap "direct" baseline in benchmarks.
It is not a model: answers echo the question and embeddings are hashed bags of words; a request whose
`tool_choice` forces a function gets a call to it, with the question as its arguments.

Faults, chosen per request by header (the gateway forwards them) or armed with POST /sim/faults:
`x-sim-fault: <status>|hang` fails a request before it is answered; `x-sim-stream-fault: <kind>:<n>`
breaks a stream after n tokens: `drop` closes the connection without ending the chunked body (a reset
stream), `end` ends the body cleanly but without the closing chunks and `[DONE]`, `stall` goes silent
for `x-sim-hang-s` seconds (an idle backend) and then drops. Strict mode (`strict=True`, or the header
`x-sim-strict: true`) answers 400 to request fields the operation does not have, as Azure OpenAI does;
`x-sim-ignore-stream-options: true` streams without the usage chunk a request asked for, as some backends do.

It also plays Azure AI Content Safety (`/contentsafety/text:analyze` and `text:shieldPrompt`,
content_safety.py), with a fixed word list, so `llm-content-safety` runs locally.

Modules: settings (SimulatorSettings), app (routes, auth, recording, stats, MSI), operations (the Azure
OpenAI operations), texts (answers and embeddings), faults, streams (SSE framing), parsing (request
values, 400 when malformed) and errors (Azure's error shape).
"""

from __future__ import annotations

import sys

import uvicorn

from gateway.dev.simulator.app import build_app as build_app
from gateway.dev.simulator.settings import SimulatorSettings as SimulatorSettings


def serve(settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 8081) -> None:
    """Run the simulator, saying loudly that it is not a real model so nobody mistakes its answers."""
    print(
        f"SIMULATED Azure OpenAI backend (not a real model) listening on http://{host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    app = build_app(settings)
    uvicorn.run(app, host=host, port=port, loop="auto", http="auto", access_log=False, log_level="warning")
