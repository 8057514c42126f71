"""What token limits and token metrics cost: the same traffic with and without them, plus storage calls.

    .venv/bin/python -m bench.tokens [--requests 2000]

1. Through a gateway process: p50/p99 and gateway CPU per request with no policy, then with
   `llm-token-limit` (TPM and a monthly quota, high enough to admit everything) and `llm-emit-token-metric`,
   next to the direct call to the simulated backend; then streams with the same policies: time to first byte,
   CPU per stream and per relayed chunk, and the gateway's memory per open stream (many long streams at once).
2. In-process (same policies): Table Storage calls per request at steady state, counted by the gateway's
   storage client — leases, metric flushes and policy polls included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx
import orjson

from bench.harness import API_VERSION, LoadResult, apply_policy, local_stack, rss_mib, run_load

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION
#: The simulator's answer to the benchmark's prompt with max_tokens 16.
STREAM_TOKENS = 16
POLICY = """<policies><inbound><base />
  <llm-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="100000000" token-quota="1000000000"
                   token-quota-period="Monthly" estimate-prompt-tokens="true" remaining-tokens-header-name="x-remaining-tokens" />
  <llm-emit-token-metric namespace="bench"><dimension name="Subscription ID" /><dimension name="Operation ID" /></llm-emit-token-metric>
</inbound></policies>"""


def row(label: str, result: LoadResult) -> str:
    cpu = f"{result.cpu_ms_per_request:.3f}" if result.cpu_ms_per_request is not None else "-"
    return (
        f"{label:<30} p50 {result.pct(result.latencies_ms, 0.5):7.3f} ms  p99 {result.pct(result.latencies_ms, 0.99):7.3f} ms"
        f"  {result.rps:7.0f} req/s  gateway CPU {cpu} ms/req"
    )


async def memory_per_stream(url: str, headers: dict[str, str], pid: int, streams: int, tokens: int) -> tuple[float, float]:
    """(MiB per open stream, MiB before) while `streams` streams of `tokens` tokens are open at once: the peak
    resident memory during them, less the resident memory before, over `streams`.

    Run it on a gateway that has not yet served many streams: memory freed by earlier ones is reused without
    growing the resident set, which would hide what open streams hold. One stream first loads what streaming needs.
    """
    # The simulator's answer echoes the question, so a question of `tokens` words makes a `tokens`-token answer.
    question = " ".join(f"word{i % 100}" for i in range(tokens))
    body = orjson.dumps({"messages": [{"role": "user", "content": question}], "max_tokens": tokens, "stream": True})
    await run_load(url, headers, body, 1, 1, warmup=0)
    before = rss_mib(pid)
    peak = before
    load = asyncio.ensure_future(run_load(url, {**headers, "x-sim-token-ms": "2"}, body, streams, streams, warmup=0))
    while not load.done():
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(0.05)
    await load
    return (peak - before) / streams, before


async def storage_calls_per_request(env: dict[str, str], key: str, requests: int) -> tuple[float, float]:
    """(calls per request in the first `requests`, calls per request in the next `requests`) in-process."""
    from gateway.config.settings import Settings
    from gateway.handling.gateway import Gateway
    from gateway.hosts.local import create_local_app

    gateway = Gateway(Settings.from_env({**os.environ, **env, "GATEWAY_LOCAL_QUEUE_WORKER": "false"}))
    await gateway.start()
    body = orjson.dumps({"messages": [{"role": "user", "content": "Summarise the plot in sixteen words"}], "max_tokens": 16})
    transport = httpx.ASGITransport(app=create_local_app(gateway))
    rates = []
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        for _ in range(2):
            before = gateway.store.calls
            for _ in range(requests):
                response = await client.post(CHAT, content=body, headers={"api-key": key, "content-type": "application/json"})
                assert response.status_code == 200, response.text
            rates.append((gateway.store.calls - before) / requests)
    await gateway.close()
    return rates[0], rates[1]


async def main(requests: int) -> None:
    body = orjson.dumps({"messages": [{"role": "user", "content": "Summarise the plot in sixteen words"}], "max_tokens": 16})
    with local_stack({"GATEWAY_POLICY_POLL_SECONDS": "0.5", "GATEWAY_METRICS_FLUSH_SECONDS": "2"}) as stack:
        direct_headers = {"api-key": stack.simulator_key, "content-type": "application/json"}
        gateway_headers = {"api-key": stack.subscription_key, "content-type": "application/json"}
        print(f"non-streaming chat, c=1, {requests} requests per row")
        print(row("direct", await run_load(stack.simulator_url + CHAT, direct_headers, body, requests, 1)))
        print(row("gateway, no policy", await run_load(stack.gateway_url + CHAT, gateway_headers, body, requests, 1, stack.gateway_pid)))
        apply_policy(stack.env, POLICY)
        time.sleep(1.5)
        check = httpx.post(stack.gateway_url + CHAT, content=body, headers=gateway_headers)
        assert "x-remaining-tokens" in check.headers, "the policy did not load"
        buffered = await run_load(stack.gateway_url + CHAT, gateway_headers, body, requests, 1, stack.gateway_pid)
        print(row("gateway, token limit + metric", buffered))
        print(row("gateway, same, c=20", await run_load(stack.gateway_url + CHAT, gateway_headers, body, requests, 20, stack.gateway_pid)))
        # Last of the buffered rows: the settling of these long streams (tokenizing 2,000 tokens each) would
        # otherwise land in the next row's CPU.
        per_stream, baseline = await memory_per_stream(stack.gateway_url + CHAT, gateway_headers, stack.gateway_pid, 20, 2000)
        open_streams = f"20 streams of 2,000 tokens open at once: {per_stream:.2f} MiB per open stream (gateway resident {baseline:.0f} MiB before)"
        streamed = orjson.dumps({**orjson.loads(body), "stream": True})
        paced = {"x-sim-token-ms": "1"}
        streams = max(100, requests // 10)
        direct = await run_load(stack.simulator_url + CHAT, {**direct_headers, **paced}, streamed, streams, 1)
        through = await run_load(stack.gateway_url + CHAT, {**gateway_headers, **paced}, streamed, streams, 1, stack.gateway_pid)
        print(f"\nstreams with the same policies, 16 tokens 1 ms apart, {streams} streams, c=1")
        print(row("direct, stream", direct) + f"  first byte p50 {direct.pct(direct.first_byte_ms, 0.5):.3f} ms")
        print(row("gateway, stream", through) + f"  first byte p50 {through.pct(through.first_byte_ms, 0.5):.3f} ms")
        added = through.pct(through.first_byte_ms, 0.5) - direct.pct(direct.first_byte_ms, 0.5)
        per_token = ((through.cpu_ms_per_request or 0.0) - (buffered.cpu_ms_per_request or 0.0)) / STREAM_TOKENS
        print(f"{'':<30} added time to first byte p50 {added:.3f} ms; gateway CPU per streamed token {per_token:.3f} ms (beyond a buffered answer)")
        print(open_streams)
        first, steady = await storage_calls_per_request(stack.env, stack.subscription_key, requests)
        print(f"\nTable Storage calls per request (in-process, same policy): first {requests}: {first:.3f}; next {requests}: {steady:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(parser.parse_args().requests))
