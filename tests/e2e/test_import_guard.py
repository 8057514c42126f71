"""Cold start: what a new instance imports before (and for) its first request stays small.

A new Functions instance imports `function_app` before its first request; a request then loads the gateway
itself. Neither may pull in what only some gateways use: numpy (semantic cache), tiktoken (token counting),
PyJWT and httpx (token validation, the CLI), azure.identity (managed identity), python-liquid (templates), regex
(the expressions' Regex) or the operator pages. Each check runs in a fresh interpreter, so imports made by other
tests do not hide one. bench/coldstart.py measures what the imports cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from gateway.dev import devstack
from tests.conftest import Simulator

#: Modules that no instance needs until a policy, route or setting asks for them.
OPTIONAL = ("numpy", "tiktoken", "jwt", "httpx", "azure.identity", "liquid", "regex", "gateway.ops")


def loaded_after(code: str) -> list[str]:
    """The optional modules (and their submodules) loaded once `code` ran in a new interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=devstack.REPO_ROOT, capture_output=True, text=True, check=True)
    modules = json.loads(result.stdout.splitlines()[-1])
    return [name for name in modules if any(name == root or name.startswith(root + ".") for root in OPTIONAL)]


def test_importing_the_function_app_loads_nothing_optional() -> None:
    assert loaded_after("import function_app") == []


def test_importing_the_function_app_defers_the_gateway_itself() -> None:
    script = "import sys, function_app; print(json.dumps(['gateway.handling.gateway' in sys.modules, 'aiohttp' in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", "import json\n" + script], cwd=devstack.REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [False, False]


def test_a_first_request_loads_nothing_optional(simulator: Simulator) -> None:
    """A gateway answering a chat completion (no policy documents, default settings) leaves the optional alone."""
    backends = json.dumps([{"id": "sim", "url": simulator.url, "api_key_setting": "SIM_KEY"}])
    code = textwrap.dedent(f"""
        import asyncio, os
        os.environ.update(SIM_KEY={simulator.api_key!r}, GATEWAY_KEY_PEPPER="p" * 24, GATEWAY_BACKENDS={backends!r},
                          GATEWAY_STORAGE_CONNECTION="UseDevelopmentStorage=true", GATEWAY_LOCAL_QUEUE_WORKER="false")
        from starlette.requests import Request
        from gateway.config.settings import Settings
        from gateway.handling.gateway import Gateway
        from gateway.stores.memory import MemoryTables
        from gateway.stores.subscriptions import KeyHasher, SubscriptionRepository

        async def first_request():
            tables = MemoryTables()
            gateway = Gateway(Settings.from_env(), tables)
            _, key, _ = await SubscriptionRepository(tables.table("subscriptions"), KeyHasher("p" * 24)).create("t", "all")
            body = b'{{"messages": [{{"role": "user", "content": "hi"}}]}}'
            scope = {{
                "type": "http", "method": "POST", "scheme": "http", "server": ("gateway", 80), "client": ("127.0.0.1", 1),
                "path": "/openai/deployments/gpt-4o/chat/completions", "query_string": b"api-version=2024-10-21",
                "headers": [(b"api-key", key.encode()), (b"content-type", b"application/json")],
                "path_params": {{"path": "deployments/gpt-4o/chat/completions"}},
            }}
            async def receive():
                return {{"type": "http.request", "body": body, "more_body": False}}
            sent = []
            async def send(message):
                sent.append(message)
            response = await gateway.handle(Request(scope, receive))
            await response(scope, receive, send)
            assert sent[0]["status"] == 200, sent
            await gateway.close()

        asyncio.run(first_request())
    """)
    assert loaded_after(code) == []
